//! `listen` lines and a `server` block's own lines (names, listeners,
//! a redirect-only server), read before its routes.
use super::{arg, Converter};
use crate::convert::parse::Directive;

/// A `listen` line.
pub(in crate::convert) struct Listen {
    pub address: String,
    pub ssl: bool,
    pub http2: bool,
    pub default: bool,
    /// `proxy_protocol`: each connection opens with a PROXY header.
    pub proxy_protocol: bool,
    pub from: String,
    /// Parameters not converted (`backlog=`...).
    pub ignored: Vec<String>,
}

impl Listen {
    /// `address` with no parameter, from the line (or block) `d`.
    fn plain(address: String, d: &Directive) -> Listen {
        Listen {
            address,
            ssl: false,
            http2: false,
            default: false,
            proxy_protocol: false,
            from: d.at(),
            ignored: Vec::new(),
        }
    }
}

/// A server block, read.
pub(in crate::convert) struct Server<'a> {
    pub directive: &'a Directive,
    pub listens: Vec<Listen>,
    pub names: Vec<String>,
    pub is_default: bool,
    /// `return 301 https://$host$request_uri` as its only content.
    pub https_redirect: Option<String>,
}

impl<'a> Server<'a> {
    pub(super) fn read(d: &'a Directive, c: &mut Converter) -> Server<'a> {
        let mut s = Server {
            directive: d,
            listens: Vec::new(),
            names: Vec::new(),
            is_default: false,
            https_redirect: None,
        };
        let items = d.block.as_deref().unwrap_or_default();
        let mut http2_on = false;
        for i in items {
            match i.name.as_str() {
                "listen" => match listen(i) {
                    Ok(l) => {
                        for p in &l.ignored {
                            c.skip(
                                i,
                                &format!("parameter `{p}` not converted (the address is)"),
                            );
                        }
                        s.listens.push(l)
                    }
                    Err(why) => c.skip(i, &why),
                },
                "server_name" => s.names.extend(i.args.iter().cloned()),
                "http2" => http2_on = arg(i, 0) == "on",
                _ => {}
            }
        }
        if http2_on {
            for l in &mut s.listens {
                l.http2 = true;
            }
        }
        if s.listens.is_empty() {
            s.listens.push(Listen::plain("0.0.0.0:80".into(), d));
        }
        let content: Vec<&Directive> = items
            .iter()
            .filter(|i| !matches!(i.name.as_str(), "listen" | "server_name" | "access_log"))
            .collect();
        if let [only] = content.as_slice() {
            let target = arg(only, 1);
            if only.name == "return"
                && matches!(arg(only, 0), "301" | "302" | "308")
                && (target == "https://$host$request_uri"
                    || target == "https://$server_name$request_uri")
            {
                s.https_redirect = Some(target.to_string());
            }
        }
        s
    }
}

pub(in crate::convert) fn listen(d: &Directive) -> Result<Listen, String> {
    let first = arg(d, 0);
    if first.starts_with("unix:") {
        return Err("Unix sockets are not converted".into());
    }
    let address = if first.bytes().all(|b| b.is_ascii_digit()) {
        format!("0.0.0.0:{first}")
    } else if let Some(port) = first.strip_prefix("*:") {
        format!("0.0.0.0:{port}")
    } else if let Some(port) = first.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else if first.starts_with('[') && !first.contains("]:")
        || !first.starts_with('[') && !first.contains(':')
    {
        format!("{first}:80")
    } else {
        first.to_string()
    };
    if address.parse::<std::net::SocketAddr>().is_err() {
        return Err(format!(
            "`{first}` is not an address Tidegate can listen on"
        ));
    }
    let mut l = Listen::plain(address, d);
    for p in d.args.iter().skip(1) {
        match p.as_str() {
            "ssl" => l.ssl = true,
            "http2" => l.http2 = true,
            "default_server" | "default" => l.default = true,
            "proxy_protocol" => l.proxy_protocol = true,
            // Tidegate's workers share each port this way already.
            "reuseport" => {}
            other => l.ignored.push(other.to_string()),
        }
    }
    Ok(l)
}
