//! `[server] user`/`group`: bind as root, then serve as that user.
//!
//! Called by start once every listener and the admin listener are bound
//! and the access log is open, before the workers start: supplementary
//! groups (`initgroups`), then the group, then the user, for every thread
//! of the process. glibc's `setgid`/`setuid` (which nix calls) signal each
//! thread to make the same change, so the threads already started (the
//! log writer, the trace exporter, the allocator's) drop too; the raw
//! system calls would change only the calling thread.
//!
//! As nginx does, a process that is not root cannot switch users: it warns
//! and runs on as who it is (an upgrade's new process, started by a
//! process that has already dropped, is one).

use std::ffi::CString;

use nix::unistd::{geteuid, getgid, getuid, initgroups, setgid, setuid, Gid, Uid};

use super::StartError;
use crate::config::{Config, RunAs};

/// Switches to `config`'s `[server] user`, if it has one. A failure is a
/// problem of that field (start stops).
pub(super) fn drop_privileges(config: &Config) -> Result<(), StartError> {
    let Some(run_as) = &config.run_as else {
        return Ok(());
    };
    if !geteuid().is_root() {
        if getuid().as_raw() != run_as.uid || getgid().as_raw() != run_as.gid {
            tracing::warn!(
                "server.user `{}` makes sense only when started as root; ignored",
                run_as.user
            );
        }
        return Ok(());
    }
    switch(run_as).map_err(|reason| {
        StartError::Config(config.source.invalid(vec![("server.user".into(), reason)]))
    })?;
    tracing::info!(
        "running as user {} (uid {}, gid {})",
        run_as.user,
        run_as.uid,
        run_as.gid
    );
    Ok(())
}

/// Groups, group, user: in that order, as each step needs the privilege
/// that the next one gives up.
fn switch(run_as: &RunAs) -> Result<(), String> {
    let gid = Gid::from_raw(run_as.gid);
    let name = CString::new(run_as.user.as_str())
        .map_err(|_| format!("`{}` holds a NUL byte", run_as.user))?;
    initgroups(&name, gid).map_err(|e| format!("initgroups({}): {e}", run_as.user))?;
    setgid(gid).map_err(|e| format!("setgid({}): {e}", run_as.gid))?;
    setuid(Uid::from_raw(run_as.uid)).map_err(|e| format!("setuid({}): {e}", run_as.uid))?;
    Ok(())
}
