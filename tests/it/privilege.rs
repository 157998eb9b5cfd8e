//! `[server] user`: started as root, the process binds, opens its files,
//! then runs as that user on every thread; `tidegate check` names an
//! unknown user with its file, line and field.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use rustix::process::Signal;

use crate::common::binary::Binary;
use crate::common::config::TestConfig;
use crate::common::*;

/// Each thread's `Uid:`, `Gid:` and `Groups:` lines.
fn thread_ids(pid: u32) -> Vec<(String, String, String, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .map(|t| {
            let t = t.expect("task entry").path();
            let status = std::fs::read_to_string(t.join("status")).expect("thread status");
            let line = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or_else(|| panic!("no {key} in {}", t.display()))
                    .trim()
                    .to_string()
            };
            (
                t.display().to_string(),
                line("Uid:"),
                line("Gid:"),
                line("Groups:"),
            )
        })
        .collect()
}

/// As root, `user = "nobody"`: every thread's real, effective, saved and
/// filesystem uid and gid are nobody's, no supplementary group is root's,
/// requests are still proxied, and the access log (in a folder only root
/// may enter, so opened before the switch) gets their lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_the_configured_user_on_every_thread() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("user database")
        .expect("a user named nobody");
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    assert_ne!(uid, 0);

    let origin = backend(|_req| async { text(200, "origin") });
    let dir = TempFile::new("root-only");
    std::fs::create_dir(&dir.path).unwrap();
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = dir.path.join("access.log");
    let config = TempFile::with(
        "user.toml",
        TestConfig::proxying(origin.addr)
            .threads(3)
            .log_level("info")
            .set("server.user", "nobody")
            .set("server.access_log", log.to_str().unwrap())
            .toml()
            .as_bytes(),
    );
    let mut tidegate = Binary::start(&["--config", config.arg()]);
    // Said during start, before "listening on".
    tidegate.line_with("running as user nobody").await;
    let addr = tidegate.listening().await;
    let (status, _, body) = get(addr, "/switched").await;
    assert_eq!((status, &body[..]), (200, &b"origin"[..]));

    let threads = thread_ids(tidegate.pid);
    assert!(threads.len() > 3, "workers and the rest: {threads:?}");
    let want_uid = format!("{uid}\t{uid}\t{uid}\t{uid}");
    let want_gid = format!("{gid}\t{gid}\t{gid}\t{gid}");
    for (task, u, g, groups) in &threads {
        assert_eq!(u, &want_uid, "{task}: Uid");
        assert_eq!(g, &want_gid, "{task}: Gid");
        assert!(
            groups.split_whitespace().all(|g| g != "0"),
            "{task}: Groups {groups}"
        );
    }

    tidegate.signal(Signal::TERM);
    let (exit, out) = tidegate.wait().await;
    assert!(exit.success(), "{exit:?}: {out}");
    let lines = std::fs::read_to_string(&log).expect("the access log");
    assert!(lines.contains("/switched"), "{lines}");
    std::fs::remove_dir_all(&dir.path).unwrap();
}

/// An unknown user (or group) is a config problem: file, line, field.
#[test]
fn check_names_an_unknown_user() {
    let toml = TestConfig::proxying("127.0.0.1:9")
        .set("server.user", "no-such-user-tidegate")
        .toml();
    let line = toml
        .lines()
        .position(|l| l.starts_with("user = "))
        .expect("the user line")
        + 1;
    let file = TempFile::with("user-check.toml", toml.as_bytes());
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["check", "--config", file.arg()])
        .output()
        .expect("run tidegate check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("tidegate: {}:{line}: server.user: no such user", file.arg())
    );
}
