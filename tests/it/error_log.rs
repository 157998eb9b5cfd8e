//! The process's own log (stderr): `log_format = "json"` or `--log-format
//! json` writes one JSON object per line, with the event's fields; text
//! stays the default (the other binary tests read it).

use crate::common::binary::Binary;
use crate::common::config::{Route, TestConfig};
use crate::common::*;

/// A failed request's warning as JSON: level, target, message and its
/// fields, the request ID among them (the listener's, or the route's own
/// where it has one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_fields_of_a_failed_request() {
    let (dead, _held) = dead_port();
    let file = TempFile::with(
        "json-log.toml",
        TestConfig::new()
            .group("dead", [dead])
            .route(Route::to("dead"))
            .route(
                Route::to("dead")
                    .path_prefix("/own/")
                    .set("request_id.header", "x-trace"),
            )
            .listener_set("request_id.header", "x-req")
            .toml()
            .as_bytes(),
    );
    let mut tg = Binary::start(&[
        "--config",
        file.arg(),
        "--log-format",
        "json",
        "--log-level",
        "info",
    ]);
    let addr = tg.listening().await;

    let (status, headers, _) = get(addr, "/x").await;
    assert_eq!(status, 502);
    let id = headers["x-req"].to_str().unwrap().to_string();
    let line = tg.line_with("\"status\":502").await;
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "WARN", "{line}");
    assert!(v["timestamp"].is_string(), "{line}");
    assert!(
        v["target"].as_str().unwrap().starts_with("tidegate"),
        "{line}"
    );
    let f = &v["fields"];
    assert_eq!(f["status"], 502, "{line}");
    assert_eq!(f["request_id"], id.as_str(), "{line}");
    assert!(
        f["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    assert!(
        f["message"].as_str().unwrap().contains(&dead.to_string()),
        "the message names the upstream: {line}"
    );

    // A route with its own request_id: its field, its ID in the log.
    let (status, headers, _) = get(addr, "/own/x").await;
    assert_eq!(status, 502);
    assert!(!headers.contains_key("x-req"), "{headers:?}");
    let own = headers["x-trace"].to_str().unwrap().to_string();
    let line = tg.line_with("\"status\":502").await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["fields"]["request_id"], own.as_str(), "{line}");

    tg.signal(rustix::process::Signal::TERM);
    let (status, log) = tg.wait().await;
    assert!(status.success(), "{log}");
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}
