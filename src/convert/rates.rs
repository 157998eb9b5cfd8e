//! nginx's `limit_req` (with `limit_req_zone`, `limit_req_status` and
//! `limit_req_dry_run`) as Tidegate's rate limits: `[rate_limits.NAME]`
//! and the proxying routes' `rate_limit`.
//!
//! The zone gives the key and the rate, each `limit_req` line its burst
//! and whether requests ahead of the rate wait (`mode`). What has no
//! exact equivalent is written as the closest limit that is never looser
//! than nginx's, and reported: a key variable Tidegate cannot read is
//! left out of the key (so more requests share one budget), and a key
//! with none left counts per route. A limit is never dropped for its key,
//! which would open the route.
use super::values;
use super::write::RateLimit;
use super::Skipped;

/// A line's arguments and where it was (`FILE:LINE`).
type Line = (Vec<String>, String);

/// The lines of one level.
#[derive(Clone, Default)]
pub(super) struct Lines {
    /// `limit_req_zone` lines (http level, seen by every level below).
    zones: Vec<Line>,
    /// `limit_req` lines: an array directive, a level with none of its
    /// own takes its parent's.
    limits: Option<Vec<Line>>,
    status: Option<Line>,
    dry_run: Option<Line>,
}

fn skip(out: &mut Vec<Skipped>, at: &str, directive: &str, why: String) {
    out.push(Skipped {
        at: at.to_string(),
        directive: directive.to_string(),
        why,
    });
}

/// `NAME=VALUE` among `args`.
fn param<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
}

impl Lines {
    /// Records `d` if it is one of these directives.
    pub(super) fn read(&mut self, name: &str, line: Line) -> bool {
        match name {
            "limit_req_zone" => self.zones.push(line),
            "limit_req" => self.limits.get_or_insert_with(Vec::new).push(line),
            "limit_req_status" => self.status = Some(line),
            "limit_req_dry_run" => self.dry_run = Some(line),
            _ => return false,
        }
        true
    }

    /// The lines in force below a level: its own, else its parent's.
    pub(super) fn settle(&mut self, own: Lines) {
        self.zones.extend(own.zones);
        if own.limits.is_some() {
            self.limits = own.limits;
        }
        if own.status.is_some() {
            self.status = own.status;
        }
        if own.dry_run.is_some() {
            self.dry_run = own.dry_run;
        }
    }

    /// The route's rate limits from its `limit_req` lines; what is not
    /// converted exactly goes to `out`.
    pub(super) fn limits(&self, out: &mut Vec<Skipped>) -> Vec<RateLimit> {
        let Some(lines) = self.limits.as_ref().filter(|l| !l.is_empty()) else {
            return Vec::new();
        };
        if let Some((args, at)) = &self.dry_run {
            if args.first().map(String::as_str) == Some("on") {
                skip(out, at, "limit_req_dry_run", "Tidegate has no dry run: the limit_req lines in its scope are not written (nginx does not enforce them either)".into());
                return Vec::new();
            }
        }
        let mut limits = Vec::new();
        for (args, at) in lines {
            let Some(zone) = param(args, "zone") else {
                skip(out, at, "limit_req", "no zone=NAME".into());
                continue;
            };
            let Some((zone_args, zone_at)) = self
                .zones
                .iter()
                .find(|(z, _)| param(z, "zone").and_then(|p| p.split(':').next()) == Some(zone))
            else {
                skip(
                    out,
                    at,
                    "limit_req",
                    format!("no limit_req_zone named `{zone}`"),
                );
                continue;
            };
            let rate = match rate(param(zone_args, "rate").unwrap_or_default()) {
                Ok(r) => r,
                Err(why) => {
                    skip(out, zone_at, "limit_req_zone", why);
                    continue;
                }
            };
            let key = key(zone_args.first().map(String::as_str).unwrap_or_default());
            for note in key.1 {
                skip(out, zone_at, "limit_req_zone", note);
            }
            let burst = match param(args, "burst").map(str::parse::<u32>) {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    skip(out, at, "limit_req", "burst= is not a number".into());
                    continue;
                }
            };
            let nodelay = args.iter().any(|a| a == "nodelay");
            let mode = match param(args, "delay").map(str::parse::<u32>) {
                _ if nodelay => "reject",
                None | Some(Ok(0)) => "delay",
                Some(Ok(n)) if n >= burst => "reject",
                Some(Ok(n)) => {
                    skip(out, at, "limit_req", format!("delay={n}: Tidegate lets a burst go at once (`mode = \"reject\"`, nginx's nodelay) or holds all of it (`\"delay\"`): written as \"reject\", so the requests past the {n}th within burst={burst} are not held"));
                    "reject"
                }
                Some(Err(_)) => {
                    skip(out, at, "limit_req", "delay= is not a number".into());
                    continue;
                }
            };
            limits.push(RateLimit {
                zone: zone.to_string(),
                key: key.0,
                rate,
                burst,
                mode,
                from: zone_at.clone(),
            });
        }
        if let Some((_, first_at)) = lines.first().filter(|_| !limits.is_empty()) {
            let status = self.status.as_ref();
            let code = status
                .and_then(|(a, _)| a.first())
                .map_or("503", String::as_str);
            if code != "429" {
                let at = status.map_or(first_at, |(_, at)| at);
                skip(out, at, "limit_req_status", format!("nginx answers {code}; Tidegate answers 429 with Retry-After (not configurable)"));
            }
        }
        limits
    }
}

