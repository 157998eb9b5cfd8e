//! Which of the instances sharing a storage folder orders certificates:
//! the one whose name is in its `lock` file. The holder rewrites the file
//! (its heartbeat) every third of `lock_timeout`; a file older than
//! `lock_timeout` is a holder gone, and the next instance to look takes
//! its place. The file's modification time is the heartbeat, so this
//! works wherever the folder is shared, a network file system included
//! (where `flock` may not).
//!
//! Two instances that find a stale lock at the same moment may both take
//! it; each reads the file back at its next heartbeat, and the one whose
//! name is not there stops. Until then both may order the same name,
//! which the CA allows (and which leaves one valid certificate on disk).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub(super) struct Lock {
    path: PathBuf,
    /// This instance: host, process and a random number.
    owner: String,
    held: bool,
}

impl Lock {
    pub(super) fn new(storage: &Path) -> Lock {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "host".to_string(), |h| h.trim().to_string());
        Lock {
            path: storage.join("lock"),
            owner: format!(
                "{host} {} {:016x}",
                std::process::id(),
                crate::random::next_u64()
            ),
            held: false,
        }
    }

    /// Whether this instance holds the lock now: renews it if so, takes
    /// it if it is free or stale.
    pub(super) fn hold(&mut self, timeout: Duration) -> bool {
        let was = self.held;
        self.held = self.try_hold(timeout);
        if self.held != was {
            match self.held {
                true => tracing::info!(
                    "ACME: this instance orders the certificates (lock {})",
                    self.path.display()
                ),
                false => tracing::info!(
                    "ACME: another instance orders the certificates (lock {})",
                    self.path.display()
                ),
            }
        }
        self.held
    }

    fn try_hold(&self, timeout: Duration) -> bool {
        match std::fs::read_to_string(&self.path) {
            Ok(text) if text.trim() == self.owner => self.beat(),
            Ok(_) => {
                let age = std::fs::metadata(&self.path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                match age {
                    Some(age) if age > timeout => {
                        let _ = std::fs::remove_file(&self.path);
                        self.create()
                    }
                    _ => false,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.create(),
            Err(e) => {
                tracing::warn!("ACME: cannot read {}: {e}", self.path.display());
                false
            }
        }
    }

    /// Takes a free lock: only one instance creates the file.
    fn create(&self) -> bool {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| f.write_all(format!("{}\n", self.owner).as_bytes()));
        made.is_ok()
    }

    /// The heartbeat: the file rewritten (its time renewed).
    fn beat(&self) -> bool {
        match super::disk::write(&self.path, format!("{}\n", self.owner).as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("ACME: cannot renew the lock {}: {e}", self.path.display());
                false
            }
        }
    }

    /// Gives the lock up (on shutdown), so another instance need not wait
    /// for it to go stale.
    pub(super) fn release(&mut self) {
        if self.held && std::fs::read_to_string(&self.path).is_ok_and(|t| t.trim() == self.owner) {
            let _ = std::fs::remove_file(&self.path);
        }
        self.held = false;
    }
}

#[cfg(test)]
mod tests {
    use super::Lock;
    use std::time::{Duration, SystemTime};

    fn folder(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tidegate-lock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The lock file as another instance left it, last beating `age` ago.
    fn held_by_another(dir: &std::path::Path, age: Duration) {
        let path = dir.join("lock");
        std::fs::write(&path, "elsewhere 1 0000000000000001\n").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn a_live_holder_keeps_the_lock_and_a_stale_one_loses_it() {
        let dir = folder("stale");
        let timeout = Duration::from_secs(30);
        let mut me = Lock::new(&dir);
        // Another instance that beat 5 s ago holds it.
        held_by_another(&dir, Duration::from_secs(5));
        assert!(!me.hold(timeout));
        // One silent for longer than the timeout is gone: taken over.
        held_by_another(&dir, Duration::from_secs(31));
        assert!(me.hold(timeout));
        let text = std::fs::read_to_string(dir.join("lock")).unwrap();
        assert_eq!(text.trim(), me.owner);
        // The holder's heartbeat renews the file's time.
        let path = dir.join("lock");
        let old = SystemTime::now() - Duration::from_secs(20);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(me.hold(timeout));
        let beat = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(beat > old + Duration::from_secs(10), "{beat:?}");
        // Another instance sees a live lock; released, it is free.
        let mut other = Lock::new(&dir);
        assert!(!other.hold(timeout));
        me.release();
        assert!(!path.exists());
        assert!(other.hold(timeout));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
