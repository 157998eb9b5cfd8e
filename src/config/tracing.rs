//! `[tracing]`: OpenTelemetry traces, as pure data. Requests carry W3C
//! Trace Context (`traceparent`, `tracestate`) upstream, and sampled ones
//! become spans exported with OTLP/HTTP (protobuf) to `otlp_endpoint`
//! ([`crate::trace`] does both; nothing is done per request without this
//! section).

use std::time::Duration;

use super::raw;
use super::source::Problems;

/// The `[tracing]` section.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tracing {
    /// Where spans are POSTed: an `http://` URL (`http://127.0.0.1:4318/v1/traces`;
    /// a URL without a path gets `/v1/traces`, OTLP/HTTP's).
    #[serde(serialize_with = "super::dump::url")]
    pub otlp_endpoint: http::Uri,
    /// The share of new traces (requests without a valid `traceparent`)
    /// that are sampled, decided on the trace ID as OpenTelemetry's
    /// `TraceIdRatioBased` does; a request that continues a trace follows
    /// its parent's sampled flag (`ParentBased`). Default 1.0: every trace,
    /// as OpenTelemetry's default sampler (parent-based, always on).
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Spans waiting for the exporter; one more is dropped (and counted).
    pub queue: usize,
    /// Time an export request may take before it is given up.
    #[serde(serialize_with = "super::dump::duration")]
    pub timeout: Duration,
}

/// The default `queue` (OpenTelemetry's batch span processor's).
const DEFAULT_QUEUE: usize = 2048;
/// Largest `queue`.
const MAX_QUEUE: usize = 1 << 20;

impl Tracing {
    /// The settings with this endpoint and every default.
    pub fn to(otlp_endpoint: http::Uri) -> Tracing {
        Tracing {
            otlp_endpoint,
            sample_ratio: 1.0,
            service_name: "tidegate".into(),
            queue: DEFAULT_QUEUE,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The `[tracing]` section, if written.
pub(super) fn section(t: Option<&raw::Tracing>, p: &mut Problems) -> Option<Tracing> {
    let t = t?;
    let endpoint = endpoint(&t.otlp_endpoint)
        .map_err(|reason| p.add("tracing.otlp_endpoint", reason))
        .ok();
    let mut out = Tracing::to(endpoint.clone().unwrap_or_default());
    if let Some(r) = t.sample_ratio {
        if (0.0..=1.0).contains(&r) {
            out.sample_ratio = r;
        } else {
            p.add("tracing.sample_ratio", format!("{r} is outside 0.0..=1.0"));
        }
    }
    if let Some(name) = &t.service_name {
        if name.trim().is_empty() {
            p.add("tracing.service_name", "is empty");
        } else {
            out.service_name = name.clone();
        }
    }
    match t.queue {
        Some(0) => p.add("tracing.queue", "must be at least 1"),
        Some(n) if n > MAX_QUEUE => p.add("tracing.queue", format!("{n} is more than {MAX_QUEUE}")),
        Some(n) => out.queue = n,
        None => {}
    }
    if let Some(d) = t.timeout {
        out.timeout = d;
    }
    endpoint.map(|_| out)
}

/// An `http://host[:port][/path]` URL; the path `/v1/traces` when none
/// is given.
fn endpoint(text: &str) -> Result<http::Uri, String> {
    let like = "a URL like http://127.0.0.1:4318/v1/traces";
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not {like} ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`{text}`: https is not supported; give an http:// URL \
                 (a collector or agent on this host or a trusted network)"
            ))
        }
        _ => return Err(format!("`{text}` is not {like}")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("`{text}` has no host; it should be {like}"));
    };
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(format!("`{text}` is not {like}"));
    }
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => "/v1/traces",
        Some(p) => p,
    };
    http::Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| format!("`{text}` is not {like} ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok = |t: &str| endpoint(t).unwrap().to_string();
        assert_eq!(
            ok("http://127.0.0.1:4318/v1/traces"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            ok("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(ok("http://[::1]:4318/"), "http://[::1]:4318/v1/traces");
        for bad in [
            "127.0.0.1:4318",
            "https://c:4318/v1/traces",
            "ftp://c/x",
            "http://",
            "/v1/traces",
            "http://u@c:1/",
            "not a url",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
        assert!(endpoint("https://c:4318/")
            .unwrap_err()
            .contains("https is not supported"));
    }
}
