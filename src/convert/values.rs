//! nginx's values in Tidegate's terms: sizes (`10m`), times (`1m30s`),
//! PCRE regexes, rewrite replacements and `$variables` in redirect URLs.
//! Each returns `Err(why)` for what has no equivalent.

/// `1024`, `8k`, `10m`, `1g` (nginx's size units) in bytes.
pub(super) fn size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, ' '),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size"))?;
    let scale: u64 = match unit {
        ' ' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return Err(format!("`{text}` is not a size")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// An nginx time (`30`, `500ms`, `1m30s`, `1h`, `2d`) as a Tidegate
/// duration (`"90s"`, `"500ms"`); zero has no equivalent (Tidegate's
/// timeouts are never off).
pub(super) fn duration(text: &str) -> Result<String, String> {
    let bad = || format!("`{text}` is not a time");
    let mut total_ms: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let ms: u64 = match &rest[..letters] {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[letters..];
        total_ms = n
            .checked_mul(ms)
            .and_then(|v| v.checked_add(total_ms))
            .ok_or_else(bad)?;
    }
    if total_ms == 0 {
        return Err(format!("`{text}`: a zero time has no equivalent"));
    }
    Ok(if total_ms.is_multiple_of(1000) {
        format!("{}s", total_ms / 1000)
    } else {
        format!("{total_ms}ms")
    })
}

/// An nginx location or rewrite regex (PCRE) as a Rust regex, checked to
/// compile; `(?i)` in front for `~*`.
pub(super) fn regex(pcre: &str, case_insensitive: bool) -> Result<String, String> {
    let text = if case_insensitive {
        format!("(?i){pcre}")
    } else {
        pcre.to_string()
    };
    regex::Regex::new(&text).map(|_| text).map_err(|e| {
        format!(
            "`{pcre}` is not a regex Tidegate can run: {}",
            first_line(&e)
        )
    })
}

fn first_line(e: &regex::Error) -> String {
    let s = e.to_string();
    s.lines().last().unwrap_or_default().trim().to_string()
}

/// A rewrite replacement (`/new/$1`) in the regex crate's syntax
/// (`/new/${1}`); nginx variables other than captures have no equivalent.
pub(super) fn replacement(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
            digits.push(d);
            chars.next();
        }
        if digits.is_empty() {
            return Err(format!(
                "`{text}` uses nginx variables, which a rewrite cannot"
            ));
        }
        out.push_str(&format!("${{{digits}}}"));
    }
    Ok(out)
}

/// A `return`/`rewrite` URL with nginx variables as a Tidegate redirect
/// template. `server_name`: what `$server_name` is in this server.
pub(super) fn template(text: &str, server_name: Option<&str>) -> Result<String, String> {
    if text.contains(['{', '}']) && !text.contains("${") {
        return Err(format!("`{text}`: braces have no equivalent in a template"));
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("`{text}`: unclosed ${{"))?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        rest = after;
        let value = match name {
            "scheme" => "{scheme}",
            "host" | "http_host" => "{host}",
            "request_uri" => "{uri}",
            "uri" | "document_uri" => "{path}",
            "is_args" if rest.starts_with("$args") => {
                rest = &rest["$args".len()..];
                "{query}"
            }
            "server_name" => match server_name {
                Some(n) => n,
                None => return Err(format!("`{text}`: this server has no server_name")),
            },
            other => {
                return Err(format!(
                    "`{text}`: ${other} has no equivalent in a redirect template"
                ))
            }
        };
        out.push_str(value);
    }
    out.push_str(rest);
    Ok(out)
}

/// A limit zone's key variable (`limit_conn_zone`, `limit_req_zone`) as
/// Tidegate's key part, with a note when it is only close.
pub(super) fn limit_key(variable: &str) -> Result<(String, Option<&'static str>), String> {
    match variable {
        "$binary_remote_addr" | "$remote_addr" => Ok(("client_ip".into(), None)),
        "$server_name" => Ok((
            "route".into(),
            Some("$server_name counts per route in Tidegate (`key = \"route\"`): each location of the server has its own count"),
        )),
        "$host" | "$http_host" => Ok(("header:Host".into(), None)),
        v => {
            let name = |n: &str| {
                (!n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                    .then(|| n.to_string())
            };
            if let Some(h) = v.strip_prefix("$http_").and_then(name) {
                Ok((format!("header:{}", h.replace('_', "-")), None))
            } else if let Some(c) = v.strip_prefix("$cookie_").and_then(name) {
                Ok((format!("cookie:{c}"), None))
            } else {
                Err(format!("`{v}`: only $binary_remote_addr, $remote_addr, $server_name, $host, $http_NAME and $cookie_NAME are converted"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(size("10m").unwrap(), 10 << 20);
        assert_eq!(size("512").unwrap(), 512);
        assert_eq!(size("8K").unwrap(), 8192);
        assert!(size("x").is_err());
        assert_eq!(duration("1m30s").unwrap(), "90s");
        assert_eq!(duration("500ms").unwrap(), "500ms");
        assert_eq!(duration("75").unwrap(), "75s");
        assert!(duration("0").is_err());
        assert!(duration("3y").is_err());
    }

    #[test]
    fn templates_and_replacements() {
        assert_eq!(
            template("https://$host$request_uri", None).unwrap(),
            "https://{host}{uri}"
        );
        assert_eq!(
            template("https://$server_name$uri$is_args$args", Some("a.test")).unwrap(),
            "https://a.test{path}{query}"
        );
        assert!(template("/x?$remote_addr", None).is_err());
        assert_eq!(replacement("/new/$1/x$2").unwrap(), "/new/${1}/x${2}");
        assert!(replacement("/$host").is_err());
    }
}
