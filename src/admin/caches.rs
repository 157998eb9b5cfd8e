//! `/caches` on the admin listener: what each cache holds, and purges.
//!
//! - `GET /caches`: per cache, its keys, the bytes they weigh, its
//!   `memory`, and the misses waiting for another's fetch right now;
//!   with a disk tier, its files, their bytes, its `size`, and the
//!   writes skipped because the disk was behind (`disk`, else null).
//! - `POST /caches/NAME/purge`: drops everything it stored;
//!   `?url=URL`: every response (every variant) stored for that URL
//!   (`scheme://host/path?query`, as requests name it); `?prefix=URL`:
//!   for every URL that starts with it. A purged response is gone for
//!   the next lookup (and its disk tier file deleted before the answer).

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::{post_only, text, State};

pub(super) fn answer(
    state: &State,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(caches) = (state.caches)() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n");
    };
    if path == "/caches" {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        let list: Vec<_> = caches
            .all()
            .iter()
            .map(|s| {
                let (keys, bytes) = s.usage();
                let disk = s.disk.as_ref().map(|d| {
                    let (files, bytes, skipped) = d.usage();
                    serde_json::json!({
                        "files": files,
                        "bytes": bytes,
                        "size": d.config.size,
                        "skipped": skipped,
                    })
                });
                serde_json::json!({
                    "name": s.config.name,
                    "keys": keys,
                    "bytes": bytes,
                    "memory": s.config.memory,
                    "waiting": s.waiting(),
                    "disk": disk,
                })
            })
            .collect();
        let mut r = text(
            StatusCode::OK,
            serde_json::to_vec_pretty(&list).unwrap_or_default(),
        );
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let rest = path.trim_start_matches("/caches/");
    let Some(name) = rest.strip_suffix("/purge") else {
        return text(StatusCode::NOT_FOUND, "no such admin endpoint\n");
    };
    if method != Method::POST {
        return post_only();
    }
    let Some(store) = caches.by_name(name) else {
        return text(StatusCode::NOT_FOUND, format!("no cache `{name}`\n"));
    };
    let mut pairs = url::form_urlencoded::parse(query.unwrap_or("").as_bytes());
    let done = match pairs.next() {
        None => {
            store.clear();
            Ok("everything".to_string())
        }
        Some((k, v)) if k == "url" => store.purge(&v, false).map(|_| format!("url {v}")),
        Some((k, v)) if k == "prefix" => store.purge(&v, true).map(|_| format!("prefix {v}")),
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "purge takes ?url=URL or ?prefix=URL (or nothing: everything)\n",
            )
        }
    };
    match done {
        Ok(what) => {
            tracing::info!(cache = name, "purged {what}");
            text(StatusCode::OK, format!("purged {what}\n"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