/// `10r/s`, `30r/m` as Tidegate's `10/s`, `30/m`.
fn rate(text: &str) -> Result<String, String> {
    let bad = || format!("rate=`{text}`: not a rate like 10r/s or 30r/m");
    let (n, unit) = text.split_once("r/").ok_or_else(bad)?;
    match (n.parse::<u32>(), unit) {
        (Ok(n), "s" | "m") if n > 0 => Ok(format!("{n}/{unit}")),
        _ => Err(bad()),
    }
}

/// A zone's key (`$binary_remote_addr`, `"$binary_remote_addr$http_x"`)
/// as Tidegate's key parts, never looser than nginx's, with the notes to
/// report: a variable without an equivalent is left out (coarser keys:
/// more requests share one budget); with none left, `route`.
fn key(text: &str) -> (Vec<String>, Vec<String>) {
    let mut parts: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let mut dropped = Vec::new();
    for var in variables(text) {
        match values::limit_key(&var) {
            Ok((part, note)) => {
                notes.extend(note.map(str::to_string));
                if !parts.contains(&part) {
                    parts.push(part);
                }
            }
            Err(_) => dropped.push(var),
        }
    }
    let optional = parts
        .iter()
        .any(|p| p.starts_with("header:") || p.starts_with("cookie:"));
    if optional && parts.len() > 1 {
        notes.push(format!("`{text}`: Tidegate does not limit a request that lacks one of the key's fields or cookies (`key = [{}]`); nginx counts it under the rest of the key", parts.join(", ")));
    }
    if !dropped.is_empty() {
        let what = if parts.is_empty() {
            parts.push("route".into());
            "the limit counts per route instead (`key = \"route\"`: one budget for every request of each location)"
        } else {
            "left out of the key"
        };
        notes.push(format!(
            "`{text}`: {} {} no equivalent: {what}, stricter than nginx: check it",
            dropped.join(", "),
            if dropped.len() == 1 { "has" } else { "have" }
        ));
    } else if parts.is_empty() {
        parts.push("route".into());
        notes.push(format!("`{text}` has no variable (one budget for every request of the zone): the limit counts per route (`key = \"route\"`), each location its own budget"));
    }
    (parts, notes)
}

/// The `$variables` of a key, as `$name` (`${name}` too).
fn variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let name = match rest.strip_prefix('{') {
            Some(braced) => braced.split('}').next().unwrap_or_default(),
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            }
        };
        if !name.is_empty() {
            out.push(format!("${name}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_never_looser() {
        assert_eq!(key("$binary_remote_addr").0, ["client_ip"]);
        assert_eq!(key("$http_x_api_key").0, ["header:x-api-key"]);
        assert_eq!(key("$cookie_sid").0, ["cookie:sid"]);
        let (parts, notes) = key("$binary_remote_addr$request_uri");
        assert_eq!(parts, ["client_ip"]);
        assert!(notes[0].contains("$request_uri has no equivalent: left out"));
        let (parts, notes) = key("${request_uri}");
        assert_eq!(parts, ["route"]);
        assert!(notes[0].contains("counts per route"), "{notes:?}");
        let (parts, notes) = key("$remote_addr:$http_x_user");
        assert_eq!(parts, ["client_ip", "header:x-user"]);
        assert!(notes[0].contains("lacks one of the key's fields"));
        assert_eq!(key("all").0, ["route"]);
    }

    #[test]
    fn rates() {
        assert_eq!(rate("10r/s").unwrap(), "10/s");
        assert_eq!(rate("30r/m").unwrap(), "30/m");
        assert!(rate("0r/s").is_err());
        assert!(rate("1r/h").is_err());
        assert!(rate("").is_err());
    }
}
