//! `[concurrency_limits.NAME]`: named limits on the requests a key has in
//! flight at once (nginx's `limit_conn`), that routes refer to
//! (`concurrency_limit = "NAME"` or a list), as pure data. The key is
//! written as a rate limit's ([`super::rate_limit`]). What enforces them
//! (a table of counters) is [`crate::ratelimit::concurrency`].

use serde::Serialize;

use super::rate_limit::KeyPart;
use super::raw;
use super::source::Problems;

/// One named limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConcurrencyLimit {
    pub name: String,
    /// What tells clients apart; several parts make one combined key.
    pub key: Vec<KeyPart>,
    /// Requests a key may have in flight at once (at least 1).
    pub max: u32,
    /// Slots of the key table, a power of two; keys that share a slot
    /// share their limit.
    pub max_keys: usize,
}

/// Every `[concurrency_limits.*]` table, in name order; problems go to `p`.
pub(super) fn concurrency_limits(
    raw: &std::collections::BTreeMap<String, raw::ConcurrencyLimit>,
    p: &mut Problems,
) -> Vec<ConcurrencyLimit> {
    raw.iter()
        .filter_map(|(name, r)| concurrency_limit(name, r, p))
        .collect()
}

fn concurrency_limit(
    name: &str,
    r: &raw::ConcurrencyLimit,
    p: &mut Problems,
) -> Option<ConcurrencyLimit> {
    let at = format!("concurrency_limits.{name}");
    let before = p.len();
    let key = super::rate_limit::key(&at, r.key.as_ref(), p);
    if r.max == 0 {
        p.add(
            format!("{at}.max"),
            "must be at least 1 (a route with no requests at all wants `respond`)",
        );
    }
    let max_keys = super::rate_limit::max_keys(&at, r.max_keys, p);
    (p.len() == before).then(|| ConcurrencyLimit {
        name: name.to_string(),
        key,
        max: r.max,
        max_keys,
    })
}

/// A route's `concurrency_limit`: the limits' indexes in `limits` (every
/// `[concurrency_limits.*]` name written, in order).
pub(super) fn route_limits(
    names: Option<&raw::OneOrMany>,
    limits: &[&str],
) -> Result<Vec<usize>, (String, String)> {
    super::rate_limit::refer("concurrency_limit", "concurrency_limits", names, limits)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, KeyPart};

    use crate::config::TEST_BASE as BASE;

    #[test]
    fn limits_and_routes_compile() {
        let text = format!(
            "{BASE}[concurrency_limits.per_client]\nmax = 10\n\
             [concurrency_limits.per_key]\nkey = [\"header:X-Api-Key\", \"route\"]\nmax = 2\nmax_keys = 3000\n\
             [[routes]]\nupstream = \"app\"\nconcurrency_limit = [\"per_key\", \"per_client\", \"per_key\"]\n"
        );
        let c = Config::from_toml(&text, "t.toml").unwrap();
        let names: Vec<_> = c
            .concurrency_limits
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["per_client", "per_key"]);
        assert_eq!(c.routes[0].concurrency_limit, [1, 0]);
        let l = &c.concurrency_limits[0];
        assert_eq!(
            (l.key.clone(), l.max, l.max_keys),
            (vec![KeyPart::ClientIp], 10, 1 << 16)
        );
        let l = &c.concurrency_limits[1];
        assert_eq!((l.key.len(), l.max, l.max_keys), (2, 2, 4096));
    }

    #[test]
    fn problems_name_line_and_field() {
        let text = format!(
            "{BASE}[concurrency_limits.a]\nkey = \"ip\"\nmax = 0\nmax_keys = 5\n\
             [[routes]]\nupstream = \"app\"\nconcurrency_limit = \"nope\"\n"
        );
        let e = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
        for want in [
            "t.toml:6: concurrency_limits.a.key: `ip`",
            "t.toml:7: concurrency_limits.a.max: must be at least 1",
            "t.toml:8: concurrency_limits.a.max_keys: 5",
            "t.toml:11: routes[0].concurrency_limit: no [concurrency_limits.nope] table",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        // `max` is required, and never negative.
        for bad in ["", "max = -1\n"] {
            let text =
                format!("{BASE}[concurrency_limits.a]\n{bad}[[routes]]\nupstream = \"app\"\n");
            assert!(Config::from_toml(&text, "t.toml").is_err(), "{bad}");
        }
    }
}
