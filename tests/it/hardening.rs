//! Requests an attacker would send: each is refused with a clear 4xx and
//! nothing is forwarded, while well-formed ones pass as before. One
//! authority per request (the request-target, `:authority`, `Host`, SNI),
//! valid hosts, strict framing, field names with underscores, HTTP/1.2,
//! requests per connection, HTTP/2 resets. Raw HTTP/1.1 bytes and raw
//! HTTP/2 frames where real clients refuse to send such requests, and an
//! upstream that records the exact heads it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::common::h2raw::{self, Answer, H2Raw};
use crate::common::pki::{self, Ca, Client};
use crate::common::*;
use http::Request;
use tokio::io::AsyncWriteExt;

/// An upstream that keeps every request head it receives, byte for byte,
/// and answers each with `200 seen`.
struct Recorder {
    backend: Backend,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn new() -> Recorder {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let backend = raw_backend(move |mut stream| {
            let seen = seen.clone();
            async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request_head(&mut stream, &mut buf).await {
                    seen.lock().unwrap().push(head);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nseen";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            }
        });
        Recorder { backend, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// The one head received so far.
    fn only(&self) -> String {
        let heads = self.heads();
        assert_eq!(heads.len(), 1, "{heads:?}");
        heads[0].clone()
    }

    fn nothing(&self) {
        assert!(self.heads().is_empty(), "forwarded: {:?}", self.heads());
    }

    fn clear(&self) {
        self.heads.lock().unwrap().clear();
    }
}

/// The value of `name` in a recorded head (the first such line).
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A route for `admin.test` answering 403 itself, beside the default route
/// to the upstream.
const ADMIN_ROUTE: &str =
    "[[routes]]\nhost = \"admin.test\"\nrespond = { status = 403, body = \"admin only\" }\n";

async fn status_of(proxy: &Proxy, head: &str) -> RawResponse {
    parse_raw(&raw(proxy.addr, head.as_bytes()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_is_routed_by_the_authority_it_sends() {
    let up = Recorder::new();
    let proxy = Proxy::to(up.backend.addr, ADMIN_ROUTE);

    // The target names admin.test: routed there (403), whatever Host says.
    let r = status_of(
        &proxy,
        "GET http://admin.test/echo HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    up.nothing();

    // The other way round: routed and sent as www.test.
    let r = status_of(
        &proxy,
        "GET http://www.test/echo?x=1 HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let head = up.only();
    assert!(head.starts_with("GET /echo?x=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(field(&head, "host"), Some("www.test"), "{head}");
    assert_eq!(field(&head, "x-forwarded-host"), Some("www.test"), "{head}");
    assert_eq!(head.matches("admin.test").count(), 0, "{head}");
}

/// One request over h2c (prior knowledge) with hyper's client.
async fn h2c(addr: SocketAddr, req: Request<Body>) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (status, _, _) = tokio::time::timeout(HANG, pki::request(tcp, true, req))
        .await
        .expect("no hang")
        .expect("h2c request");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_wins_and_a_differing_host_is_malformed() {
    let up = Recorder::new();
    let proxy = Proxy::to(up.backend.addr, ADMIN_ROUTE);
    let req = |authority: &str, host: Option<&str>| {
        let mut b = Request::get(format!("http://{authority}/echo"));
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(empty()).unwrap()
    };
    assert_eq!(
        h2c(proxy.addr, req("admin.test", Some("www.test"))).await,
        400
    );
    assert_eq!(
        h2c(proxy.addr, req("www.test", Some("admin.test"))).await,
        400
    );
    up.nothing();
    assert_eq!(h2c(proxy.addr, req("admin.test", None)).await, 403);
    up.nothing();
    // The same name in both, any case: fine.
    assert_eq!(
        h2c(proxy.addr, req("www.test", Some("WWW.test"))).await,
        200
    );
    assert_eq!(field(&up.only(), "host"), Some("www.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_without_authority_or_host_is_refused() {
    let up = Recorder::new();
    let proxy = Proxy::to(up.backend.addr, "");
    let mut c = H2Raw::connect(proxy.addr).await;
    let mut out = Vec::new();
    h2raw::headers(
        &mut out,
        1,
        &[(":method", "GET"), (":scheme", "http"), (":path", "/echo")],
        true,
    );
    c.send(&out).await;
    let answer = tokio::time::timeout(HANG, c.answer(1))
        .await
        .expect("answer");
    assert_eq!(answer, Answer::Status(400));

    // With a `host` field only, it is the authority.
    let mut c = H2Raw::connect(proxy.addr).await;
    let mut out = Vec::new();
    h2raw::headers(
        &mut out,
        1,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/echo"),
            ("host", "h.test"),
        ],
        true,
    );
    c.send(&out).await;
    let answer = tokio::time::timeout(HANG, c.answer(1))
        .await
        .expect("answer");
    assert_eq!(answer, Answer::Status(200));
    assert_eq!(field(&up.only(), "host"), Some("h.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sni_check_reads_the_authority_not_the_host_field() {
    let ca = Ca::new("Test CA");
    let a = ca.server(&["a.test"]);
    let b = ca.server(&["b.test"]);
    let up = Recorder::new();
    let proxy = Proxy::start(&format!(
        r#"
[server]
threads = 2
log_level = "error"
[[listeners]]
address = "127.0.0.1:0"
[listeners.tls]
certificates = [{{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }}]
[[routes]]
upstream = "app"
[upstreams.app]
servers = ["{}"]
"#,
        a.cert_file.arg(),
        a.key_file.arg(),
        b.cert_file.arg(),
        b.key_file.arg(),
        up.backend.addr
    ));
    let send = |authority: &'static str, host: Option<&'static str>| {
        let ca = &ca;
        let addr = proxy.addr;
        async move {
            let s = Client::trusting(ca)
                .alpn(&[b"h2"])
                .connect(addr, "a.test")
                .await
                .expect("tls");
            let mut b = Request::get(format!("https://{authority}/"));
            if let Some(h) = host {
                b = b.header("host", h);
            }
            let (status, _, _) = pki::request(s, true, b.body(empty()).unwrap())
                .await
                .expect("h2");
            status
        }
    };
    assert_eq!(send("b.test", None).await, 421);
    assert_eq!(send("b.test", Some("a.test")).await, 400);
    up.nothing();
    assert_eq!(send("a.test", Some("a.test")).await, 200);
    assert_eq!(field(&up.only(), "host"), Some("a.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_fields_that_are_missing_repeated_or_invalid_get_400() {
    let up = Recorder::new();
    let proxy = Proxy::to(up.backend.addr, ADMIN_ROUTE);
    for head in [
        "GET / HTTP/1.1\r\nHost: www.test\r\nHost: admin.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: admin.test\r\nhost: www.test\r\n\r\n",
        "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
        "GET http://www.test/ HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test, admin.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test@admin.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test admin.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test:99999\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a..test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        "GET http://user@admin.test/ HTTP/1.1\r\nHost: admin.test\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
    ] {
        let r = status_of(&proxy, head).await;
        assert_eq!(r.status, 400, "{head:?}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{head:?}");
    }
    up.nothing();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_remove_host_or_framing_or_forwarding_fields() {
    let up = Recorder::new();
    let proxy = Proxy::to(up.backend.addr, "");
    let r = status_of(
        &proxy,
        "POST / HTTP/1.1\r\nHost: a.test\r\n\
         Connection: close, host, content-length, x-forwarded-for, via, x-custom\r\n\
         X-Forwarded-For: 10.0.0.1\r\nVia: 1.1 edge\r\nX-Custom: 1\r\n\
         Content-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let head = up.only();
    assert_eq!(field(&head, "host"), Some("a.test"), "{head}");
    assert_eq!(field(&head, "content-length"), Some("0"), "{head}");
    assert_eq!(
        field(&head, "x-forwarded-for"),
        Some("10.0.0.1, 127.0.0.1"),
        "{head}"
    );
    assert_eq!(field(&head, "via"), Some("1.1 edge"), "{head}");
    // An ordinary field it names is still removed.
    assert_eq!(field(&head, "x-custom"), None, "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_without_host_takes_hostless_routes_and_sends_the_servers_authority() {
    let up = Recorder::new();
    let proxy = Proxy::to(up.backend.addr, ADMIN_ROUTE);
    let r = status_of(&proxy, "GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200);
    let head = up.only();
    assert_eq!(
        field(&head, "host"),
        Some(up.backend.addr.to_string().as_str()),
        "{head}"
    );
    assert_eq!(field(&head, "x-forwarded-host"), None, "{head}");
    // An empty Host says the same (RFC 9112 §3.2).
    up.clear();
    let r = status_of(
        &proxy,
        "GET /x HTTP/1.1\r\nHost:\r\nX-Forwarded-Host: admin.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let head = up.only();
    assert_eq!(
        field(&head, "host"),
        Some(up.backend.addr.to_string().as_str())
    );
    assert_eq!(field(&head, "x-forwarded-host"), None, "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let up = Recorder::new();
    let proxy = Proxy::to(up.backend.addr, "");
    let body = "5\r\nhello\r\n0\r\n\r\n";
    for (te, want) in [
        ("Transfer-Encoding: chunked, chunked\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked, chunked\r\nContent-Length: 5\r\n",
            400,
        ),
        ("Transfer-Encoding: chunked\r\nContent-Length: 26\r\n", 400),
        ("Content-Length: 26\r\nTransfer-Encoding: chunked\r\n", 400),
        ("Transfer-Encoding: chunked, identity\r\n", 400),
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        (
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
            501,
        ),
    ] {
        let head = format!("POST / HTTP/1.1\r\nHost: a.test\r\n{te}\r\n{body}");
        // `raw` reads until the server closes: one response, then the end.
        let r = status_of(&proxy, &head).await;
        assert_eq!(r.status, want, "{te:?}");
    }
    up.nothing();
    // Chunked once: through.
    let r = status_of(
        &proxy,
        &format!("POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_names_with_underscores_are_dropped_refused_or_allowed() {
    let head = "GET / HTTP/1.1\r\nHost: a.test\r\nX_Forwarded_For: 6.6.6.6\r\n\
                transfer_encoding: chunked\r\ncontent_length: 5\r\nX-Ok: 1\r\nConnection: close\r\n\r\n";
    let up = Recorder::new();
    let proxy = Proxy::to(up.backend.addr, "");
    assert_eq!(status_of(&proxy, head).await.status, 200);
    let seen = up.only();
    assert!(!seen.contains('_'), "{seen}");
    assert_eq!(field(&seen, "x-ok"), Some("1"));
    assert_eq!(field(&seen, "x-forwarded-for"), Some("127.0.0.1"));

    for (mode, want) in [("reject", 400), ("allow", 200)] {
        let up = Recorder::new();
        let proxy = Proxy::start(&config_to(up.backend.addr, "").replace(
            "address = \"127.0.0.1:0\"",
            &format!("address = \"127.0.0.1:0\"\nunderscores_in_headers = \"{mode}\""),
        ));
        assert_eq!(status_of(&proxy, head).await.status, want, "{mode}");
        if mode == "allow" {
            assert_eq!(
                field(&up.only(), "x_forwarded_for"),
                Some("6.6.6.6"),
                "{mode}"
            );
        } else {
            up.nothing();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_http1_minor_version_is_handled_as_http11() {
    let up = Recorder::new();
    let proxy = Proxy::to(up.backend.addr, "");
    let r = status_of(
        &proxy,
        "GET /v HTTP/1.2\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, "HTTP/1.1");
    assert!(up.only().starts_with("GET /v HTTP/1.1\r\n"));
    // Not HTTP/2 or 3 in an HTTP/1 request line.
    let r = status_of(&proxy, "GET /v HTTP/3.0\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_connections_close_after_max_requests() {
    let up = Recorder::new();
    let proxy = Proxy::to(
        up.backend.addr,
        "[limits]\nmax_requests_per_connection = 3\n",
    );
    let mut c = RawConn::connect(proxy.addr).await;
    for i in 1..=3 {
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        let r = c.response().await;
        assert_eq!(r.status, 200);
        let close = r.header("connection") == Some("close");
        assert_eq!(close, i == 3, "request {i}");
    }
    assert!(c.read_to_close().await.is_empty());
}

/// An upstream that never answers: it counts each request it receives
/// (`received`), then waits for the proxy to close the connection under it
/// (`cancelled`: the cancellation reached the upstream).
struct Silent {
    backend: Backend,
    received: Arc<tokio::sync::Semaphore>,
    cancelled: Arc<tokio::sync::Semaphore>,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Silent {
    fn new() -> Silent {
        let received = Arc::new(tokio::sync::Semaphore::new(0));
        let cancelled = Arc::new(tokio::sync::Semaphore::new(0));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, c, n) = (received.clone(), cancelled.clone(), count.clone());
        let backend = raw_backend(move |mut stream| {
            let (r, c, n) = (r.clone(), c.clone(), n.clone());
            async move {
                use tokio::io::AsyncReadExt;
                let mut buf = Vec::new();
                if read_request_head(&mut stream, &mut buf).await.is_none() {
                    return;
                }
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                r.add_permits(1);
                let mut b = [0u8; 1024];
                while let Ok(1..) = stream.read(&mut b).await {}
                c.add_permits(1);
            }
        });
        Silent {
            backend,
            received,
            cancelled,
            count,
        }
    }

    async fn wait(sem: &tokio::sync::Semaphore, n: u32) {
        tokio::time::timeout(HANG, sem.acquire_many(n))
            .await
            .expect("in time")
            .expect("open")
            .forget();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_http2_resets_get_goaway_enhance_your_calm() {
    let up = Silent::new();
    let limit = 50;
    let proxy = Proxy::to(
        up.backend.addr,
        &format!("[limits]\nhttp2_max_resets = {limit}\n"),
    );
    let mut c = H2Raw::connect(proxy.addr).await;
    // Batches of 10 streams, each reset only once the upstream has its
    // request (accepted and forwarded, past hyper's own guard against
    // streams reset before they are accepted).
    let batch = 10;
    let mut id = 1;
    let batches = limit / batch + 1;
    for _ in 0..batches {
        let mut out = Vec::new();
        let first = id;
        for _ in 0..batch {
            h2raw::headers(
                &mut out,
                id,
                &[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "a.test"),
                ],
                true,
            );
            id += 2;
        }
        c.send(&out).await;
        Silent::wait(&up.received, batch).await;
        let mut out = Vec::new();
        for s in (first..id).step_by(2) {
            h2raw::rst_stream(&mut out, s, 0x8);
        }
        c.send(&out).await;
    }
    // The reset past the limit ends the connection.
    let goaway = tokio::time::timeout(HANG, async {
        while let Some(f) = c.frame().await {
            if f.kind == h2raw::GOAWAY {
                return f.error_code();
            }
        }
        None
    })
    .await
    .expect("GOAWAY in time");
    assert_eq!(goaway, Some(0xb), "ENHANCE_YOUR_CALM");
    assert!(
        tokio::time::timeout(HANG, c.frame())
            .await
            .expect("closed")
            .is_none(),
        "closed after GOAWAY"
    );
    // Every reset request was cancelled upstream too (its connection
    // closed), and no more reached it than were sent before the limit.
    Silent::wait(&up.cancelled, batches * batch).await;
    let reached = up.count.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reached, (batches * batch) as usize);
    assert!(reached <= (limit + batch) as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_before_its_response_head_is_logged_499() {
    let up = Silent::new();
    let log = TempFile::new("access.log");
    let proxy = Proxy::start(&config_to(up.backend.addr, "").replace(
        "log_level = \"warn\"",
        &format!("log_level = \"error\"\naccess_log = \"{}\"", log.arg()),
    ));
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(b"GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    Silent::wait(&up.received, 1).await;
    drop(c);
    // The upstream sees the cancellation: its connection is closed.
    Silent::wait(&up.cancelled, 1).await;
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log.path).expect("log");
    let line = text
        .lines()
        .find(|l| l.contains("\"GET /slow HTTP/1.1\""))
        .unwrap_or_else(|| panic!("no line: {text}"));
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        (f[5], f[9], f[10]),
        ("499", "cancelled", "a.test"),
        "{line}"
    );
}

/// An upstream answering POSTs before it reads their bodies: `/discard`
/// 200, then reads the body to its end (nginx's `return 200`); `/auth` 401
/// without reading (hyper then closes the connection); `/big` 413 with
/// `Connection: close`; `/gated` 200, then reads the body only once the
/// test opens the gate. Anything else: 200 `ok`.
fn early_backend(gate: Arc<tokio::sync::Semaphore>) -> Backend {
    backend(move |req: Request<hyper::body::Incoming>| {
        let gate = gate.clone();
        async move {
            use http_body_util::BodyExt;
            match req.uri().path() {
                "/discard" => {
                    let body = req.into_body();
                    tokio::spawn(async move { body.collect().await.map(|_| ()) });
                    text(200, "early")
                }
                "/gated" => {
                    let body = req.into_body();
                    tokio::spawn(async move {
                        let _open = gate.acquire().await;
                        body.collect().await.map(|_| ())
                    });
                    text(200, "early")
                }
                "/auth" => text(401, "no"),
                "/big" => {
                    let mut r = text(413, "too big");
                    r.headers_mut()
                        .insert("connection", http::HeaderValue::from_static("close"));
                    r
                }
                _ => text(200, "ok"),
            }
        }
    })
}

/// curl's status and exit code for an upload of `file`.
fn curl_upload(url: &str, file: &TempFile, h2: bool) -> std::process::Command {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Expect:",
    ]);
    if h2 {
        cmd.arg("--http2-prior-knowledge");
    }
    cmd.args(["--data-binary", &format!("@{}", file.arg()), url]);
    cmd
}

const UPLOAD: usize = 50 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_upstreams_that_answer_early_get_their_answer() {
    let origin = early_backend(Arc::new(tokio::sync::Semaphore::new(0)));
    let proxy = Proxy::to(origin.addr, "");
    let file = TempFile::with("upload", &vec![b'x'; UPLOAD]);
    for (path, status) in [("/discard", "200"), ("/auth", "401"), ("/big", "413")] {
        // curl 7.88 (Debian 12) fails any HTTP/2 upload whose complete 2xx
        // answer comes before the upload's end, from nginx itself too (it
        // stops sending, then reports error 92 or waits); it stops on its
        // own after a 4xx. nghttp (below) covers the HTTP/2 2xx.
        for h2 in [false, status != "200"] {
            let out = run_command(curl_upload(&proxy.url(path), &file, h2)).await;
            assert_eq!(
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).as_ref()
                ),
                (Some(0), status),
                "curl {path} h2={h2}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // nghttp (HTTP/2, prior knowledge) prints the status it read.
        let mut cmd = std::process::Command::new("nghttp");
        cmd.args(["-v", "-d", file.arg(), &proxy.url(path)]);
        let out = run_command(cmd).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "nghttp {path}: {text}");
        assert!(
            text.contains(&format!(":status: {status}")),
            "nghttp {path}: {text}"
        );
        // wget (HTTP/1.1): `-S` prints the status it read; a 4xx exits 8
        // ("server issued an error response"), a 401 6 ("authentication").
        let mut cmd = std::process::Command::new("wget");
        cmd.args(["-S", "-O", "/dev/null", "--tries=1"]);
        cmd.args([&format!("--post-file={}", file.arg()), &proxy.url(path)]);
        let out = run_command(cmd).await;
        let err = String::from_utf8_lossy(&out.stderr);
        let want = match status {
            "200" => 0,
            "401" => 6,
            _ => 8,
        };
        assert_eq!(out.status.code(), Some(want), "wget {path}: {err}");
        assert!(
            err.contains(&format!("HTTP/1.1 {status}")),
            "wget {path}: {err}"
        );
    }
    // The connections stay usable.
    assert_eq!(get(proxy.addr, "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_do_not_wait_behind_an_upload_answered_early() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let origin = early_backend(gate.clone());
    let proxy = Proxy::to(origin.addr, "");
    let file = TempFile::with("upload", &vec![b'x'; UPLOAD]);
    for h2 in [false, true] {
        let cmd = if h2 {
            let mut cmd = std::process::Command::new("nghttp");
            cmd.args(["-d", file.arg(), "-s", &proxy.url("/gated")]);
            cmd
        } else {
            curl_upload(&proxy.url("/gated"), &file, false)
        };
        let upload = tokio::spawn(run_command(cmd));
        // The upload is answered, and stuck behind the gate: the upstream
        // reads nothing of it. Another client's requests are served.
        for _ in 0..3 {
            let (status, _, body) = get(proxy.addr, "/").await;
            assert_eq!((status, body.as_ref()), (200, &b"ok"[..]));
        }
        assert!(!upload.is_finished(), "the upload waits for the gate");
        gate.add_permits(1);
        let out = upload.await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "h2={h2}: {stdout}");
        if !h2 {
            assert_eq!(stdout, "200");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_go_away_gracefully_after_max_requests() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::to(origin.addr, "[limits]\nmax_requests_per_connection = 10\n");
    // A client that honours GOAWAY: a new connection once the old one
    // says it takes no more.
    let mut sender: Option<hyper::client::conn::http2::SendRequest<Body>> = None;
    let mut connections = 0;
    for i in 0..25 {
        let usable = match &mut sender {
            Some(s) => !s.is_closed() && s.ready().await.is_ok(),
            None => false,
        };
        let s = match &mut sender {
            Some(s) if usable => s,
            _ => {
                let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
                let (s, conn) = hyper::client::conn::http2::handshake(
                    hyper_util::rt::TokioExecutor::new(),
                    hyper_util::rt::TokioIo::new(tcp),
                )
                .await
                .expect("h2c");
                tokio::spawn(conn);
                connections += 1;
                sender.insert(s)
            }
        };
        let req = Request::get("http://a.test/").body(empty()).unwrap();
        let resp = tokio::time::timeout(HANG, s.send_request(req))
            .await
            .expect("no hang")
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(resp.status(), 200, "request {i}");
        if i % 10 == 9 {
            // The 10th stream's connection is closing: it finishes it,
            // then goes.
            use http_body_util::BodyExt;
            resp.into_body().collect().await.expect("body");
            let s = sender.take().unwrap();
            tokio::time::timeout(HANG, async {
                while !s.is_closed() {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("closed after GOAWAY");
        }
    }
    assert_eq!(connections, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_benchmark_clients_see_no_failure_at_max_requests() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::to(origin.addr, "[limits]\nmax_requests_per_connection = 10\n");
    let mut cmd = std::process::Command::new("h2load");
    cmd.args(["--h1", "-n", "2000", "-c", "4", &proxy.url("/")]);
    let out = run_command(cmd).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2000 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    let mut cmd = std::process::Command::new("wrk");
    cmd.args(["-t1", "-c4", "-d1s", &proxy.url("/")]);
    let out = run_command(cmd).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" requests in "), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    // curl, several requests on one connection.
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-w", "%{http_code}\n"]);
    for _ in 0..25 {
        cmd.args(["-o", "/dev/null", &proxy.url("/")]);
    }
    let out = run_command(cmd).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200\n".repeat(25));
}

/// How many idle connections a test may open here: two files each in this
/// process (client and proxy side), within the open-files limit the proxy
/// raised at start.
fn idle_connections(want: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    want.min((soft.saturating_sub(300) / 2) as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_limit_make_room_for_a_new_client() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::to(origin.addr, "");
    let n = idle_connections(2000);
    drop(proxy);
    // One thread: the longest-idle connection is the one evicted (each
    // thread picks among its own first). Client timeouts far past the
    // test's: only eviction can make room.
    let proxy = Proxy::start(
        &config_to(
            origin.addr,
            &format!(
                "[limits]\nmax_connections = {n}\n\
             [timeouts]\nclient_header = \"10m\"\nclient_idle = \"10m\"\n"
            ),
        )
        .replace("threads = 2", "threads = 1"),
    );
    // One client takes every place: the first with a finished request
    // (kept alive), the rest connected and silent.
    let mut first = RawConn::connect(proxy.addr).await;
    first.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(first.response().await.status, 200);
    let mut idle = Vec::with_capacity(n);
    for _ in 1..n {
        idle.push(RawConn::connect(proxy.addr).await);
    }
    // A new client is served: the longest-idle connections make room.
    for _ in 0..3 {
        let (status, _, body) = get(proxy.addr, "/").await;
        assert_eq!((status, body.as_ref()), (200, &b"ok"[..]));
    }
    assert!(
        first.read_to_close().await.is_empty(),
        "the longest-idle connection was closed"
    );
}

/// A connection from `ip` (any port) to `addr`.
async fn connect_from(ip: &str, addr: SocketAddr) -> RawConn {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let stream = s.connect(addr).await.expect("connect");
    RawConn::from(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_per_ip_are_refused() {
    let origin = backend(|_| async { text(200, "ok") });
    let proxy = Proxy::start(&config_to(origin.addr, "").replace(
        "address = \"127.0.0.1:0\"",
        "address = \"127.0.0.1:0\"\nmax_connections_per_ip = 3",
    ));
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.1", proxy.addr).await;
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(c.response().await.status, 200);
        held.push(c);
    }
    // The fourth from the same address is closed unanswered.
    let mut fourth = connect_from("127.0.0.1", proxy.addr).await;
    let _ = fourth
        .stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert!(fourth.read_to_close().await.is_empty(), "refused");
    // Another address is served.
    let mut other = connect_from("127.0.0.2", proxy.addr).await;
    other.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(other.response().await.status, 200);
    // One of the three closes: the address has a place again.
    drop(held.pop());
    let again = tokio::time::timeout(HANG, async {
        loop {
            let mut c = connect_from("127.0.0.1", proxy.addr).await;
            let _ = c
                .stream
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .await;
            let got = c.read_to_close_or_response().await;
            if let Some(r) = got {
                return r.status;
            }
        }
    })
    .await
    .expect("a place again");
    assert_eq!(again, 200);
}
