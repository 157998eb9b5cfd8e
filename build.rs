//! Build script: the commit and the build profile, for `tidegate --version`
//! (`TIDEGATE_COMMIT`, `TIDEGATE_PROFILE`).
//!
//! It runs again only when the checked-out commit changes: cargo watches
//! `.git/HEAD` and the branch file it points to (or `packed-refs` when the
//! branch is packed), not the sources. Outside a git checkout (a crate
//! from `cargo package`, a tarball) the commit is "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TIDEGATE_BUILD");
    let commit = git(&["rev-parse", "--short=7", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TIDEGATE_COMMIT={commit}");
    // "debug" or "release" (cargo's base profile); TIDEGATE_BUILD adds how
    // the binary was built, e.g. "release, pgo" from bench/pgo.sh.
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    let profile = match std::env::var("TIDEGATE_BUILD") {
        Ok(how) if !how.is_empty() => format!("{profile}, {how}"),
        _ => profile,
    };
    println!("cargo:rustc-env=TIDEGATE_PROFILE={profile}");
    watch_head();
}

/// Tells cargo which git files name the commit. Only files that exist: a
/// missing one would make cargo run this script on every build.
fn watch_head() {
    let mut files = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        files.push(head);
    }
    // The branch HEAD points to (none when HEAD is detached), as a loose
    // file or in packed-refs; the common dir, for a worktree's branch.
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        for f in [branch.as_str(), "packed-refs"] {
            if let Some(path) = git(&["rev-parse", "--git-path", f]) {
                files.push(path);
            }
        }
    }
    for f in files {
        if Path::new(&f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
}

/// `git ARGS`' first output line, if git runs and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .next()?
        .trim()
        .to_owned();
    (!line.is_empty()).then_some(line)
}
