//! What an installed Tidegate is used through besides its config: each
//! subcommand's options (only its own, each described), `--version` with
//! the commit and profile, the man pages, the shell completions, and the
//! systemd unit (`systemd-analyze verify`). pkg/test-deb.sh checks the
//! .deb built from them (in CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;

const BIN: &str = env!("CARGO_BIN_EXE_tidegate");
const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/systemd/tidegate.service"
);

fn tidegate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run tidegate")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// A folder under the temp dir, removed with what it holds on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let t = crate::common::TempFile::new(tag);
        std::fs::create_dir_all(&t.path).expect("create temp dir");
        TempDir(t.path.clone())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The options running the proxy takes, which no subcommand has.
const RUN_ONLY: &[&str] = &[
    "--upstream",
    "--access-log",
    "--log-level",
    "--log-format",
    "--threads",
    "--cpu-affinity",
    "--admin",
];

#[test]
fn each_subcommand_lists_only_its_own_options() {
    let own: &[(&str, &[&str])] = &[
        ("check", &["--config"]),
        ("reload", &["--pid-file", "--config"]),
        ("reopen", &["--pid-file"]),
        ("upgrade", &["--pid-file"]),
        ("demo", &["--listen"]),
        ("man", &["--dir"]),
    ];
    for (sub, options) in own {
        let help = stdout(&tidegate(&[sub, "--help"]));
        for o in *options {
            assert!(help.contains(o), "`{sub} --help` lacks {o}:\n{help}");
        }
        for o in RUN_ONLY {
            assert!(!help.contains(o), "`{sub} --help` lists {o}:\n{help}");
        }
        if !options.contains(&"--pid-file") {
            assert!(!help.contains("--pid-file"), "`{sub} --help`:\n{help}");
        }
    }
    // And they are refused there, not silently ignored.
    let out = tidegate(&["check", "--config", "x.toml", "--threads", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--threads'"));
    // Running the proxy lists them all.
    let help = stdout(&tidegate(&["--help"]));
    for o in RUN_ONLY
        .iter()
        .chain(&["--config", "--listen", "--pid-file"])
    {
        assert!(help.contains(o), "`--help` lacks {o}:\n{help}");
    }
}

#[test]
fn every_option_and_subcommand_is_described() {
    fn walk(cmd: &clap::Command, path: &str) {
        for arg in cmd.get_arguments() {
            assert!(
                arg.get_help().is_some(),
                "`{path}` option {} has no description",
                arg.get_id()
            );
        }
        for sub in cmd.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            assert!(sub.get_about().is_some(), "`{path}` has no description");
            walk(sub, &path);
        }
    }
    let mut cmd = tidegate::cli::Cli::command();
    cmd.build();
    cmd.clone().debug_assert();
    walk(&cmd, "tidegate");
}

#[test]
fn version_names_the_commit_and_the_profile() {
    let out = stdout(&tidegate(&["--version"]));
    let commit = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    assert_eq!(
        out.trim_end(),
        format!(
            "tidegate {} (commit {commit}, {profile})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// `man -l FILE` formats the page; groff's warnings (bad roff) go to
/// stderr, which must stay empty. Returns the page as text.
fn man_renders(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .expect("run man (apt-get install man-db)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.is_empty(),
        "man -l {page:?}: {err}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn man_pages_render_and_cover_every_subcommand() {
    let dir = TempDir::new("man");
    // `tidegate man`: the main page on stdout.
    let page = stdout(&tidegate(&["man"]));
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
    let main = dir.0.join("stdout.1");
    std::fs::write(&main, &page).unwrap();
    let text = man_renders(&main);
    for s in [
        "--config",
        "--listen",
        "--pid-file",
        "tidegate-check(1)",
        "tidegate-completions(1)",
    ] {
        assert!(text.contains(s), "{s} missing from the page:\n{text}");
    }
    // `--dir`: that page and one per subcommand.
    let out = tidegate(&["man", "--dir", dir.0.to_str().unwrap()]);
    stdout(&out);
    assert_eq!(
        std::fs::read_to_string(dir.0.join("tidegate.1")).unwrap(),
        page
    );
    let cmd = tidegate::cli::Cli::command();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let file = dir.0.join(format!("tidegate-{}.1", sub.get_name()));
        assert!(file.exists(), "no {file:?}");
        let text = man_renders(&file);
        for arg in sub.get_arguments().filter_map(|a| a.get_long()) {
            assert!(
                text.contains(&format!("--{arg}")),
                "--{arg} missing from {file:?}:\n{text}"
            );
        }
    }
}

#[test]
fn completions_load_in_bash_zsh_and_fish() {
    let dir = TempDir::new("completions");
    let script = |shell: &str| {
        let path = dir.0.join(shell);
        std::fs::write(&path, stdout(&tidegate(&["completions", shell]))).unwrap();
        path
    };
    // Each shell loads the script and then completes `tidegate ch` and
    // `tidegate check --c`.
    let bash = script("bash");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {0}; COMP_WORDS=(tidegate ch); COMP_CWORD=1; _tidegate tidegate ch tidegate; \
             echo \"${{COMPREPLY[@]}}\"; COMP_WORDS=(tidegate reload --); COMP_CWORD=2; \
             _tidegate tidegate -- reload; echo \"${{COMPREPLY[@]}}\"",
            bash.display()
        ))
        .output()
        .expect("run bash");
    let got = stdout(&out);
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some("check"), "bash: {got}");
    let reload = lines.next().unwrap_or_default();
    assert!(
        reload.contains("--pid-file") && reload.contains("--config"),
        "bash: {got}"
    );
    assert!(!reload.contains("--threads"), "bash: {got}");

    let fish = script("fish");
    let out = Command::new("fish")
        .arg("-c")
        .arg(format!(
            "source {}; complete -C 'tidegate ch'; complete -C 'tidegate reopen --'",
            fish.display()
        ))
        .output()
        .expect("run fish (apt-get install fish)");
    let got = stdout(&out);
    assert!(got.lines().any(|l| l.starts_with("check\t")), "fish: {got}");
    assert!(
        got.lines().any(|l| l.starts_with("--pid-file")),
        "fish: {got}"
    );
    assert!(!got.contains("--threads"), "fish: {got}");

    // zsh: the script parses and defines its function (zsh's completion
    // system needs a terminal to run one).
    let zsh = script("zsh");
    let out = Command::new("zsh")
        .args(["-f", "-c"])
        .arg(format!(
            "autoload -U compinit && compinit -u -D && source {} && whence -w _tidegate",
            zsh.display()
        ))
        .output()
        .expect("run zsh (apt-get install zsh)");
    let got = stdout(&out);
    assert!(got.contains("_tidegate: function"), "zsh: {got}");
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/usr/bin/tidegate reload --pid-file /run/tidegate/tidegate.pid",
        "User=tidegate",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from {UNIT}"
        );
    }
    // verify needs the ExecStart binary to exist: this build's, in a copy.
    let dir = TempDir::new("systemd");
    let copy = dir.0.join("tidegate.service");
    std::fs::write(&copy, unit.replace("/usr/bin/tidegate", BIN)).unwrap();
    // The man page it names is checked where it is installed (the .deb test).
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze (apt-get install systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.is_empty(),
        "systemd-analyze verify: {err}"
    );
}
