//! The HTTP cache (`[caches.NAME]`, a route's `cache`), end to end with a
//! real origin that counts what reaches it: fresh responses served from
//! the cache with `Age` and `Cache-Status`; what must not be stored is
//! not; a stale response revalidated with its validator and freshened by
//! the 304; variants kept apart by `Vary` (`*` never stored); HEAD,
//! ranges and client conditionals answered from a stored response;
//! unsafe methods invalidating; bodies over `max_object` streamed whole
//! but not kept; concurrent misses making one fetch; stale-if-error;
//! purges through the admin listener; `only-if-cached`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::Notify;

use crate::common::config::{Route, TestConfig};
use crate::common::*;

/// What reached the origin: requests per `METHOD path`, and the last
/// `If-None-Match` seen per path.
#[derive(Default)]
struct Seen {
    count: HashMap<String, usize>,
    inm: HashMap<String, String>,
}

type Shared = Arc<Mutex<Seen>>;

fn respond(status: u16, fields: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (n, v) in fields {
        r = r.header(*n, *v);
    }
    r.body(full(body.into())).unwrap()
}

fn range_body() -> Bytes {
    Bytes::from(
        (0..1000)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The cases, by path. `/slow` sends its head, then waits for `release`
/// before its body.
fn origin(seen: Shared, release: Arc<Notify>) -> Backend {
    backend(move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        let release = release.clone();
        async move {
            let path = req.uri().path().to_string();
            let n = {
                let mut s = seen.lock().unwrap();
                let c = s
                    .count
                    .entry(format!("{} {path}", req.method()))
                    .or_default();
                *c += 1;
                let n = *c;
                if let Some(v) = req.headers().get("if-none-match") {
                    s.inm.insert(path.clone(), v.to_str().unwrap().to_string());
                }
                n
            };
            let inm = req
                .headers()
                .get("if-none-match")
                .map(|v| v.as_bytes().to_vec());
            let lang = req
                .headers()
                .get("accept-language")
                .map_or("none".to_string(), |v| v.to_str().unwrap().to_string());
            let body = format!("{path} #{n}");
            let fresh = [("cache-control", "max-age=60"), ("etag", "\"f1\"")];
            match path.as_str() {
                _ if req.method() != "GET" && req.method() != "HEAD" => respond(200, &[], "done"),
                "/fresh" | "/fresh/a" | "/fresh/b" => respond(200, &fresh, body),
                "/nostore" => respond(200, &[("cache-control", "no-store")], body),
                "/origin-status" => respond(200, &[("cache-status", "origin-cache; hit")], body),
                "/private" => respond(200, &[("cache-control", "private, max-age=60")], body),
                "/cookie" => respond(
                    200,
                    &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
                    body,
                ),
                "/auth" => respond(200, &[("cache-control", "max-age=60")], body),
                "/connection" => respond(
                    200,
                    &[
                        ("cache-control", "max-age=60"),
                        ("connection", "x-secret"),
                        ("x-secret", "one client's"),
                    ],
                    body,
                ),
                "/revalidate" if inm.as_deref() == Some(b"\"r1\"") => respond(
                    304,
                    &[
                        ("cache-control", "max-age=60"),
                        ("etag", "\"r1\""),
                        ("x-version", "2"),
                    ],
                    "",
                ),
                "/revalidate" => respond(
                    200,
                    &[
                        ("cache-control", "max-age=0"),
                        ("etag", "\"r1\""),
                        ("x-version", "1"),
                    ],
                    body,
                ),
                "/vary" => respond(
                    200,
                    &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
                    format!("lang {lang} #{n}"),
                ),
                "/star" => respond(
                    200,
                    &[
                        ("cache-control", "max-age=60"),
                        ("vary", "accept-language, *"),
                    ],
                    body,
                ),
                "/range" => respond(
                    200,
                    &[("cache-control", "max-age=60"), ("etag", "\"g1\"")],
                    range_body(),
                ),
                "/big" => respond(200, &[("cache-control", "max-age=60")], vec![b'x'; 2 << 20]),
                "/flaky" if n == 1 => respond(
                    200,
                    &[
                        ("cache-control", "max-age=0, stale-if-error=600"),
                        ("etag", "\"k1\""),
                    ],
                    body,
                ),
                "/flaky" => respond(503, &[], "origin down"),
                "/swr" if inm.as_deref() == Some(b"\"s1\"") => respond(
                    304,
                    &[
                        ("cache-control", "max-age=600"),
                        ("etag", "\"s1\""),
                        ("x-version", "2"),
                    ],
                    "",
                ),
                "/swr" => respond(
                    200,
                    &[
                        ("cache-control", "max-age=0, stale-while-revalidate=600"),
                        ("etag", "\"s1\""),
                        ("x-version", "1"),
                    ],
                    body,
                ),
                // A 304 that repeats no validator.
                "/bare" if inm.is_some() => respond(304, &[("cache-control", "max-age=60")], ""),
                "/bare" => respond(
                    200,
                    &[("cache-control", "max-age=0"), ("etag", "\"b1\"")],
                    body,
                ),
                // The 304 names another response than the one stored.
                "/swr-other" if inm.is_some() => respond(
                    304,
                    &[
                        ("cache-control", "max-age=600"),
                        ("etag", "\"o2\""),
                        ("x-version", "2"),
                    ],
                    "",
                ),
                "/swr-other" => respond(
                    200,
                    &[
                        ("cache-control", "max-age=0, stale-while-revalidate=600"),
                        ("etag", "\"o1\""),
                        ("x-version", "1"),
                    ],
                    body,
                ),
                "/precondition" if req.headers().get("if-match").is_some_and(|v| v != "\"p1\"") => {
                    respond(412, &[("cache-control", "max-age=60")], "")
                }
                "/precondition" => respond(
                    200,
                    &[("cache-control", "max-age=60"), ("etag", "\"p1\"")],
                    body,
                ),
                // Not storable the first time, then storable (with `Vary`
                // for `/turns-vary`).
                "/turns" | "/turns-vary" if n == 1 => {
                    respond(200, &[("cache-control", "no-store")], body)
                }
                "/turns" => respond(200, &[("cache-control", "max-age=60")], body),
                "/turns-vary" => respond(
                    200,
                    &[("cache-control", "max-age=60"), ("vary", "accept-language")],
                    body,
                ),
                // Never storable; from the second on, held until `release`.
                "/held-nostore" => {
                    if n > 1 {
                        release.notified().await;
                    }
                    respond(200, &[("cache-control", "no-store")], body)
                }
                // Ten pieces of two bytes, declared; each after the first
                // waits for a `release`.
                "/pieces" => {
                    let (mut tx, b) = BodyChannel::new();
                    tokio::spawn(async move {
                        tx.send(Bytes::from("p0")).await;
                        for i in 1..10 {
                            release.notified().await;
                            tx.send(Bytes::from(format!("p{i}"))).await;
                        }
                    });
                    let mut r = Response::new(b);
                    r.headers_mut()
                        .insert("cache-control", "max-age=60".parse().unwrap());
                    r.headers_mut()
                        .insert("content-length", "20".parse().unwrap());
                    r
                }
                // As /slow, with its length declared.
                "/slow-sized" => {
                    let (mut tx, b) = BodyChannel::new();
                    tokio::spawn(async move {
                        tx.send(Bytes::from("slow ")).await;
                        release.notified().await;
                        tx.send(Bytes::from("end!")).await;
                    });
                    let mut r = Response::new(b);
                    r.headers_mut()
                        .insert("cache-control", "max-age=60".parse().unwrap());
                    r.headers_mut()
                        .insert("content-length", "9".parse().unwrap());
                    r
                }
                "/slow" => {
                    let (mut tx, b) = BodyChannel::new();
                    tokio::spawn(async move {
                        tx.send(Bytes::from("slow ")).await;
                        release.notified().await;
                        tx.send(Bytes::from(format!("#{n}"))).await;
                    });
                    let mut r = Response::new(b);
                    r.headers_mut()
                        .insert("cache-control", "max-age=60".parse().unwrap());
                    r
                }
                _ => text(404, "no such case"),
            }
        }
    })
}

struct Setup {
    proxy: Proxy,
    seen: Shared,
    release: Arc<Notify>,
    _origin: Backend,
}

impl Setup {
    fn new() -> Setup {
        Setup::with(TestConfig::new())
    }

    fn with(base: TestConfig) -> Setup {
        let seen = Shared::default();
        let release = Arc::new(Notify::new());
        let origin = origin(seen.clone(), release.clone());
        let proxy = Proxy::start(
            &base
                .set("admin.address", "127.0.0.1:0")
                .set("caches.pages.memory", "16MiB")
                .set("caches.pages.max_object", "1MiB")
                .set("caches.pages.lock_timeout", "60s")
                .group("app", [origin.addr])
                .route(Route::to("app").set("cache", "pages"))
                .toml(),
        );
        Setup {
            proxy,
            seen,
            release,
            _origin: origin,
        }
    }

    /// Requests of `METHOD path` the origin saw.
    fn count(&self, what: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .count
            .get(what)
            .copied()
            .unwrap_or(0)
    }

    async fn ask(
        &self,
        method: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (u16, http::HeaderMap, String) {
        exchange(self.proxy.addr, method, "cache.test", path, fields, empty()).await
    }

    async fn get(&self, path: &str) -> (u16, http::HeaderMap, String) {
        self.ask("GET", path, &[]).await
    }

    async fn admin(&self, method: &str, path: &str) -> (u16, String) {
        let addr = self.proxy.running().admin_addr().expect("admin listener");
        let (status, _, body) = exchange(addr, method, "admin", path, &[], empty()).await;
        (status, body)
    }
}

fn cache_status(h: &http::HeaderMap) -> &str {
    h.get("cache-status").map_or("", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_fresh_response_is_served_from_the_cache_with_age_and_cache_status() {
    let s = Setup::new();
    let (status, h, body) = s.get("/fresh").await;
    assert_eq!((status, body.as_str()), (200, "/fresh #1"));
    assert_eq!(
        cache_status(&h),
        "tidegate; fwd=uri-miss; fwd-status=200; ttl=60; stored"
    );
    for _ in 0..3 {
        let (status, h, body) = s.get("/fresh").await;
        assert_eq!((status, body.as_str()), (200, "/fresh #1"));
        assert!(cache_status(&h).starts_with("tidegate; hit; ttl="), "{h:?}");
        let age: u64 = h["age"].to_str().unwrap().parse().unwrap();
        assert!(age <= 60, "{age}");
        assert_eq!(h["etag"], "\"f1\"");
        assert_eq!(h["content-length"], "9");
    }
    assert_eq!(s.count("GET /fresh"), 1);
    // Another query is another key.
    let (_, _, body) = s.get("/fresh?x=1").await;
    assert_eq!(body, "/fresh #2");
    let (_, metrics) = s.admin("GET", "/metrics").await;
    for want in [
        "tidegate_cache_requests_total{cache=\"pages\",result=\"hit\"} 3",
        "tidegate_cache_requests_total{cache=\"pages\",result=\"miss\"} 2",
        "tidegate_cache_keys{cache=\"pages\"} 2",
    ] {
        assert!(metrics.contains(want), "{want} not in {metrics}");
    }
}

/// Each worker thread holds its own handle on a cache (no reference count
/// shared between threads on the request path), all on the same stored
/// responses and passes: what one thread stored, every thread serves.
/// (Each request is a new connection; the kernel spreads them over the
/// proxy's two threads, so twelve all on one is about one chance in two
/// thousand.)
#[tokio::test]
async fn every_worker_thread_serves_what_one_stored_and_knows_its_passes() {
    let s = Setup::new();
    s.get("/fresh").await;
    // Not storable the first time: a pass. Then storable, but varying,
    // which a miss on a passed key cannot store; a thread that did not
    // know the pass would fetch it for the cache and store it.
    s.get("/turns-vary").await;
    for _ in 0..12 {
        let (_, h, body) = s.get("/fresh").await;
        assert_eq!(body, "/fresh #1");
        assert!(cache_status(&h).starts_with("tidegate; hit"), "{h:?}");
        let (_, h, _) = s.get("/turns-vary").await;
        assert!(cache_status(&h).contains("detail=pass"), "{h:?}");
    }
    assert_eq!(s.count("GET /fresh"), 1);
    assert_eq!(s.count("GET /turns-vary"), 13);
}

/// `Cache-Status` is a list each cache adds its member to, at the end
/// (RFC 9211 §2): on HTTP/1.1 the proxy's is written after the response's
/// fields, on HTTP/2 appended to them; either way once, after the
/// origin's own.
#[tokio::test]
async fn the_proxys_cache_status_follows_the_origins_once_on_http1_and_http2() {
    let s = Setup::new();
    let want = "origin-cache; hit,tidegate; fwd=uri-miss; fwd-status=200; detail=no-freshness";
    for n in 1..=2 {
        let (status, h, body) = s.get("/origin-status").await;
        assert_eq!((status, body), (200, format!("/origin-status #{n}")));
        assert_eq!(all_values(&h, "cache-status"), want, "HTTP/1.1 #{n}");
    }
    let tcp = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
    let req = Request::get(format!("http://{}/origin-status", s.proxy.addr))
        .body(empty())
        .unwrap();
    let (status, h, _) = pki::request(tcp, true, req).await.expect("h2c request");
    assert_eq!(status, 200);
    assert_eq!(all_values(&h, "cache-status"), want, "HTTP/2");
    // A hit's comes from the stored response's fields: once too.
    let (_, h, _) = s.get("/fresh").await;
    assert_eq!(
        all_values(&h, "cache-status"),
        "tidegate; fwd=uri-miss; fwd-status=200; ttl=60; stored"
    );
    let (_, h, _) = s.get("/fresh").await;
    assert_eq!(h.get_all("cache-status").iter().count(), 1, "{h:?}");
}

#[tokio::test]
async fn what_must_not_be_stored_is_not() {
    let s = Setup::new();
    for (path, fields, detail) in [
        ("/nostore", &[][..], "no-store"),
        ("/private", &[][..], "private"),
        ("/cookie", &[][..], "set-cookie"),
        (
            "/auth",
            &[("authorization", "Basic dTpw")][..],
            "authorization",
        ),
    ] {
        for n in 1..=2 {
            let (status, h, body) = s.ask("GET", path, fields).await;
            assert_eq!(status, 200);
            assert_eq!(body, format!("{path} #{n}"), "{path}");
            assert!(
                cache_status(&h).contains(&format!("detail={detail}")),
                "{path}: {}",
                cache_status(&h)
            );
        }
    }
    // A field named in `Connection` is never stored (nor sent on).
    s.get("/connection").await;
    let (_, h, body) = s.get("/connection").await;
    assert_eq!(body, "/connection #1");
    assert!(!h.contains_key("x-secret"), "{h:?}");
}

#[tokio::test]
async fn a_stale_response_is_revalidated_and_the_304_freshens_it() {
    let s = Setup::new();
    let (_, h, body) = s.get("/revalidate").await;
    assert_eq!(
        (body.as_str(), h["x-version"].to_str().unwrap()),
        ("/revalidate #1", "1")
    );
    // Stale at once (max-age=0): asked again with its validator; the 304
    // updates the stored fields and the stored body is served.
    let (status, h, body) = s.get("/revalidate").await;
    assert_eq!((status, body.as_str()), (200, "/revalidate #1"));
    assert_eq!(h["x-version"], "2");
    assert_eq!(s.seen.lock().unwrap().inm["/revalidate"], "\"r1\"");
    assert!(
        cache_status(&h).starts_with("tidegate; fwd=stale; fwd-status=304"),
        "{}",
        cache_status(&h)
    );
    // Fresh now (the 304's max-age=60): a hit, with the new fields.
    let (_, h, body) = s.get("/revalidate").await;
    assert_eq!(
        (body.as_str(), h["x-version"].to_str().unwrap()),
        ("/revalidate #1", "2")
    );
    assert!(cache_status(&h).contains("hit"));
    assert_eq!(s.count("GET /revalidate"), 2);
    // A client that asks for revalidation gets it.
    s.ask("GET", "/revalidate", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(s.count("GET /revalidate"), 3);
}

#[tokio::test]
async fn vary_keeps_variants_apart_and_a_star_is_never_stored() {
    let s = Setup::new();
    for lang in ["en", "de", "en", "de"] {
        let (_, _, body) = s.ask("GET", "/vary", &[("accept-language", lang)]).await;
        assert!(body.starts_with(&format!("lang {lang} #")), "{body}");
    }
    assert_eq!(s.count("GET /vary"), 2);
    let (_, h, _) = s.ask("GET", "/vary", &[("accept-language", "fr")]).await;
    assert!(
        cache_status(&h).contains("fwd=vary-miss"),
        "{}",
        cache_status(&h)
    );
    for _ in 0..2 {
        s.ask("GET", "/star", &[("accept-language", "en")]).await;
    }
    assert_eq!(s.count("GET /star"), 2);
}

#[tokio::test]
async fn head_ranges_and_conditionals_are_answered_from_the_stored_response() {
    let s = Setup::new();
    let whole = range_body();
    let (_, _, body) = s.get("/range").await;
    assert_eq!(body.as_bytes(), &whole[..]);
    let (status, h, body) = s.ask("HEAD", "/range", &[]).await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(h["content-length"], "1000");
    let (status, h, body) = s.ask("GET", "/range", &[("range", "bytes=10-19")]).await;
    assert_eq!(status, 206);
    assert_eq!(h["content-range"], "bytes 10-19/1000");
    assert_eq!(body.as_bytes(), &whole[10..20]);
    let (status, h, body) = s.ask("GET", "/range", &[("range", "bytes=-5")]).await;
    assert_eq!((status, body.as_bytes()), (206, &whole[995..]));
    assert_eq!(h["content-range"], "bytes 995-999/1000");
    let (status, h, _) = s.ask("GET", "/range", &[("range", "bytes=5000-")]).await;
    assert_eq!(status, 416);
    assert_eq!(h["content-range"], "bytes */1000");
    // An If-Range that does not match: the whole response.
    let (status, _, body) = s
        .ask(
            "GET",
            "/range",
            &[("range", "bytes=0-1"), ("if-range", "\"other\"")],
        )
        .await;
    assert_eq!((status, body.len()), (200, 1000));
    let (status, h, body) = s.ask("GET", "/range", &[("if-none-match", "\"g1\"")]).await;
    assert_eq!((status, body.as_str()), (304, ""));
    assert_eq!(h["etag"], "\"g1\"");
    assert_eq!(s.count("GET /range"), 1);
    assert_eq!(s.count("HEAD /range"), 0);
}

#[tokio::test]
async fn an_unsafe_method_invalidates_what_was_stored() {
    let s = Setup::new();
    s.get("/fresh").await;
    s.get("/fresh").await;
    assert_eq!(s.count("GET /fresh"), 1);
    let (status, _, _) = s.ask("POST", "/fresh", &[]).await;
    assert_eq!(status, 200);
    let (_, h, body) = s.get("/fresh").await;
    assert_eq!(body, "/fresh #2");
    assert!(cache_status(&h).contains("fwd=uri-miss"));
}

#[tokio::test]
async fn a_body_over_max_object_streams_whole_and_is_not_kept() {
    let s = Setup::new();
    for _ in 0..2 {
        let (status, h, body) = s.get("/big").await;
        assert_eq!((status, body.len()), (200, 2 << 20));
        assert!(cache_status(&h).contains("detail=too-large"), "{h:?}");
    }
    assert_eq!(s.count("GET /big"), 2);
}

#[tokio::test]
async fn concurrent_misses_make_one_fetch() {
    let s = Arc::new(Setup::new());
    let first = {
        let s = s.clone();
        tokio::spawn(async move { s.get("/slow").await })
    };
    until("the first fetch", || s.count("GET /slow") == 1).await;
    let mut others = Vec::new();
    for _ in 0..99 {
        let s = s.clone();
        others.push(tokio::spawn(async move { s.get("/slow").await }));
    }
    // Every other request waits for the first one's response.
    tokio::time::timeout(HANG, async {
        loop {
            let (_, body) = s.admin("GET", "/caches").await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v[0]["waiting"] == 99 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("99 waiting");
    s.release.notify_one();
    // 100 identical bodies from one fetch.
    let (_, h, body) = first.await.unwrap();
    assert_eq!(body, "slow #1");
    assert!(cache_status(&h).contains("stored"));
    for o in others {
        let (status, h, body) = o.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "slow #1"));
        assert!(cache_status(&h).contains("hit; ttl="), "{h:?}");
        assert!(cache_status(&h).contains("collapsed"), "{h:?}");
    }
    assert_eq!(s.count("GET /slow"), 1);
}

#[tokio::test]
async fn concurrent_misses_stream_the_response_being_stored_as_it_comes() {
    let s = Arc::new(Setup::new());
    let get = || {
        let req = Request::get("/slow-sized")
            .header("host", "cache.test")
            .body(empty())
            .unwrap();
        send(s.proxy.addr, req)
    };
    let mut first = get().await.unwrap();
    let mut others = Vec::new();
    // (Without streaming, these heads would come only after the release.)
    tokio::time::timeout(HANG, async {
        for _ in 0..20 {
            others.push(get().await.unwrap());
        }
    })
    .await
    .expect("the waiting misses' heads before the body's end");
    // Every one has the head, and the body so far, while the origin
    // still holds the rest back.
    let mut bodies = Vec::new();
    for r in std::iter::once(&mut first).chain(others.iter_mut()) {
        assert_eq!(r.status(), 200);
        let frame = r.body_mut().frame().await.unwrap().unwrap();
        bodies.push(frame.into_data().unwrap().to_vec());
    }
    for (i, r) in others.iter().enumerate() {
        let cs = cache_status(r.headers());
        assert!(
            cs.contains("hit; ttl=") && cs.contains("collapsed"),
            "{i}: {cs}"
        );
        assert_eq!(r.headers()["content-length"], "9");
    }
    assert!(bodies.iter().all(|b| b == b"slow "), "{bodies:?}");
    s.release.notify_one();
    for (r, mut got) in std::iter::once(first).chain(others).zip(bodies) {
        got.extend_from_slice(&r.into_body().collect().await.unwrap().to_bytes());
        assert_eq!(got, b"slow end!");
    }
    assert_eq!(s.count("GET /slow-sized"), 1);
    // Stored whole: the next one is a plain hit.
    let (_, h, body) = s.get("/slow-sized").await;
    assert_eq!(body, "slow end!");
    assert!(!cache_status(&h).contains("collapsed"), "{h:?}");
}

#[tokio::test]
async fn when_the_first_client_leaves_those_streaming_its_response_still_get_it_whole() {
    let s = Arc::new(Setup::new());
    let mut leader = RawConn::connect(s.proxy.addr).await;
    leader
        .send(b"GET /pieces HTTP/1.1\r\nhost: cache.test\r\n\r\n")
        .await;
    leader.wait_for(b"p0").await;
    let mut others = Vec::new();
    for _ in 0..3 {
        let req = Request::get("/pieces")
            .header("host", "cache.test")
            .body(empty())
            .unwrap();
        let mut r = tokio::time::timeout(HANG, send(s.proxy.addr, req))
            .await
            .expect("a head while the body streams")
            .unwrap();
        let first = r.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "p0");
        others.push(r);
    }
    // The first client goes away; the proxy finds out on a later write.
    drop(leader);
    for i in 1..10 {
        s.release.notify_one();
        for r in &mut others {
            let piece = tokio::time::timeout(HANG, r.body_mut().frame())
                .await
                .expect("the next piece")
                .expect("not cut off")
                .expect("not cut off");
            assert_eq!(piece.into_data().unwrap(), format!("p{i}"));
        }
    }
    for r in others {
        assert!(r.into_body().collect().await.unwrap().to_bytes().is_empty());
    }
    assert_eq!(s.count("GET /pieces"), 1);
    // Read whole into the cache: a plain hit now.
    let (_, h, body) = s.get("/pieces").await;
    assert_eq!(body, "p0p1p2p3p4p5p6p7p8p9");
    assert!(cache_status(&h).starts_with("tidegate; hit"), "{h:?}");
}

#[tokio::test]
async fn misses_for_a_key_whose_response_could_not_be_stored_do_not_wait_for_one_another() {
    let s = Arc::new(Setup::new());
    let (_, h, _) = s.get("/held-nostore").await;
    assert!(cache_status(&h).contains("detail=no-store"), "{h:?}");
    // Two at once, the first held at the origin: the second does not wait
    // for it (it would, coalesced, were the key not known uncacheable).
    let mut held = Vec::new();
    for want in [2, 3] {
        let s2 = s.clone();
        held.push(tokio::spawn(async move { s2.get("/held-nostore").await }));
        until("the origin sees it", || {
            s.count("GET /held-nostore") == want
        })
        .await;
    }
    // (Each handler waits for the release once it counted: wake until
    // both are done.)
    tokio::time::timeout(HANG, async {
        while !held.iter().all(|h| h.is_finished()) {
            s.release.notify_waiters();
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both answered");
    for h in held {
        let (status, h, _) = h.await.unwrap();
        assert_eq!(status, 200);
        assert!(!cache_status(&h).contains("collapsed"), "{h:?}");
    }
}

#[tokio::test]
async fn a_key_whose_response_could_not_be_stored_is_stored_once_it_may_be() {
    let s = Setup::new();
    for path in ["/turns", "/turns-vary"] {
        let (_, h, _) = s.get(path).await;
        assert!(cache_status(&h).contains("detail=no-store"), "{h:?}");
    }
    // The next response may be stored: it is (hit-for-miss, not pass)...
    let (_, h, _) = s.get("/turns").await;
    assert!(cache_status(&h).contains("stored"), "{h:?}");
    let (_, h, body) = s.get("/turns").await;
    assert!(cache_status(&h).starts_with("tidegate; hit"), "{h:?}");
    assert_eq!((body.as_str(), s.count("GET /turns")), ("/turns #2", 2));
    // ... unless it varies: what it varies on is not kept for such a miss.
    let (_, h, _) = s.get("/turns-vary").await;
    assert!(cache_status(&h).contains("detail=pass"), "{h:?}");
    s.get("/turns-vary").await;
    assert_eq!(s.count("GET /turns-vary"), 3);
}

#[tokio::test]
async fn a_stale_response_stands_in_when_the_origin_fails_and_stale_if_error_allows() {
    let s = Setup::new();
    let (_, _, body) = s.get("/flaky").await;
    assert_eq!(body, "/flaky #1");
    let (status, h, body) = s.get("/flaky").await;
    assert_eq!((status, body.as_str()), (200, "/flaky #1"));
    assert!(cache_status(&h).contains("detail=stale-if-error"), "{h:?}");
    assert_eq!(s.count("GET /flaky"), 2);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_revalidates_in_the_background() {
    let s = Setup::new();
    assert_eq!(s.get("/swr").await.2, "/swr #1");
    // Stale at once, within stale-while-revalidate: served as it is...
    let (status, h, body) = s.get("/swr").await;
    assert_eq!((status, body.as_str()), (200, "/swr #1"));
    assert_eq!(h["x-version"], "1");
    assert!(
        cache_status(&h).contains("detail=stale-while-revalidate"),
        "{}",
        cache_status(&h)
    );
    // ...while its revalidation goes to the origin with the validator,
    // and the 304 freshens it for the next ones.
    until("the background revalidation", || s.count("GET /swr") == 2).await;
    tokio::time::timeout(HANG, async {
        loop {
            let (_, h, body) = s.get("/swr").await;
            assert_eq!(body, "/swr #1");
            if h["x-version"] == "2" {
                assert!(cache_status(&h).starts_with("tidegate; hit; ttl="), "{h:?}");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("freshened");
    assert_eq!(s.seen.lock().unwrap().inm["/swr"], "\"s1\"");
    assert_eq!(s.count("GET /swr"), 2);
}

#[tokio::test]
async fn a_background_revalidation_is_logged_and_a_304_for_another_response_freshens_nothing() {
    let dir = Dir::new("cache-log");
    let log = dir.join("access.log");
    let s = Setup::with(TestConfig::new().set("server.access_log", log.to_str().unwrap()));
    assert_eq!(s.get("/swr-other").await.2, "/swr-other #1");
    let (_, h, _) = s.get("/swr-other").await;
    assert!(cache_status(&h).contains("detail=stale-while-revalidate"));
    // The revalidation's line: once it is written, its answer is in.
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    until("the background revalidation's log line", || {
        text()
            .lines()
            .any(|l| l.contains("\"GET /swr-other HTTP/1.1\" 304 0 ") && l.contains(" background "))
    })
    .await;
    // Its 304 was for `"o2"`, not the stored `"o1"`: still stale.
    let (_, h, body) = s.get("/swr-other").await;
    assert_eq!(body, "/swr-other #1");
    assert_eq!(h["x-version"], "1", "{h:?}");
    assert!(
        cache_status(&h).contains("detail=stale-while-revalidate"),
        "{}",
        cache_status(&h)
    );
}

#[tokio::test]
async fn a_304_without_validators_freshens_the_response_it_answers_and_a_304_naming_another_does_not(
) {
    let s = Setup::new();
    assert_eq!(s.get("/bare").await.2, "/bare #1");
    // The 304 to the cache's own conditional repeats no validator: it is
    // about the one response asked about, which the client gets (never
    // the 304 itself: its request was not conditional), freshened.
    let (status, h, body) = s.get("/bare").await;
    assert_eq!((status, body.as_str()), (200, "/bare #1"), "{h:?}");
    assert_eq!(
        cache_status(&h),
        "tidegate; fwd=stale; fwd-status=304; ttl=60",
        "{h:?}"
    );
    let (_, h, _) = s.get("/bare").await;
    assert!(cache_status(&h).starts_with("tidegate; hit"), "{h:?}");
    assert_eq!(s.count("GET /bare"), 2);
    // A 304 with another ETag: the stored response as it is, not freshened.
    assert_eq!(s.get("/swr-other").await.2, "/swr-other #1");
    let (status, h, body) = s
        .ask("GET", "/swr-other", &[("cache-control", "no-cache")])
        .await;
    assert_eq!((status, body.as_str()), (200, "/swr-other #1"), "{h:?}");
    assert_eq!(h["x-version"], "1");
    assert!(cache_status(&h).contains("detail=not-updated"), "{h:?}");
}

#[tokio::test]
async fn if_match_on_a_miss_reaches_the_origin_and_its_answer_is_not_stored() {
    let s = Setup::new();
    // The origin's 412 is the answer (the precondition was not removed)...
    let (status, h, _) = s
        .ask("GET", "/precondition", &[("if-match", "\"zz\"")])
        .await;
    assert_eq!(status, 412, "{h:?}");
    assert!(cache_status(&h).contains("detail=precondition"), "{h:?}");
    // ...and nothing was stored: the next request is a miss, which fills.
    let (status, h, body) = s.get("/precondition").await;
    assert_eq!((status, body.as_str()), (200, "/precondition #2"));
    assert!(cache_status(&h).contains("stored"), "{h:?}");
    // On a stored response too, the origin decides.
    let (status, _, _) = s
        .ask(
            "GET",
            "/precondition",
            &[
                ("if-unmodified-since", "Thu, 01 Jan 1970 00:00:00 GMT"),
                ("if-match", "\"zz\""),
            ],
        )
        .await;
    assert_eq!(status, 412);
    assert_eq!(s.count("GET /precondition"), 3);
    assert_eq!(s.get("/precondition").await.2, "/precondition #2");
}

#[tokio::test]
async fn purges_through_the_admin_listener() {
    let s = Setup::new();
    for p in ["/fresh", "/fresh/a", "/fresh/b", "/range"] {
        s.get(p).await;
    }
    let (_, body) = s.admin("GET", "/caches").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v[0]["name"].as_str(), v[0]["keys"].as_u64()),
        (Some("pages"), Some(4))
    );
    let (status, _) = s
        .admin("POST", "/caches/pages/purge?url=http://cache.test/fresh")
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.get("/fresh").await.2, "/fresh #2");
    assert_eq!(s.get("/fresh/a").await.2, "/fresh/a #1");
    s.admin(
        "POST",
        "/caches/pages/purge?prefix=http%3A%2F%2Fcache.test%2Ffresh%2F",
    )
    .await;
    assert_eq!(s.get("/fresh/a").await.2, "/fresh/a #2");
    assert_eq!(s.get("/fresh/b").await.2, "/fresh/b #2");
    assert_eq!(s.get("/range").await.0, 200);
    assert_eq!(s.count("GET /range"), 1);
    s.admin("POST", "/caches/pages/purge").await;
    s.get("/range").await;
    assert_eq!(s.count("GET /range"), 2);
    assert_eq!(s.admin("POST", "/caches/nope/purge").await.0, 404);
    assert_eq!(s.admin("GET", "/caches/pages/purge").await.0, 405);
}

#[tokio::test]
async fn only_if_cached_with_nothing_stored_is_a_504() {
    let s = Setup::new();
    let (status, _, _) = s
        .ask("GET", "/fresh", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(status, 504);
    assert_eq!(s.count("GET /fresh"), 0);
    s.get("/fresh").await;
    let (status, _, body) = s
        .ask("GET", "/fresh", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!((status, body.as_str()), (200, "/fresh #1"));
}
