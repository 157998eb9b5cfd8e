//! `access_log_format`: `default`, `combined` (nginx's, byte for byte),
//! `json`, or a template of nginx-style `$variables`.

use http::HeaderName;

/// How an access-log line is written.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Tidegate's own line (see the README's "Access log").
    #[default]
    Default,
    /// nginx's `combined`: `$remote_addr - $remote_user [$time_local]
    /// "$request" $status $body_bytes_sent "$http_referer"
    /// "$http_user_agent"`.
    Combined,
    /// One JSON object per line, with stable keys.
    Json,
    /// Literal text and variables.
    Template(Vec<Piece>),
}

/// A part of a template.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Piece {
    Text(String),
    Var(Var),
}

/// A template variable (nginx's names where nginx has one).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Var {
    RemoteAddr,
    RemotePort,
    /// The user a route's `basic_auth` let in (`-` for none).
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    /// `GET /path?q HTTP/1.1`.
    Request,
    RequestMethod,
    /// Path and query.
    RequestUri,
    ServerProtocol,
    Status,
    BodyBytesSent,
    /// Seconds, millisecond resolution.
    RequestTime,
    UpstreamAddr,
    Host,
    /// How the request ended: `done`, `aborted`, `error`, `cancelled`.
    Outcome,
    /// The request's ID (`-` without `request_id` on its listener).
    RequestId,
    /// `$http_NAME`: a request field (`_` in the name stands for `-`).
    Header(#[serde(serialize_with = "super::dump::header_name")] HeaderName),
}

const VARS: &[(&str, Var)] = &[
    ("remote_addr", Var::RemoteAddr),
    ("remote_port", Var::RemotePort),
    ("remote_user", Var::RemoteUser),
    ("time_local", Var::TimeLocal),
    ("time_iso8601", Var::TimeIso8601),
    ("request_method", Var::RequestMethod),
    ("request_uri", Var::RequestUri),
    ("request_time", Var::RequestTime),
    ("request", Var::Request),
    ("server_protocol", Var::ServerProtocol),
    ("status", Var::Status),
    ("body_bytes_sent", Var::BodyBytesSent),
    ("upstream_addr", Var::UpstreamAddr),
    ("host", Var::Host),
    ("outcome", Var::Outcome),
    ("request_id", Var::RequestId),
];

impl LogFormat {
    /// `default`, `combined`, `json`, or a template with at least one
    /// `$variable` (`${name}` where a letter follows).
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s {
            "default" => return Ok(LogFormat::Default),
            "combined" => return Ok(LogFormat::Combined),
            "json" => return Ok(LogFormat::Json),
            _ => {}
        }
        if !s.contains('$') {
            return Err(format!(
                "`{s}`: use default, combined, json, or a template with $variables"
            ));
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            let (name, after) = match rest.strip_prefix('{') {
                Some(r) => {
                    let end = r.find('}').ok_or("`${` without its `}`")?;
                    (&r[..end], &r[end + 1..])
                }
                None => {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    (&rest[..end], &rest[end..])
                }
            };
            if name.is_empty() {
                return Err("a `$` without a variable name (write `${name}`)".into());
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Var(var(name)?));
            rest = after;
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(LogFormat::Template(pieces))
    }

    /// The request fields a line of this format shows.
    pub fn headers(&self) -> Vec<HeaderName> {
        match self {
            LogFormat::Default => Vec::new(),
            LogFormat::Combined | LogFormat::Json => {
                vec![http::header::REFERER, http::header::USER_AGENT]
            }
            LogFormat::Template(pieces) => {
                let mut out: Vec<HeaderName> = Vec::new();
                for p in pieces {
                    if let Piece::Var(Var::Header(h)) = p {
                        if !out.contains(h) {
                            out.push(h.clone());
                        }
                    }
                }
                out
            }
        }
    }
}

fn var(name: &str) -> Result<Var, String> {
    if let Some((_, v)) = VARS.iter().find(|(n, _)| *n == name) {
        return Ok(v.clone());
    }
    if let Some(h) = name.strip_prefix("http_") {
        let h = h.replace('_', "-").to_ascii_lowercase();
        return HeaderName::from_bytes(h.as_bytes())
            .map(Var::Header)
            .map_err(|_| format!("`${name}`: `{h}` is not a field name"));
    }
    let known: Vec<&str> = VARS.iter().map(|(n, _)| *n).collect();
    Err(format!(
        "`${name}` is not a variable (known: {}, http_NAME)",
        known.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_into_text_and_variables() {
        let f =
            LogFormat::parse("$remote_addr [${status}x] \"$http_user_agent\" $http_x_request_id")
                .unwrap();
        let LogFormat::Template(p) = &f else {
            panic!("{f:?}")
        };
        assert_eq!(p[0], Piece::Var(Var::RemoteAddr));
        assert_eq!(p[1], Piece::Text(" [".into()));
        assert_eq!(p[2], Piece::Var(Var::Status));
        assert_eq!(p[3], Piece::Text("x] \"".into()));
        assert_eq!(
            f.headers(),
            [
                http::header::USER_AGENT,
                HeaderName::from_static("x-request-id")
            ]
        );
        assert!(LogFormat::parse("fancy")
            .unwrap_err()
            .contains("use default"));
        assert!(LogFormat::parse("$nope")
            .unwrap_err()
            .contains("`$nope` is not"));
        assert!(LogFormat::parse("a $ b").is_err());
        assert!(LogFormat::parse("${status").is_err());
    }
}
