//! Every response the proxy makes itself, rendered here and nowhere else:
//! errors (plain text, or gRPC's trailers-only form for gRPC calls), the
//! HTTPS redirect of a `redirect_https` listener, and a route's own
//! answers (`return`, `redirect`). Each carries `Via`.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::response_body::ProxyBody;
use crate::message::headers::{via, VIA_VALUE};
use crate::router::Route;

/// The proxy's own answer to a failed request with `status`: gRPC's form
/// for a gRPC call, else plain text.
pub(crate) fn error(status: StatusCode, grpc: bool) -> Response<ProxyBody> {
    if grpc {
        grpc_error_response(status, grpc_code(status))
    } else {
        error_response(status)
    }
}

/// The proxy's own answer to `err`: as [`error`], and a rate limit's
/// refusal adds `Retry-After` and the `RateLimit-Policy` and `RateLimit`
/// fields (draft-ietf-httpapi-ratelimit-headers-10), with gRPC's
/// RESOURCE_EXHAUSTED (8) for a gRPC call. A concurrency limit's refusal
/// is a 429 with RESOURCE_EXHAUSTED too, and no `Retry-After`: no time is
/// known (a place frees when one of the client's requests ends), and a
/// proxy in front that honours `Retry-After` on a 429 (Tidegate does)
/// would back off the whole server for one client's excess.
pub(crate) fn for_error(err: &crate::error::ProxyError, grpc: bool) -> Response<ProxyBody> {
    use crate::error::ProxyError;
    let r = match err {
        ProxyError::RateLimited(r) => r,
        ProxyError::ConcurrencyLimited(_) if grpc => {
            return grpc_error_response(StatusCode::TOO_MANY_REQUESTS, "8")
        }
        ProxyError::AuthDenied(d) => return denied(d, grpc),
        _ => return error(err.status(), grpc),
    };
    let mut resp = match grpc {
        true => grpc_error_response(StatusCode::TOO_MANY_REQUESTS, "8"),
        false => error_response(StatusCode::TOO_MANY_REQUESTS),
    };
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(r.retry_after));
    h.insert("ratelimit-policy", r.policy.clone());
    if let Some(v) = &r.state {
        h.insert("ratelimit", v.clone());
    }
    resp
}

/// A forward-auth service's refusal, as it came (its hop-by-hop fields
/// already removed); for a gRPC call, gRPC's code for its status (401
/// UNAUTHENTICATED, 403 PERMISSION_DENIED...) in the trailers-only form,
/// as gRPC clients read nothing else.
fn denied(d: &crate::error::Denied, grpc: bool) -> Response<ProxyBody> {
    if grpc {
        return grpc_error_response(d.status, grpc_code(d.status));
    }
    let mut resp = Response::new(ProxyBody::full(d.body.clone()));
    *resp.status_mut() = d.status;
    let h = resp.headers_mut();
    h.clone_from(&d.headers);
    h.append(header::VIA, VIA_VALUE);
    resp
}

/// A gRPC call (`content-type: application/grpc...`), whose client reads
/// errors from `grpc-status`, not from the HTTP status.
pub(crate) fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The proxy's own error for a gRPC call: a trailers-only response
/// (HTTP 200, `grpc-status` and `grpc-message` in the head, empty body),
/// as gRPC clients expect of a proxy. The code follows gRPC's
/// HTTP-to-gRPC mapping: 502, 503, 504 and 429 are UNAVAILABLE (14), 404
/// UNIMPLEMENTED (12), 401 UNAUTHENTICATED (16), 400 INTERNAL (13), 403
/// PERMISSION_DENIED (7), 413 RESOURCE_EXHAUSTED (8), anything else UNKNOWN (2).
fn grpc_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 | 502..=504 => "14",
        404 => "12",
        401 => "16",
        400 => "13",
        403 => "7",
        413 => "8",
        _ => "2",
    }
}

/// The trailers-only response with `code` (see [`grpc_code`]).
fn grpc_error_response(status: StatusCode, code: &'static str) -> Response<ProxyBody> {
    let message = format!(
        "{}%20{}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("").replace(' ', "%20")
    );
    let mut resp = Response::new(ProxyBody::full(Bytes::new()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert("grpc-message", v);
    }
    h.insert(header::VIA, VIA_VALUE);
    resp
}

/// A short plain-text response of our own.
fn error_response(status: StatusCode) -> Response<ProxyBody> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::VIA, VIA_VALUE);
    resp
}

/// The answer of a plain listener set to `redirect_https`: the same
/// target on HTTPS (301 for GET and HEAD; 308 keeps other methods and
/// their bodies).
pub(crate) fn https_redirect(
    authority: Option<&crate::message::admit::Authority>,
    port: u16,
    parts: &http::request::Parts,
) -> Response<ProxyBody> {
    let name = authority.map_or("", crate::message::admit::Authority::host);
    let mut target = String::with_capacity(16 + name.len() + parts.uri.path().len());
    target.push_str("https://");
    target.push_str(name);
    if port != 443 {
        target.push(':');
        target.push_str(&port.to_string());
    }
    target.push_str(
        parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str),
    );
    let status = if matches!(parts.method, Method::GET | Method::HEAD) {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut resp = Response::new(ProxyBody::full(Bytes::new()));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&target) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::VIA, via(parts.version));
    resp
}

/// The answer to an ACME HTTP-01 validation (RFC 8555 §8.3): the key
/// authorization of a challenge being answered, as text, or 404.
pub(crate) fn acme_http01(
    answer: Option<&str>,
    parts: &http::request::Parts,
) -> Response<ProxyBody> {
    let mut resp = match answer {
        Some(a) if matches!(parts.method, Method::GET | Method::HEAD) => {
            let mut r = Response::new(ProxyBody::full(Bytes::copy_from_slice(a.as_bytes())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Some(_) => error_response(StatusCode::METHOD_NOT_ALLOWED),
        None => error_response(StatusCode::NOT_FOUND),
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::VIA, via(parts.version));
    resp
}

/// A response the route makes itself.
pub(crate) fn local_response(
    status: StatusCode,
    location: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
    route: &Route,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.clone_from(headers);
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, l);
    }
    h.append(header::VIA, VIA_VALUE);
    route.response_headers.apply(h);
    resp
}
