//! `[dns]`: how servers given by name are resolved and refreshed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::raw;
use super::source::Problems;

/// The `[dns]` section: how servers given by name are resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dns {
    /// Name servers to ask; empty: the system's (`/etc/resolv.conf`).
    /// `/etc/hosts` is consulted first either way.
    pub resolvers: Vec<SocketAddr>,
    /// Bounds on the re-resolve interval, which otherwise follows the TTL.
    #[serde(serialize_with = "super::dump::duration")]
    pub min_refresh: Duration,
    #[serde(serialize_with = "super::dump::duration")]
    pub max_refresh: Duration,
    /// Per query and name server.
    #[serde(serialize_with = "super::dump::duration")]
    pub timeout: Duration,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            resolvers: Vec::new(),
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(300),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The `[dns]` section.
pub(super) fn dns(d: Option<&raw::Dns>, p: &mut Problems) -> Dns {
    let mut s = Dns::default();
    let Some(d) = d else { return s };
    for (i, r) in d.resolvers.iter().flatten().enumerate() {
        let addr = r
            .parse::<SocketAddr>()
            .or_else(|_| r.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
        match addr {
            Ok(a) => s.resolvers.push(a),
            Err(_) => p.add(
                format!("dns.resolvers[{i}]"),
                format!("`{r}` is not an IP address or IP:port"),
            ),
        }
    }
    s.min_refresh = d.min_refresh.unwrap_or(s.min_refresh);
    s.max_refresh = d.max_refresh.unwrap_or(s.max_refresh);
    s.timeout = d.timeout.unwrap_or(s.timeout);
    if s.min_refresh > s.max_refresh {
        p.add(
            "dns.min_refresh",
            format!(
                "{:?} is more than max_refresh ({:?})",
                s.min_refresh, s.max_refresh
            ),
        );
    }
    s
}
