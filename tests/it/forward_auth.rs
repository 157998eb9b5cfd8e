//! Forward auth on a route (`[routes.forward_auth]`): an in-test auth
//! service that records what it received and answers by the client's
//! `Authorization`; a 2xx lets the request on with the decision's fields
//! (and none of the client's of those names), any other answer returns
//! to the client as it came, no decision (a closed port, a hang past
//! `timeout`) is the route's `on_error` with one log line, the auth
//! service's connections are pooled, and `tidegate check` names each bad
//! field.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::admin::closed_port;
use crate::common::binary::Binary;
use crate::common::config::{Route, TestConfig};
use crate::common::*;

/// What the auth service received: method, target, fields, body bytes.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: http::HeaderMap,
    body: usize,
}

/// An auth service on a runtime of its own, counting the connections it
/// accepted and keeping every request it got.
struct Auth {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Auth {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Auth {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Its rules, by the `Authorization` it was sent: `Bearer good` is
/// alice (200 with `X-User` and `X-Groups`), `Bearer anon` a 200 with
/// no fields, `Bearer away` a 302 to the login page, `Bearer slow` no
/// answer for [`HANG`]; anything else a 401 with a challenge, a cookie
/// and a body. `Bearer broken` is a 500, `Bearer huge` a 200 with a
/// body over 64 KiB.
async fn decide(headers: &http::HeaderMap) -> Response<Body> {
    let who = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut resp = Response::new(empty());
    match who.as_str() {
        "Bearer good" => {
            let h = resp.headers_mut();
            h.insert("x-user", "alice".parse().unwrap());
            h.insert("x-groups", "admin".parse().unwrap());
            h.append("x-groups", "dev".parse().unwrap());
            h.insert("x-internal", "not copied".parse().unwrap());
        }
        "Bearer anon" => {}
        "Bearer away" => {
            *resp.status_mut() = http::StatusCode::FOUND;
            let h = resp.headers_mut();
            h.insert(
                "location",
                "https://login.test/?next=%2Fapp".parse().unwrap(),
            );
        }
        "Bearer slow" => {
            tokio::time::sleep(HANG).await;
        }
        "Bearer broken" => resp = text(500, "the auth service failed\n"),
        "Bearer huge" => resp = text(200, &"x".repeat(64 * 1024 + 1)),
        _ => {
            resp = text(401, "denied by the auth service\n");
            let h = resp.headers_mut();
            h.insert("www-authenticate", "Bearer realm=\"app\"".parse().unwrap());
            h.insert("set-cookie", "tried=1; Path=/".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
        }
    }
    resp
}

fn auth_service() -> Auth {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (count, log) = (accepted.clone(), seen.clone());
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().len());
                        log.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            target: parts.uri.to_string(),
                            headers: parts.headers.clone(),
                            body: body.unwrap_or(usize::MAX),
                        });
                        Ok::<_, Infallible>(decide(&parts.headers).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Auth {
        addr,
        accepted,
        seen,
        rt: Some(rt),
    }
}

/// The upstream: answers with the `X-User`, `X-Groups` and
/// `X-Internal` it received (`-` for none), counting requests.
fn origin(count: Arc<AtomicUsize>) -> Backend {
    backend(move |req: Request<Incoming>| {
        count.fetch_add(1, Ordering::SeqCst);
        let field = |name: &str| {
            let all: Vec<&str> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            match all.is_empty() {
                true => "-".to_string(),
                false => all.join(","),
            }
        };
        let body = format!(
            "user={} groups={} internal={}",
            field("x-user"),
            field("x-groups"),
            field("x-internal")
        );
        async move { text(200, &body) }
    })
}

/// `/app/` behind `auth` at `/verify`, with `Authorization` and `Cookie`
/// sent to it and `X-User`, `X-Groups` taken from it; `/open/` behind it
/// too with the defaults (the client's target, no fields either way);
/// `more` sets more keys on `/app/`'s `forward_auth`.
fn config(
    origin: &Backend,
    auth: std::net::SocketAddr,
    more: &[(&str, toml::Value)],
) -> TestConfig {
    let mut app = Route::to("app")
        .path_prefix("/app/")
        .set("forward_auth.upstream", "auth")
        .set("forward_auth.path", "/verify")
        .set(
            "forward_auth.request_headers",
            vec!["Authorization", "Cookie"],
        )
        .set("forward_auth.response_headers", vec!["X-User", "X-Groups"]);
    for (k, v) in more {
        app = app.set(&format!("forward_auth.{k}"), v.clone());
    }
    TestConfig::new()
        .group("app", [origin.addr])
        .group("auth", [auth])
        .route(app)
        .route(
            Route::to("app")
                .path_prefix("/open/")
                .set("forward_auth.upstream", "auth"),
        )
}

/// `method path` with `fields`, on a new connection: status, fields, body.
async fn ask(
    proxy: &Proxy,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test.local");
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    let req = req.body(full(body.to_string())).unwrap();
    let resp = tokio::time::timeout(HANG, send(proxy.addr, req))
        .await
        .expect("no hang")
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// The request's ID (and `traceparent`) reach the auth service when it
/// asks for them, and the upstream once each, as on any route.
#[tokio::test]
async fn the_auth_service_can_be_sent_the_request_id() {
    let auth = auth_service();
    let origin = backend(|req: Request<Incoming>| async move {
        let all = |n: &str| all_values(req.headers(), n);
        text(
            200,
            &format!("{} {}", all("x-req"), all("traceparent").len()),
        )
    });
    let more = [(
        "request_headers",
        toml::Value::from(vec!["Authorization", "X-Req", "Traceparent"]),
    )];
    let proxy = Proxy::start(
        &config(&origin, auth.addr, &more)
            .listener_set("request_id.header", "x-req")
            .set("tracing.otlp_endpoint", "http://127.0.0.1:9/v1/traces")
            .set("tracing.sample_ratio", 0.0)
            .toml(),
    );
    let fields = [("authorization", "Bearer anon"), ("x-req", "client-made")];
    let (status, h, body) = ask(&proxy, "GET", "/app/page", &fields, "").await;
    let id = h["x-req"].to_str().unwrap();
    assert_eq!((status, id.len()), (200, 32));
    assert_eq!(
        body,
        format!("{id} 55"),
        "the upstream: one ID, one traceparent"
    );
    let seen = auth.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-req"], id);
    assert_eq!(seen[0].headers["traceparent"].len(), 55);
}

#[tokio::test]
async fn a_2xx_lets_the_request_on_with_the_decisions_fields_and_none_of_the_clients() {
    let auth = auth_service();
    let count = Arc::new(AtomicUsize::new(0));
    let origin = origin(count.clone());
    let proxy = Proxy::start(&config(&origin, auth.addr, &[]).toml());
    // The client's own X-User and X-Groups never reach the upstream.
    let spoof = [
        ("authorization", "Bearer good"),
        ("x-user", "mallory"),
        ("x-groups", "root"),
        ("x-internal", "mine"),
    ];
    let (status, _, body) = ask(&proxy, "GET", "/app/page", &spoof, "").await;
    assert_eq!(status, 200);
    assert_eq!(body, "user=alice groups=admin,dev internal=mine");
    // A 2xx without them: the client's are removed all the same.
    let spoof = [("authorization", "Bearer anon"), ("x-user", "mallory")];
    let (status, _, body) = ask(&proxy, "GET", "/app/page", &spoof, "").await;
    assert_eq!(status, 200);
    assert_eq!(body, "user=- groups=- internal=-");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refusal_returns_as_it_came_and_never_reaches_the_upstream() {
    let auth = auth_service();
    let count = Arc::new(AtomicUsize::new(0));
    let origin = origin(count.clone());
    let proxy = Proxy::start(&config(&origin, auth.addr, &[]).toml());

    let (status, h, body) = ask(
        &proxy,
        "GET",
        "/app/page",
        &[("authorization", "Bearer bad")],
        "",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"app\"");
    assert_eq!(h["set-cookie"], "tried=1; Path=/");
    assert_eq!(body, "denied by the auth service\n");
    // Hop-by-hop fields stay on the auth service's hop.
    assert!(!h.contains_key("keep-alive"), "{h:?}");

    let (status, h, _) = ask(
        &proxy,
        "GET",
        "/app/page",
        &[("authorization", "Bearer away")],
        "",
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(h["location"], "https://login.test/?next=%2Fapp");

    // No credentials at all: refused the same way.
    assert_eq!(ask(&proxy, "GET", "/app/page", &[], "").await.0, 401);
    // A 5xx of the auth service is its answer too (as Traefik has it).
    let broken = [("authorization", "Bearer broken")];
    let (status, _, body) = ask(&proxy, "GET", "/app/page", &broken, "").await;
    assert_eq!(status, 500);
    assert_eq!(body, "the auth service failed\n");
    assert_eq!(count.load(Ordering::SeqCst), 0);
    assert_eq!(auth.seen().len(), 4);
}

#[tokio::test]
async fn the_subrequest_carries_the_method_target_client_and_chosen_fields_only() {
    let auth = auth_service();
    let origin = origin(Arc::new(AtomicUsize::new(0)));
    let proxy = Proxy::start(&config(&origin, auth.addr, &[]).toml());
    let fields = [
        ("authorization", "Bearer good"),
        ("cookie", "session=s1"),
        ("x-secret", "stays here"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
    ];
    let (status, _, _) = ask(
        &proxy,
        "POST",
        "/app/form?q=1&r=2",
        &fields,
        "the request body",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = ask(&proxy, "DELETE", "/open/thing?x=y", &[], "").await;
    assert_eq!(status, 401);

    let seen = auth.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let app = &seen[0];
    assert_eq!(app.method, "POST");
    assert_eq!(app.target, "/verify");
    assert_eq!(app.body, 0, "no body goes to the auth service");
    let h = &app.headers;
    assert_eq!(h["x-forwarded-method"], "POST");
    assert_eq!(h["x-forwarded-uri"], "/app/form?q=1&r=2");
    assert_eq!(h["x-forwarded-host"], "test.local");
    assert_eq!(h["x-forwarded-proto"], "http");
    // The client as the proxy knows it, not as it says.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["authorization"], "Bearer good");
    assert_eq!(h["cookie"], "session=s1");
    assert!(!h.contains_key("x-secret"), "{h:?}");
    assert!(
        !h.contains_key("content-length") || h["content-length"] == "0",
        "{h:?}"
    );
    assert_eq!(h["host"], auth.addr.to_string().as_str());

    // Without `path`: the client's target; without `request_headers`:
    // none of its fields.
    let open = &seen[1];
    assert_eq!(open.method, "DELETE");
    assert_eq!(open.target, "/open/thing?x=y");
    assert_eq!(open.headers["x-forwarded-uri"], "/open/thing?x=y");
    assert!(!open.headers.contains_key("authorization"));
}

/// Several requests on one client connection: the auth service's
/// connection is reused from the pool, not opened per request.
#[tokio::test]
async fn connections_to_the_auth_service_are_reused() {
    let auth = auth_service();
    let origin = origin(Arc::new(AtomicUsize::new(0)));
    // One worker thread: one pool.
    let proxy = Proxy::start(&config(&origin, auth.addr, &[]).threads(1).toml());
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    const N: usize = 6;
    for i in 0..N {
        // Allowed and refused alike.
        let who = if i % 2 == 0 {
            "Bearer good"
        } else {
            "Bearer bad"
        };
        let req = Request::get("/app/x")
            .header("host", "test.local")
            .header("authorization", who)
            .body(empty())
            .unwrap();
        let resp = tokio::time::timeout(HANG, sender.send_request(req))
            .await
            .expect("no hang")
            .unwrap();
        assert_eq!(resp.status().as_u16(), if i % 2 == 0 { 200 } else { 401 });
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(auth.seen().len(), N);
    let accepted = auth.accepted.load(Ordering::SeqCst);
    assert!(accepted < N, "{accepted} connections for {N} subrequests");
    assert_eq!(accepted, 1);
}

/// An auth service that answers too late: the route's `on_error` (503
/// by default, 403 here) when `timeout` runs out, not a hang; and one
/// whose answer is too long to read.
#[tokio::test]
async fn a_hanging_auth_service_gives_on_error_at_its_timeout() {
    let auth = auth_service();
    let count = Arc::new(AtomicUsize::new(0));
    let origin = origin(count.clone());
    let toml = config(&origin, auth.addr, &[("timeout", "300ms".into())]).toml();
    let proxy = Proxy::start(&toml);
    let slow = [("authorization", "Bearer slow")];
    let (status, _, _) = ask(&proxy, "GET", "/app/x", &slow, "").await;
    assert_eq!(status, 503);

    let more = [("timeout", "300ms".into()), ("on_error", 403.into())];
    let proxy = Proxy::start(&config(&origin, auth.addr, &more).toml());
    let (status, _, _) = ask(&proxy, "GET", "/app/x", &slow, "").await;
    assert_eq!(status, 403);
    // A decision whose body is over 64 KiB is none either.
    let huge = [("authorization", "Bearer huge")];
    let (status, _, _) = ask(&proxy, "GET", "/app/x", &huge, "").await;
    assert_eq!(status, 403);
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

/// A closed port: 503 (or `on_error`) and one log line naming forward
/// auth, the group and the refused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_service_that_is_down_gives_on_error_and_a_log_line() {
    let (dead, _held) = dead_port();
    let count = Arc::new(AtomicUsize::new(0));
    let origin = origin(count.clone());
    let cfg = config(&origin, dead, &[]).route(
        Route::to("app")
            .path_prefix("/strict/")
            .set("forward_auth.upstream", "auth")
            .set("forward_auth.on_error", 500),
    );
    let file = TempFile::with("fauth-down.toml", cfg.toml().as_bytes());
    let mut tg = Binary::start(&["--config", file.arg(), "--log-level", "info"]);
    let addr = tg.listening().await;
    let (status, _, _) = get(addr, "/app/x").await;
    assert_eq!(status, 503);
    let line = tg.line_with("status=503").await;
    assert!(
        line.contains("forward auth: `auth` gave no decision"),
        "{line}"
    );
    assert!(line.contains(&dead.to_string()), "{line}");
    let (status, _, _) = get(addr, "/strict/x").await;
    assert_eq!(status, 500);
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

/// A gRPC call gets the refusal as gRPC's code (401: UNAUTHENTICATED).
#[tokio::test]
async fn a_grpc_call_gets_the_refusal_as_its_grpc_status() {
    let auth = auth_service();
    let origin = origin(Arc::new(AtomicUsize::new(0)));
    let proxy = Proxy::start(&config(&origin, auth.addr, &[]).toml());
    let grpc = [("content-type", "application/grpc")];
    let (status, h, _) = ask(&proxy, "POST", "/app/pkg.Svc/Call", &grpc, "").await;
    assert_eq!(status, 200);
    assert_eq!(h["grpc-status"], "16");
}

/// The access log's `$remote_user` from the decision's `user_header`.
#[tokio::test]
async fn the_access_log_names_the_user_the_auth_service_named() {
    let auth = auth_service();
    let origin = origin(Arc::new(AtomicUsize::new(0)));
    let log = TempFile::new("fauth-access.log");
    let cfg = config(&origin, auth.addr, &[("user_header", "X-User".into())])
        .set("server.access_log", log.arg())
        .set("server.access_log_format", "combined");
    let proxy = Proxy::start(&cfg.toml());
    let good = [("authorization", "Bearer good")];
    assert_eq!(ask(&proxy, "GET", "/app/in", &good, "").await.0, 200);
    assert_eq!(ask(&proxy, "GET", "/app/out", &[], "").await.0, 401);
    let text = || std::fs::read_to_string(&log.path).unwrap_or_default();
    until("both log lines", || text().lines().count() >= 2).await;
    let text = text();
    let line = |path: &str| text.lines().find(|l| l.contains(path)).unwrap().to_string();
    assert!(line("/app/in").starts_with("127.0.0.1 - alice ["), "{text}");
    assert!(line("/app/out").starts_with("127.0.0.1 - - ["), "{text}");
}

#[tokio::test]
async fn check_names_the_field_of_each_bad_forward_auth() {
    let cases: [(&str, toml::Value, &str); 6] = [
        (
            "upstream",
            "nope".into(),
            "routes[0].forward_auth.upstream: no upstream group named `nope`",
        ),
        (
            "path",
            "verify".into(),
            "routes[0].forward_auth.path: `verify` must start with `/`",
        ),
        (
            "request_headers",
            vec!["bad name"].into(),
            "routes[0].forward_auth.request_headers: `bad name` is not a header name",
        ),
        (
            "response_headers",
            vec!["Content-Length"].into(),
            "routes[0].forward_auth.response_headers: `Content-Length` frames or routes",
        ),
        (
            "on_error",
            200.into(),
            "routes[0].forward_auth.on_error: 200 is not an error status",
        ),
        ("timeout", "0s".into(), "must be more than zero"),
    ];
    let origin = origin(Arc::new(AtomicUsize::new(0)));
    for (key, value, want) in cases {
        let cfg = config(&origin, closed_port(), &[(key, value)]);
        let file = TempFile::with("fauth-check.toml", cfg.toml().as_bytes());
        let (code, err) = check_config(&file).await;
        assert_eq!(code, Some(2), "{key}: {err}");
        assert!(err.contains(want), "{key}: want {want:?} in {err}");
        // The file and line of the field.
        let at = format!("{}:", file.arg());
        assert!(err.contains(&at), "{err}");
    }
}

/// A route with basic auth too: basic auth takes `Authorization` off
/// the request for the upstream, but the auth service still gets the
/// client's own when `request_headers` names it (and the upstream does
/// not, unless `forward_authorization`).
#[tokio::test]
async fn with_basic_auth_the_auth_service_still_sees_the_clients_authorization() {
    let dir = std::env::temp_dir().join(format!("tidegate-fa-basic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users");
    let out = std::process::Command::new("htpasswd")
        .args(["-cbB", file.to_str().unwrap(), "alice", "pw"])
        .output()
        .expect("htpasswd (apache2-utils) runs");
    assert!(out.status.success());
    let auth = auth_service();
    let origin = origin(Arc::new(AtomicUsize::new(0)));
    let config = config(&origin, auth.addr, &[]).toml().replace(
        "[routes.forward_auth]",
        &format!(
            "basic_auth = {{ realm = \"r\", htpasswd = {:?} }}\n[routes.forward_auth]",
            file.to_str().unwrap()
        ),
    );
    assert!(config.contains("basic_auth"), "{config}");
    let proxy = Proxy::start(&config);
    let basic = "Basic YWxpY2U6cHc="; // alice:pw
    let (status, _, _) = ask(&proxy, "GET", "/app/x", &[("authorization", basic)], "").await;
    // The auth service refuses anything but `Bearer good`: it saw Basic.
    assert_eq!(status, 401);
    let seen = auth.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].headers["authorization"], basic);
    let _ = std::fs::remove_dir_all(&dir);
}
