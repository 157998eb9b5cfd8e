//! The disk tier's thread: it scans the folder once (between other
//! work: writes come first), then writes entries and deletes the files
//! that left the index, in the order asked.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use bytes::Bytes;

use super::format::{self, PREFIX};
use super::{matches, Job, Msg, OnDisk, Shared};

/// Files checked between two looks at the channel.
const FILES_PER_STEP: usize = 32;

pub(super) fn run(s: &Shared, rx: &Receiver<Msg>) {
    let mut scan = Some(Scan::new(&s.root));
    loop {
        let msg = match scan {
            Some(_) => match rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            },
        };
        match msg {
            Some(Msg::Stop) => return,
            Some(Msg::Write(job)) => {
                s.queued.fetch_sub(1, Ordering::AcqRel);
                write(s, *job);
            }
            Some(Msg::Delete(file)) => remove(&file),
            Some(Msg::Forget(key)) => {
                if let Some(scan) = &mut scan {
                    scan.forgotten.insert(key);
                }
            }
            Some(Msg::Purge(url, prefix)) => {
                if let Some(scan) = &mut scan {
                    scan.purged.push((url, prefix));
                }
            }
            None => {
                if let Some(sc) = &mut scan {
                    if !sc.step(s) {
                        s.scanning.store(false, Ordering::SeqCst);
                        s.index.run_pending_tasks();
                        tracing::info!(
                            cache = %s.cache,
                            files = sc.found,
                            dropped = sc.dropped,
                            bytes = s.index.weighted_size(),
                            "cache disk: folder scanned"
                        );
                        scan = None;
                    }
                }
            }
        }
    }
}

fn remove(file: &Path) {
    match std::fs::remove_file(file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %file.display(), "cache disk: cannot delete: {e}"),
    }
}

/// Writes `job`'s entry to a new file, which replaces the key's old one
/// in the index.
fn write(s: &Shared, job: Job) {
    // Removed since it was queued: it must not come back.
    if s.epoch.load(Ordering::SeqCst) != job.epoch {
        return;
    }
    let (head, bodies) = format::encode(&job.key, &job.entry);
    let size = head.len() as u64 + bodies.iter().map(|b| b.len() as u64).sum::<u64>();
    if size > s.size {
        return;
    }
    let seq = s.next_seq.fetch_add(1, Ordering::Relaxed);
    let file = s.file_for(&job.key, seq);
    let mut tmp = file.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        out.write_all(&head)?;
        for b in &bodies {
            out.write_all(b)?;
        }
        out.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, &file)
    })();
    if let Err(e) = written {
        remove(&tmp);
        if s.now_and_then() {
            tracing::warn!(cache = %s.cache, file = %file.display(), "cache disk: cannot write: {e}");
        }
        return;
    }
    s.index.insert(
        job.key.clone(),
        Arc::new(OnDisk {
            file,
            url: job.entry.url.clone(),
            seq,
            size,
        }),
    );
    // A removal between the check above and now: undone.
    if s.epoch.load(Ordering::SeqCst) != job.epoch {
        s.index.invalidate(&job.key);
    }
    s.index.run_pending_tasks();
}

/// The folder's scan so far.
struct Scan {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    /// Keys removed while scanning.
    forgotten: HashSet<Bytes>,
    /// Purges made while scanning.
    purged: Vec<(Arc<str>, bool)>,
    found: u64,
    dropped: u64,
}

impl Scan {
    fn new(root: &Path) -> Scan {
        Scan {
            dirs: vec![root.to_path_buf()],
            files: Vec::new(),
            forgotten: HashSet::new(),
            purged: Vec::new(),
            found: 0,
            dropped: 0,
        }
    }

    /// Checks some files, or lists a folder; `false`: done.
    fn step(&mut self, s: &Shared) -> bool {
        if !self.files.is_empty() {
            for _ in 0..FILES_PER_STEP {
                let Some(f) = self.files.pop() else { break };
                self.file(s, f);
            }
            s.index.run_pending_tasks();
            return true;
        }
        let Some(dir) = self.dirs.pop() else {
            return false;
        };
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    match e.file_type() {
                        Ok(t) if t.is_dir() => self.dirs.push(e.path()),
                        Ok(t) if t.is_file() => self.files.push(e.path()),
                        _ => {}
                    }
                }
            }
            Err(e) => {
                tracing::warn!(cache = %s.cache, dir = %dir.display(), "cache disk: cannot list: {e}")
            }
        }
        true
    }

    /// Indexes one file, or deletes it.
    fn file(&mut self, s: &Shared, path: PathBuf) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        // A write that a stop cut short.
        if name.ends_with(".tmp") {
            remove(&path);
            return;
        }
        // Not ours: left alone.
        let Some(seq) = seq_of(name) else { return };
        let (key, url, size) = match read_head(&path) {
            Ok(h) => h,
            Err(why) => {
                tracing::warn!(
                    cache = %s.cache,
                    file = %path.display(),
                    "cache disk: corrupt file dropped ({why})"
                );
                self.dropped += 1;
                remove(&path);
                return;
            }
        };
        let removed =
            self.forgotten.contains(&key) || self.purged.iter().any(|(u, p)| matches(&url, u, *p));
        let known = s.index.get(&key).map(|f| f.seq);
        // This thread wrote it after the scan began: indexed already.
        if known == Some(seq) {
            return;
        }
        if removed || known.is_some_and(|k| k > seq) {
            remove(&path);
            return;
        }
        self.found += 1;
        s.index.insert(
            key,
            Arc::new(OnDisk {
                file: path,
                url,
                seq,
                size,
            }),
        );
    }
}

/// The sequence number in a file's name (`<hash>-<seq>`, hex).
fn seq_of(name: &str) -> Option<u64> {
    let (hash, seq) = name.split_once('-')?;
    let hex = |t: &str| t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(hash) && hex(seq))
        .then(|| u64::from_str_radix(seq, 16).ok())
        .flatten()
}

/// A file's key, URL and size, from its prefix and head.
fn read_head(path: &Path) -> Result<(Bytes, Arc<str>, u64), String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut prefix = [0; PREFIX];
    f.read_exact(&mut prefix)
        .map_err(|_| "shorter than its prefix".to_string())?;
    let p = format::prefix(&prefix, len)?;
    let mut head = vec![0; p.head_len as usize];
    f.read_exact(&mut head)
        .map_err(|_| "short head".to_string())?;
    let (key, url) = format::head(&p, &head)?;
    Ok((key, url, len))
}

#[cfg(test)]
mod tests {
    use super::seq_of;

    #[test]
    fn only_our_names_have_a_sequence_number() {
        assert_eq!(seq_of("00112233445566ff-0000000000000010"), Some(16));
        for other in [
            "x",
            "0011-22",
            "00112233445566ff-000000000000001g",
            ".tidegate-probe-1",
        ] {
            assert_eq!(seq_of(other), None, "{other}");
        }
    }
}
