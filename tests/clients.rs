//! Real clients through the proxy: what users see with curl and wget.

mod common;

use std::process::{Command, Output};

use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;

const MIB: u64 = 1 << 20;

/// `/down/N`: N bytes of stream 7 with a length. `/up`: `len crc` of the
/// request body. Anything else: `hello from PATH`.
fn origin() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        if let Some(n) = path.strip_prefix("/down/") {
            let n: u64 = n.parse().expect("length");
            let mut r = Response::new(stream_body(7, n, 64 * 1024));
            r.headers_mut()
                .insert("content-length", http::HeaderValue::from(n));
            return r;
        }
        if path == "/up" {
            let mut body = req.into_body();
            let mut len = 0u64;
            let mut crc = crc32fast::Hasher::new();
            while let Some(frame) = body.frame().await {
                if let Some(d) = frame.expect("upload frame").data_ref() {
                    len += d.len() as u64;
                    crc.update(d);
                }
            }
            return text(200, &format!("{len} {:08x}", crc.finalize()));
        }
        text(200, &format!("hello from {path}"))
    })
}

/// curl, quiet but with errors, failing on HTTP errors, never via a proxy
/// from the environment, and bounded in time.
fn curl() -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail", "--noproxy", "*", "--max-time", "60"]);
    c
}

fn wget() -> Command {
    let mut c = Command::new("wget");
    c.args(["-q", "--no-proxy", "--tries=1", "--timeout=60"]);
    c
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks that `file` holds exactly the first `n` bytes of stream 7.
fn check_download(file: &TempFile, n: u64) {
    let got = std::fs::read(&file.path).expect("downloaded file");
    assert_eq!(got.len() as u64, n, "downloaded length");
    let mut v = Verifier::new(7);
    v.feed(&got);
    assert_eq!(v.crc.finalize(), stream_crc(7, n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_downloads_20_mib_byte_for_byte() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let n = 20 * MIB;
    let file = TempFile::new("curl-down");
    let mut cmd = curl();
    cmd.args(["-o", file.arg(), &proxy.url(&format!("/down/{n}"))]);
    ok(&run_command(cmd).await);
    check_download(&file, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget_downloads_20_mib_byte_for_byte() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let n = 20 * MIB;
    let file = TempFile::new("wget-down");
    let mut cmd = wget();
    cmd.args(["-O", file.arg(), &proxy.url(&format!("/down/{n}"))]);
    ok(&run_command(cmd).await);
    check_download(&file, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_5_mib_with_expect_100_continue() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let n = 5 * MIB;
    let file = TempFile::with("curl-up", &Stream::new(13).chunk(n as usize));
    let mut cmd = curl();
    cmd.args([
        "-v",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.arg()),
        &proxy.url("/up"),
    ]);
    let out = run_command(cmd).await;
    let body = ok(&out);
    assert_eq!(body, format!("{n} {:08x}", stream_crc(13, n)));
    // curl asked to go ahead, and the proxy said so (rather than curl
    // giving up waiting and sending anyway).
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(
        trace.contains("> Expect: 100-continue"),
        "curl did not send Expect:\n{trace}"
    );
    assert!(
        trace.contains("< HTTP/1.1 100 Continue"),
        "no 100 Continue from the proxy:\n{trace}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_chunked() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let n = 3 * MIB + 17;
    let file = TempFile::with("curl-up-chunked", &Stream::new(14).chunk(n as usize));
    let mut cmd = curl();
    cmd.args([
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.arg()),
        &proxy.url("/up"),
    ]);
    let body = ok(&run_command(cmd).await);
    assert_eq!(body, format!("{n} {:08x}", stream_crc(14, n)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_head_shows_the_length_and_no_body() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut cmd = curl();
    cmd.args(["-I", &proxy.url("/down/12345")]);
    let out = ok(&run_command(cmd).await);
    let mut lines = out.lines();
    let status = lines.next().expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{out}");
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("content-length"), Some("12345"), "{out}");
    assert_eq!(get("via"), Some("1.1 tidegate"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reuses_one_connection_for_two_urls() {
    let origin = origin();
    let proxy = Proxy::to(origin.addr, "");
    let mut cmd = curl();
    cmd.args([
        "-w",
        "\n%{http_code} connects=%{num_connects}\n",
        &proxy.url("/first"),
        &proxy.url("/second"),
    ]);
    let out = ok(&run_command(cmd).await);
    assert_eq!(
        out, "hello from /first\n200 connects=1\nhello from /second\n200 connects=0\n",
        "the second URL should reuse the first connection"
    );
}
