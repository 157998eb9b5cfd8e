//! Freshness lifetime and age (RFC 9111 §4.2).
//!
//! Decisions left to the cache:
//! - more than one `Expires` or `Date` line, or an invalid one: `Expires`
//!   makes the response stale (§5.3), a bad `Date` is replaced by the
//!   time of receipt (§4.2.1, as if absent);
//! - an `Age` that is not one plain delta-seconds (a list, two lines, a
//!   sign, a fraction) is ignored (§5.1 "SHOULD ignore");
//! - the heuristic is `heuristic_fraction` of `Date` − `Last-Modified`,
//!   capped at `heuristic_max`, for the statuses heuristically cacheable
//!   by default or a `public` response (§4.2.2).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

use super::control::ResponseControl;
use super::directive::{delta_seconds, Arg, DELTA_MAX};
use super::rules::Rules;

/// Statuses heuristically cacheable by default (RFC 9110 §15.1), less 206.
pub(crate) fn heuristic_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses whose caching this cache implements (`must-understand`,
/// RFC 9111 §5.2.2.3).
pub(crate) fn understood(status: StatusCode) -> bool {
    heuristic_status(status) || matches!(status.as_u16(), 302 | 303 | 307 | 451)
}

/// An HTTP-date (RFC 9110 §5.6.7) from a field value; `None` when invalid.
pub(crate) fn parse_date(v: &HeaderValue) -> Option<SystemTime> {
    super::date::parse(v.to_str().ok()?)
}

/// The only valid date among the lines of `name`, or `None` (absent,
/// invalid or repeated).
fn single_date(resp: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    let mut all = resp.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => parse_date(v),
        _ => None,
    }
}

/// The times of one stored response (RFC 9111 §4.2.3), fixed when it is
/// stored or freshened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Times {
    /// When the response was received.
    pub(crate) response_time: SystemTime,
    /// Its age on receipt: max(apparent_age, age_value + response_delay).
    pub(crate) corrected_initial_age: Duration,
    /// Its freshness lifetime (zero when it has none).
    pub(crate) lifetime: Duration,
}

