//! `tidegate check`: a valid file exits 0; a broken one exits 2 with one
//! line per problem naming the file, the line, the field and the reason,
//! every problem of the file at once. The shipped example is valid and
//! shows every option.

use std::process::{Command, Output};

use crate::common::TempFile;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tidegate.toml");

fn check(path: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["check", "--config", path])
        .output()
        .expect("run tidegate check")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A minimal valid file, with `extra` appended (tables only).
fn valid(extra: &str) -> String {
    format!(
        r#"
[[listeners]]
address = "127.0.0.1:8080"

[[routes]]
upstream = "app"

[upstreams.app]
servers = ["http://127.0.0.1:9000"]
{extra}
"#
    )
}

/// Writes `toml`, checks it, and expects exit 2 with one line on stderr
/// that names the file and the line of the first line of `toml` holding
/// `at`, and contains every one of `expect`.
fn rejects(toml: &str, at: &str, expect: &[&str]) {
    let line = toml
        .lines()
        .position(|l| l.contains(at))
        .unwrap_or_else(|| panic!("{at:?} is not in the file"))
        + 1;
    let file = TempFile::with("check.toml", toml.as_bytes());
    let out = check(file.arg());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(
        err.starts_with(&format!("tidegate: {}:{line}: ", file.arg())),
        "error does not lead with the file and line {line}: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for e in expect {
        assert!(err.contains(e), "{e:?} missing from: {err}");
    }
}

#[test]
fn valid_file_passes() {
    let file = TempFile::with("check.toml", valid("").as_bytes());
    let out = check(file.arg());
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("valid"), "stdout: {stdout}");
    assert!(stderr(&out).is_empty(), "stderr: {}", stderr(&out));
}

#[test]
fn unknown_field_is_rejected() {
    rejects(
        &valid("[server]\nthreads = 1\nworkers = 4\n"),
        "workers",
        &["server.workers: unknown field `workers`"],
    );
    // In an array-of-tables entry too.
    rejects(
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\nport = 1\n",
        "port",
        &["listeners[0].port: unknown field `port`"],
    );
}

#[test]
fn bad_cpu_affinity_is_rejected() {
    rejects(
        &valid("[server]\ncpu_affinity = \"all\"\n"),
        "cpu_affinity",
        &["server.cpu_affinity: unknown variant `all`, expected `off` or `auto`"],
    );
}

#[test]
fn bad_log_format_is_rejected() {
    rejects(
        &valid("[server]\nlog_format = \"xml\"\n"),
        "log_format",
        &["server.log_format: unknown variant `xml`, expected `text` or `json`"],
    );
}

#[test]
fn bad_listen_address_is_rejected() {
    rejects(
        &valid("").replace("127.0.0.1:8080", "localhost:http"),
        "localhost:http",
        &["listeners[0].address", "`localhost:http`", "not an IP:port"],
    );
}

#[test]
fn route_to_unknown_upstream_group_is_rejected() {
    rejects(
        &valid("[[routes]]\npath_prefix = \"/x\"\nupstream = \"nope\"\n"),
        "\"nope\"",
        &["routes[1].upstream", "no upstream group named `nope`"],
    );
}

#[test]
fn bad_duration_is_rejected() {
    rejects(
        &valid("[timeouts]\nclient_idle = \"5 parsecs\"\n"),
        "parsecs",
        &["timeouts.client_idle", "`5 parsecs`", "not a duration"],
    );
    rejects(
        &valid("[timeouts]\nupstream_connect = \"0s\"\n"),
        "0s",
        &["timeouts.upstream_connect", "more than zero"],
    );
}

#[test]
fn unknown_upstream_scheme_is_rejected() {
    rejects(
        &valid("").replace("http://127.0.0.1:9000", "ftp://127.0.0.1:21"),
        "ftp://",
        &[
            "upstreams.app.servers[0]",
            "ftp://127.0.0.1:21",
            "only http:// and https://",
        ],
    );
}

