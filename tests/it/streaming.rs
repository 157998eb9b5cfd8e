//! Bodies stream through with every byte intact, in both directions, and
//! without being collected first.

use std::sync::{Arc, Mutex};

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

const GIB: u64 = 1 << 30;

/// Serves `/down/N` as N bytes of stream 7; `/up` answers `len crc` of the body.
fn data_backend() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        if let Some(n) = path.strip_prefix("/down/") {
            let n: u64 = n.parse().expect("length");
            let mut r = Response::new(stream_body(7, n, 256 * 1024));
            r.headers_mut()
                .insert("content-length", http::HeaderValue::from(n));
            return r;
        }
        let mut body = req.into_body();
        let mut len = 0u64;
        let mut crc = crc32fast::Hasher::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("upload frame");
            if let Some(d) = frame.data_ref() {
                len += d.len() as u64;
                crc.update(d);
            }
        }
        text(200, &format!("{len} {:08x}", crc.finalize()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_download_arrives_byte_for_byte() {
    let origin = data_backend();
    let proxy = Proxy::to(origin.addr, "");
    let req = Request::get(format!("/down/{GIB}"))
        .header("host", "t")
        .body(empty())
        .unwrap();
    let resp = send(proxy.addr, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut v = Verifier::new(7);
    tokio::time::timeout(HANG * 5, async {
        while let Some(f) = body.frame().await {
            if let Some(d) = f.expect("frame").data_ref() {
                v.feed(d);
            }
        }
    })
    .await
    .expect("download finishes");
    assert_eq!(v.len, GIB);
    assert_eq!(v.crc.finalize(), stream_crc(7, GIB));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarter_gib_upload_arrives_byte_for_byte() {
    let origin = data_backend();
    let proxy = Proxy::to(origin.addr, "");
    let n = 256u64 << 20;
    // Chunked (no length) and with Content-Length: both framings.
    for with_length in [false, true] {
        let mut req = Request::post("/up").header("host", "t");
        if with_length {
            req = req.header("content-length", n);
        }
        let req = req.body(stream_body(11, n, 100_000)).unwrap();
        let resp = tokio::time::timeout(HANG * 5, send(proxy.addr, req))
            .await
            .expect("no hang")
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            Bytes::from(format!("{n} {:08x}", stream_crc(11, n))),
            "with_length={with_length}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_bytes_arrive_before_upstream_finishes() {
    // The origin sends one chunk, then waits until the test has seen it
    // through the proxy. A proxy that buffered the body would never
    // deliver it, and the test would time out.
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let origin = backend(move |_req| {
        let release = release.clone();
        async move {
            let (mut tx, body) = BodyChannel::new();
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"first chunk;")).await;
                let rx = release.lock().unwrap().take().expect("once");
                let _ = rx.await;
                tx.send(Bytes::from_static(b"second chunk")).await;
            });
            Response::new(body)
        }
    });
    let proxy = Proxy::to(origin.addr, "");
    let req = Request::get("/").header("host", "t").body(empty()).unwrap();
    let resp = tokio::time::timeout(HANG, send(proxy.addr, req))
        .await
        .unwrap()
        .unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(HANG, body.frame())
        .await
        .expect("first chunk arrives while the origin still holds the rest")
        .unwrap()
        .unwrap();
    assert_eq!(first.data_ref().unwrap().as_ref(), b"first chunk;");
    release_tx.send(()).unwrap();
    let rest = tokio::time::timeout(HANG, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest.as_ref(), b"second chunk");
}

/// The vendored hyper (patch 16) queues a large body frame behind its
/// write buffer instead of copying it in; a small frame that comes while
/// part of a large one is still unwritten must be queued behind it, not
/// copied ahead of it. Through a proxy, frames are what the upstream's
/// reads return, so a socket meets this only by chance; here hyper's
/// server, set up as Tidegate's (`writev(false)`), writes into a 4 KiB
/// in-memory pipe, which stops each write exactly where it fills.
#[tokio::test]
async fn a_small_frame_after_a_partly_written_large_one_stays_behind_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(4096);
    let (mut tx, body) = BodyChannel::new();
    let body = Mutex::new(Some(body));
    let mut gen = Stream::new(9);
    let parts = [gen.chunk(20_000), gen.chunk(7), gen.chunk(30_000)];
    let total: usize = parts.iter().map(Bytes::len).sum();
    let svc = hyper::service::service_fn(move |_req| {
        let body = body.lock().unwrap().take().expect("one request");
        async move {
            let mut r = Response::new(body);
            r.headers_mut()
                .insert("content-length", http::HeaderValue::from(total));
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .writev(false)
        .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
    tokio::spawn(conn);
    let sent = parts.clone();
    tokio::spawn(async move {
        for p in sent {
            tx.send(p).await;
        }
    });
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    // Read in small steps, so that hyper's writes stop part way.
    let mut got = Vec::new();
    let mut step = [0u8; 1024];
    let body_at = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= i + 4 + total {
                break i + 4;
            }
        }
        let n = tokio::time::timeout(HANG, client.read(&mut step))
            .await
            .expect("hyper writes in time")
            .unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&step[..n]);
    };
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(
        got[body_at..] == parts.concat()[..],
        "the frames came out of order"
    );
}