impl Times {
    /// The times of a response received at `response_time` for a request
    /// sent at `request_time` (RFC 9111 §4.2.3).
    pub(crate) fn new(
        request_time: SystemTime,
        response_time: SystemTime,
        resp: &HeaderMap,
        lifetime: Duration,
    ) -> Self {
        let apparent_age = single_date(resp, header::DATE)
            .and_then(|date| response_time.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
        let response_delay = response_time
            .duration_since(request_time)
            .unwrap_or(Duration::ZERO);
        let corrected_age_value = age_value(resp).saturating_add(response_delay);
        Self {
            response_time,
            corrected_initial_age: apparent_age.max(corrected_age_value),
            lifetime,
        }
    }

    /// The current age (RFC 9111 §4.2.3): corrected_initial_age +
    /// resident_time.
    pub(crate) fn current_age(&self, now: SystemTime) -> Duration {
        let resident = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.corrected_initial_age.saturating_add(resident)
    }

    /// Fresh: freshness_lifetime > current_age (RFC 9111 §4.2).
    pub(crate) fn is_fresh(&self, now: SystemTime) -> bool {
        self.lifetime > self.current_age(now)
    }

    /// How long it stays fresh, in seconds, negative once stale (RFC 9211
    /// §2.5 `ttl`).
    pub(crate) fn ttl(&self, now: SystemTime) -> i64 {
        secs(self.lifetime) - secs(self.current_age(now))
    }

    /// How long it has been stale (zero while fresh).
    pub(crate) fn staleness(&self, now: SystemTime) -> Duration {
        self.current_age(now).saturating_sub(self.lifetime)
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `Age` (RFC 9111 §5.1): a delta-seconds, else ignored (zero). A field
/// sent as a list (`7200, 0`, or on several lines) is read by its first
/// member, as a conservative cache does: a response that says it is old
/// is taken to be old.
fn age_value(resp: &HeaderMap) -> Duration {
    let Some(v) = resp.get(header::AGE) else {
        return Duration::ZERO;
    };
    let first = v.as_bytes().split(|&b| b == b',').next().unwrap_or(b"");
    delta_seconds(Some(Arg::Token(first.trim_ascii()))).unwrap_or(Duration::ZERO)
}

/// The freshness lifetime for a shared cache (RFC 9111 §4.2.1, §4.2.2):
/// `s-maxage`, else `max-age`, else `Expires` − `Date` (an invalid or
/// repeated `Expires` gives zero; no valid `Date`: `response_time`), else
/// the heuristic. An invalid directive gives zero (stale).
pub(crate) fn freshness_lifetime(
    status: StatusCode,
    resp: &HeaderMap,
    cc: &ResponseControl,
    rules: &Rules,
    response_time: SystemTime,
) -> Duration {
    if let Some(d) = cc.s_maxage.or(cc.max_age) {
        return d.unwrap_or(Duration::ZERO);
    }
    let date = || single_date(resp, header::DATE).unwrap_or(response_time);
    if resp.contains_key(header::EXPIRES) {
        return single_date(resp, header::EXPIRES)
            .and_then(|e| e.duration_since(date()).ok())
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(DELTA_MAX));
    }
    if !(heuristic_status(status) || cc.public) {
        return Duration::ZERO;
    }
    let Some(modified) = single_date(resp, header::LAST_MODIFIED) else {
        return Duration::ZERO;
    };
    let since = date().duration_since(modified).unwrap_or(Duration::ZERO);
    // `mul_f32` panics on a negative or NaN factor: the config should
    // never give one, and then there is no heuristic.
    let fraction = rules.heuristic_fraction;
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Duration::ZERO;
    }
    since.mul_f32(fraction).min(rules.heuristic_max)
}

/// The `Age` field value to send (RFC 9111 §5.1): whole seconds, at most
/// 2^31.
pub(crate) fn age_header(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs().min(DELTA_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn t0() -> SystemTime {
        // Mon, 01 Jan 2024 00:00:00 GMT
        SystemTime::UNIX_EPOCH + S(1_704_067_200)
    }

    fn at(secs: i64) -> String {
        let t = if secs >= 0 {
            t0() + S(secs.unsigned_abs())
        } else {
            t0() - S(secs.unsigned_abs())
        };
        httpdate::fmt_http_date(t)
    }

    fn map(fields: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn lifetime(status: u16, fields: &[(&str, String)]) -> Duration {
        let h = map(fields);
        let rules = Rules::default();
        let cc = ResponseControl::parse(&h, &rules);
        freshness_lifetime(StatusCode::from_u16(status).unwrap(), &h, &cc, &rules, t0())
    }

    fn cc(v: &str) -> (&'static str, String) {
        ("cache-control", v.to_owned())
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let date = ("date", at(0));
        let exp = ("expires", at(100));
        assert_eq!(
            lifetime(
                200,
                &[date.clone(), exp.clone(), cc("max-age=50, s-maxage=20")]
            ),
            S(20)
        );
        assert_eq!(
            lifetime(200, &[date.clone(), exp.clone(), cc("max-age=50")]),
            S(50)
        );
        assert_eq!(lifetime(200, &[date, exp]), S(100));
    }

    #[test]
    fn invalid_directives_give_zero() {
        assert_eq!(lifetime(200, &[cc("max-age=1800, max-age=1")]), S(0));
        assert_eq!(lifetime(200, &[cc("max-age=abc")]), S(0));
        assert_eq!(lifetime(200, &[cc("s-maxage=x, max-age=60")]), S(0));
        assert_eq!(lifetime(200, &[cc("s-maxage=60, max-age=x")]), S(60));
    }

    #[test]
    fn expires_table() {
        for (fields, want) in [
            (vec![("date", at(0)), ("expires", at(3600))], S(3600)),
            // No Date: the time of receipt (t0) stands in.
            (vec![("expires", at(60))], S(60)),
            (vec![("date", at(-30)), ("expires", at(60))], S(90)),
            (vec![("date", at(0)), ("expires", at(-60))], S(0)),
            (vec![("date", at(0)), ("expires", "0".into())], S(0)),
            (vec![("date", at(0)), ("expires", "-1".into())], S(0)),
            (vec![("date", at(0)), ("expires", "".into())], S(0)),
            (
                vec![("date", at(0)), ("expires", at(60)), ("expires", at(60))],
                S(0),
            ),
            // An invalid Date: the time of receipt.
            (
                vec![("date", "yesterday".into()), ("expires", at(60))],
                S(60),
            ),
        ] {
            assert_eq!(lifetime(200, &fields), want, "{fields:?}");
        }
    }

    #[test]
    fn expires_in_all_three_date_formats() {
        for e in [
            "Mon, 01 Jan 2024 00:01:00 GMT",
            "Monday, 01-Jan-24 00:01:00 GMT",
            "Mon Jan  1 00:01:00 2024",
        ] {
            assert_eq!(
                lifetime(200, &[("date", at(0)), ("expires", e.into())]),
                S(60),
                "{e}"
            );
        }
    }

    #[test]
    fn heuristic_is_a_fraction_of_last_modified_age_capped() {
        let lm = |s: i64| ("last-modified", at(s));
        assert_eq!(lifetime(200, &[("date", at(0)), lm(-1000)]), S(100));
        assert_eq!(lifetime(404, &[lm(-1000)]), S(100));
        assert_eq!(lifetime(200, &[lm(-100 * 86400)]), S(86400));
        assert_eq!(lifetime(200, &[lm(1000)]), S(0));
        assert_eq!(lifetime(200, &[]), S(0));
        assert_eq!(lifetime(302, &[lm(-1000)]), S(0));
        assert_eq!(lifetime(302, &[lm(-1000), cc("public")]), S(100));
    }

    #[test]
    fn heuristic_fraction_out_of_range_gives_no_heuristic() {
        let h = map(&[("last-modified", at(-1000))]);
        let cc = ResponseControl::default();
        for f in [f32::NAN, -0.5, 0.0, 1.5, f32::INFINITY] {
            let rules = Rules {
                heuristic_fraction: f,
                ..Rules::default()
            };
            assert_eq!(
                freshness_lifetime(StatusCode::OK, &h, &cc, &rules, t0()),
                S(0),
                "{f}"
            );
        }
    }

    fn times(fields: &[(&str, String)], delay: u64, lifetime: u64) -> Times {
        Times::new(t0(), t0() + S(delay), &map(fields), S(lifetime))
    }

    #[test]
    fn age_header_on_the_response_counts() {
        let t = times(&[("date", at(0)), ("age", "30".into())], 0, 60);
        assert_eq!(t.corrected_initial_age, S(30));
        assert_eq!(t.current_age(t0() + S(10)), S(40));
        assert!(t.is_fresh(t0() + S(29)));
        assert!(!t.is_fresh(t0() + S(30)));
        let t = times(&[("date", at(0)), ("age", "7200".into())], 0, 3600);
        assert!(!t.is_fresh(t0()));
    }

    #[test]
    fn apparent_age_and_response_delay() {
        // Date 50 s before receipt: apparent age 50.
        let t = times(&[("date", at(-50))], 0, 60);
        assert_eq!(t.corrected_initial_age, S(50));
        // Age 10 plus a 5 s response delay.
        let t = times(&[("date", at(5)), ("age", "10".into())], 5, 60);
        assert_eq!(t.corrected_initial_age, S(15));
        // A Date in the future: apparent age 0.
        let t = times(&[("date", at(500))], 0, 60);
        assert_eq!(t.corrected_initial_age, S(0));
        // No Date: nothing but the delay.
        assert_eq!(times(&[], 3, 60).corrected_initial_age, S(3));
    }

    #[test]
    fn invalid_age_is_ignored_and_a_list_is_read_by_its_first_member() {
        for bad in [
            "abc", "-7200", "7200.0", "0,7200", "0, 0", "", ",7200", "x, 7200",
        ] {
            let t = times(&[("age", bad.into())], 0, 60);
            assert_eq!(t.corrected_initial_age, S(0), "{bad}");
        }
        // A list, or several lines: the first member.
        for list in [
            &[("age", "7200, 0".into())][..],
            &[("age", "7200".into()), ("age", "0".into())],
        ] {
            assert_eq!(
                times(list, 0, 60).corrected_initial_age,
                S(7200),
                "{list:?}"
            );
        }
        let t = times(&[("age", "0".into()), ("age", "7200".into())], 0, 60);
        assert_eq!(t.corrected_initial_age, S(0));
        let t = times(&[("age", "99999999999999999999".into())], 0, 60);
        assert_eq!(t.corrected_initial_age, S(DELTA_MAX));
    }

    #[test]
    fn ttl_goes_negative_when_stale() {
        let t = times(&[], 0, 60);
        assert_eq!(t.ttl(t0() + S(20)), 40);
        assert_eq!(t.ttl(t0() + S(90)), -30);
        assert_eq!(t.staleness(t0() + S(90)), S(30));
        assert_eq!(t.staleness(t0() + S(10)), S(0));
        // A clock going backwards is no resident time.
        assert_eq!(t.current_age(t0() - S(10)), S(0));
    }

    #[test]
    fn age_header_is_whole_seconds_capped() {
        assert_eq!(age_header(Duration::from_millis(1999)), "1");
        assert_eq!(age_header(S(0)), "0");
        assert_eq!(age_header(S(u64::MAX)), "2147483648");
    }
}