#[test]
fn empty_server_list_is_rejected() {
    rejects(
        &valid("").replace("[\"http://127.0.0.1:9000\"]", "[]"),
        "servers",
        &["upstreams.app.servers", "at least one server"],
    );
}

#[test]
fn toml_syntax_error_is_rejected() {
    rejects(
        "[[listeners]\naddress = \"127.0.0.1:8080\"\n",
        "[[listeners]",
        &["invalid table header"],
    );
    rejects(
        &valid("[limits]\nmax_connections = \n"),
        "max_connections",
        &["invalid string"],
    );
}

#[test]
fn every_problem_is_reported_each_on_its_line() {
    let toml = valid(
        "[server]\nthreads = 5000\n[[listeners]]\naddress = \"nowhere\"\n\
         [upstreams.db]\nservers = [{ address = \"127.0.0.1:5432\", weight = 0 }]\n\
         retry = { attempts = 99 }\n",
    );
    let file = TempFile::with("check.toml", toml.as_bytes());
    let out = check(file.arg());
    assert_eq!(out.status.code(), Some(2));
    let line = |needle: &str| toml.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let f = file.arg();
    let want = [
        format!(
            "{f}:{}: listeners[1].address: `nowhere` is not",
            line("nowhere")
        ),
        format!(
            "{f}:{}: upstreams.db.servers[0].weight: 0 is outside",
            line("weight")
        ),
        format!(
            "{f}:{}: upstreams.db.retry.attempts: 99 is outside",
            line("attempts")
        ),
        format!(
            "{f}:{}: server.threads: 5000 is more than 1024",
            line("5000")
        ),
    ];
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), want.len(), "{err}");
    for (got, want) in lines.iter().zip(&want) {
        assert!(
            got.starts_with(&format!("tidegate: {want}")),
            "{got}\nwanted: {want}"
        );
    }
}

#[test]
fn unreadable_certificates_are_found_by_check() {
    let toml = valid(
        "[upstreams.secure]\nservers = [\"https://127.0.0.1:9443\"]\n\
         [upstreams.secure.tls]\nca_file = \"/nonexistent/ca.pem\"\n",
    );
    rejects(
        &toml,
        "ca_file",
        &["upstreams.secure.tls.ca_file: `/nonexistent/ca.pem`: cannot read"],
    );
}

#[test]
fn missing_file_is_rejected() {
    let file = TempFile::new("never-written.toml");
    let out = check(file.arg());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(file.arg()), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn example_file_passes_check() {
    let out = check(EXAMPLE);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}

#[test]
fn example_file_sets_every_option() {
    let text = std::fs::read_to_string(EXAMPLE).expect("example file");
    let set: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    for table in [
        "[server]",
        "[[listeners]]",
        "[[routes]]",
        "[upstreams.",
        "[timeouts]",
        "[limits]",
        "[dns]",
        "[admin]",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(table)),
            "{table} missing"
        );
    }
    for key in [
        "name",
        "token",
        "request_id",
        "threads",
        "cpu_affinity",
        "access_log",
        "log_level",
        "log_format",
        "shutdown_grace",
        "address",
        "host",
        "path_prefix",
        "upstream",
        "max_body_bytes",
        "upstream_host",
        "path",
        "path_regex",
        "methods",
        "headers",
        "rewrite",
        "strip_prefix",
        "request_headers",
        "response_headers",
        "timeouts",
        "redirect",
        "respond",
        "servers",
        "balance",
        "hash_key",
        "interval",
        "expect",
        "healthy_threshold",
        "unhealthy_threshold",
        "max_pending",
        "attempts",
        "budget_percent",
        "min_per_second",
        "consecutive_failures",
        "base_ejection",
        "max_ejection",
        "max_ejected_percent",
        "client_header",
        "client_idle",
        "upstream_connect",
        "upstream_response_head",
        "upstream_idle",
        "tunnel_idle",
        "tls_handshake",
        "http2",
        "max_concurrent_streams",
        "max_connections",
        "max_request_head_bytes",
        "upstream_idle_per_server",
        "resolvers",
        "min_refresh",
        "max_refresh",
    ] {
        assert!(set.contains(&key), "example does not set `{key}`");
    }
    // And it means what it says.
    let c = tidegate::Config::from_file(std::path::Path::new(EXAMPLE)).expect("valid");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.routes.len(), 6);
    assert_eq!(c.upstreams.len(), 2);
    assert_eq!(c.access_log, tidegate::config::AccessLogTarget::Stdout);
    assert!(c
        .routes
        .iter()
        .any(|r| r.upstream_host == tidegate::config::UpstreamHost::Server));
    assert!(c.routes[0].request_id.is_some(), "a route's own request_id");
}

