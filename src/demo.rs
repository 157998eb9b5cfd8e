//! A small origin server for the quickstart, the README's first command and
//! tests: it lets Tidegate do real proxying with nothing else installed.
//!
//! - `GET /` a greeting, with the request's forwarding headers echoed
//! - `GET /bytes/N` N bytes (a repeating pattern), streamed in 64 KiB chunks
//! - `POST /echo` the request body streamed straight back
//! - anything else: 404

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

const CHUNK: usize = 64 * 1024;

/// Serves the demo origin on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

/// Binds 127.0.0.1:0 and serves on a thread of its own; returns the address.
pub(crate) fn spawn() -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    crate::rt::on_own_thread("demo-origin", move || async move {
        if let Ok(l) = TcpListener::from_std(std_listener) {
            serve(l).await;
        }
    })?;
    Ok(addr)
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = if path == "/" {
        let h = req.headers();
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        text(
            StatusCode::OK,
            format!(
                "Hello from the Tidegate demo origin.\nx-forwarded-for: {}\nx-forwarded-host: {}\nvia: {}\n",
                get("x-forwarded-for"),
                get("x-forwarded-host"),
                get("via")
            ),
        )
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        match n.parse::<u64>() {
            Ok(n) => bytes(n),
            Err(_) => text(StatusCode::BAD_REQUEST, "usage: /bytes/N\n".into()),
        }
    } else if path == "/echo" {
        Response::new(req.into_body().boxed_unsync())
    } else {
        text(StatusCode::NOT_FOUND, "not found\n".into())
    };
    Ok(resp)
}

fn text(status: StatusCode, s: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(s))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

fn bytes(n: u64) -> Response<Body> {
    let pattern: Bytes = (0..CHUNK)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut r = Response::new(Pattern { left: n, pattern }.boxed_unsync());
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
    r
}

/// `left` bytes of `pattern`, repeated, always ready.
struct Pattern {
    left: u64,
    pattern: Bytes,
}

impl hyper::body::Body for Pattern {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let take = self.left.min(CHUNK as u64) as usize;
        self.left -= take as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.pattern.slice(..take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}
