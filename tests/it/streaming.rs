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