#[test]
fn duplicate_and_overlapping_listeners_are_rejected() {
    // The same address twice, and a wildcard that covers another: either
    // would split the port's connections between two sockets.
    rejects(
        &valid("[[listeners]]\naddress = \"127.0.0.1:8080\" # again\n"),
        "# again",
        &["listeners[1].address: 127.0.0.1:8080 overlaps listeners[0].address (127.0.0.1:8080)"],
    );
    rejects(
        &valid("[[listeners]]\naddress = \"0.0.0.0:8080\"\n"),
        "0.0.0.0:8080",
        &["listeners[1].address: 0.0.0.0:8080 overlaps listeners[0].address (127.0.0.1:8080)"],
    );
    rejects(
        &valid("[[listeners]]\naddress = \"[::]:8080\"\n"),
        "[::]:8080",
        &["listeners[1].address", "overlaps listeners[0].address"],
    );
    rejects(
        &valid("[admin]\naddress = \"0.0.0.0:8080\"\n"),
        "0.0.0.0:8080",
        &["admin.address: 0.0.0.0:8080 overlaps a proxy listener's address (127.0.0.1:8080)"],
    );
    // Other ports, or port 0 (a free port each), are fine.
    for other in ["127.0.0.1:8081", "127.0.0.2:0"] {
        let file = TempFile::with(
            "check.toml",
            valid(&format!("[[listeners]]\naddress = \"{other}\"\n")).as_bytes(),
        );
        let out = check(file.arg());
        assert!(out.status.success(), "{other}: {}", stderr(&out));
    }
}

#[test]
fn an_access_log_that_cannot_be_written_is_found_by_check() {
    rejects(
        &valid("[server]\naccess_log = \"/nonexistent-tidegate-dir/access.log\"\n"),
        "access_log",
        &[
            "server.access_log: cannot create /nonexistent-tidegate-dir/access.log",
            "/nonexistent-tidegate-dir does not exist",
        ],
    );
    // A relative path is relative to the config file's folder, and named
    // so: not the working directory's.
    let toml = valid("[server]\naccess_log = \"no-such-folder/access.log\"\n");
    let file = TempFile::with("check.toml", toml.as_bytes());
    let folder = file
        .path
        .parent()
        .expect("temp folder")
        .display()
        .to_string();
    let out = check(file.arg());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{folder}/no-such-folder does not exist")),
        "{err}"
    );
}

#[test]
fn unreadable_listener_certificates_and_keys_name_their_field() {
    let tls = |cert: &str, key: &str| {
        valid(&format!(
            "[[listeners]]\naddress = \"127.0.0.1:8443\"\n\
             [[listeners.tls.certificates]]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        ))
    };
    rejects(
        &tls("/nonexistent/cert.pem", "/nonexistent/key.pem"),
        "cert = \"/nonexistent/cert.pem\"",
        &["listeners[1].tls.certificates[0].cert: `/nonexistent/cert.pem`: cannot read"],
    );
    let leaf = crate::common::pki::Leaf::self_signed(&["localhost"]);
    rejects(
        &tls(leaf.cert_file.arg(), "/nonexistent/key.pem"),
        "key = \"/nonexistent/key.pem\"",
        &["listeners[1].tls.certificates[0].key: `/nonexistent/key.pem`"],
    );
}
