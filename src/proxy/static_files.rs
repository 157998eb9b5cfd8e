//! A `static` route's answer: the request path made a path under the
//! root ([`crate::files::path`]), the file found on the worker thread,
//! or on the blocking pool with `io = "pool"` (folder index, precompressed
//! sibling, symbolic links checked), the
//! answer made ([`crate::files::answer`]) and its body streamed
//! ([`FileBody`]). What no file answers goes to the route's upstream
//! group if it has one, else to its `fallback` file, else is a 404.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::file_body::{read_at, FileBody};
use super::response_body::ProxyBody;
use super::synthetic::{error, local_response};
use crate::config::compress::Coding;
use crate::config::static_files::{Io, StaticFiles, Symlinks};
use crate::files::path::{normalise, Refused, Relative};
use crate::files::{Answer, Part, Representation};
use crate::router::Route;

/// An answer read whole with the lookup (one step, on the worker or one
/// trip to the blocking pool) when its file parts are at most this long.
const SMALL: u64 = 64 * 1024;

/// The request fields the answer depends on.
const FIELDS: [header::HeaderName; 7] = [
    header::ACCEPT_ENCODING,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Siblings, in the server's preference (smallest first, usually).
const SIBLINGS: [(Coding, &str); 3] = [
    (Coding::Br, ".br"),
    (Coding::Zstd, ".zst"),
    (Coding::Gzip, ".gz"),
];

/// `parts` answered from `files`, the route's; `None`: no file, the
/// route's upstream group takes it.
pub(super) async fn serve(
    route: &Route,
    files: &Arc<StaticFiles>,
    parts: &http::request::Parts,
) -> Option<Response<ProxyBody>> {
    let proxy = files.upstream.is_some();
    let method = parts.method.clone();
    if method != Method::GET && method != Method::HEAD {
        if proxy {
            return None;
        }
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, false);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(r);
    }
    let asked = parts.uri.path();
    let rewritten = route.rewrite_path(asked);
    let rel = match normalise(rewritten.as_deref().unwrap_or(asked), files.dotfiles) {
        Ok(rel) => rel,
        // The application may know what such a path means.
        Err(_) if proxy => return None,
        Err(Refused::Bad) => return Some(error(StatusCode::BAD_REQUEST, false)),
        Err(Refused::Hidden) => return Some(error(StatusCode::NOT_FOUND, false)),
    };
    let found = match files.io {
        Io::Pool => {
            // What the blocking pool's thread needs, its own.
            let mut fields = HeaderMap::new();
            for name in FIELDS {
                for v in parts.headers.get_all(&name) {
                    fields.append(name.clone(), v.clone());
                }
            }
            let job = Job {
                files: files.clone(),
                rel,
                method,
                fields,
            };
            tokio::task::spawn_blocking(move || job.find()).await
        }
        // On the worker: the request's own fields, nothing copied.
        Io::Inline => Ok(Find {
            files,
            method: &method,
            fields: &parts.headers,
        }
        .run(&rel)),
    };
    let found = match found {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::warn!(path = asked, "static file: {e}");
            return Some(error(StatusCode::INTERNAL_SERVER_ERROR, false));
        }
        Err(e) => {
            tracing::warn!(path = asked, "static file: {e}");
            return Some(error(StatusCode::INTERNAL_SERVER_ERROR, false));
        }
    };
    let resp = match found {
        Found::File(file, answer) => {
            let Answer {
                status,
                headers,
                parts: body,
            } = answer;
            let body = match parts.method == Method::HEAD {
                true => Vec::new(),
                false => body,
            };
            let inline = files.io == Io::Inline;
            let body = FileBody::new(file, body, inline);
            let mut r = Response::new(ProxyBody::File(Box::new(body)));
            *r.status_mut() = status;
            *r.headers_mut() = headers;
            route.response_headers.apply(r.headers_mut());
            r
        }
        Found::Folder => {
            // As nginx: the folder's own URL ends in `/`, so that relative
            // links in its index resolve inside it. One leading `/`:
            // `//evil.example` must not become a protocol-relative
            // redirect to another host.
            let path = asked.trim_start_matches('/');
            let location = match parts.uri.query() {
                Some(q) => format!("/{path}/?{q}"),
                None => format!("/{path}/"),
            };
            local_response(
                StatusCode::MOVED_PERMANENTLY,
                Some(location),
                &HeaderMap::new(),
                Bytes::new(),
                route,
            )
        }
        Found::Missing if proxy => return None,
        Found::Missing => error(StatusCode::NOT_FOUND, false),
    };
    Some(resp)
}

/// A lookup sent to the blocking pool (`io = "pool"`).
struct Job {
    files: Arc<StaticFiles>,
    rel: Relative,
    method: Method,
    /// The request's [`FIELDS`].
    fields: HeaderMap,
}

impl Job {
    fn find(self) -> std::io::Result<Found> {
        Find {
            files: &self.files,
            method: &self.method,
            fields: &self.fields,
        }
        .run(&self.rel)
    }
}

/// What it found.
enum Found {
    /// The file (`None` when the answer's parts are all read already) and
    /// the answer.
    File(Option<Arc<std::fs::File>>, Answer),
    /// A folder asked for without its `/`.
    Folder,
    Missing,
}

/// What a lookup needs of the request.
struct Find<'a> {
    files: &'a StaticFiles,
    method: &'a Method,
    /// The request's fields (at least its [`FIELDS`]).
    fields: &'a HeaderMap,
}

impl Find<'_> {
    fn run(&self, rel: &Relative) -> std::io::Result<Found> {
        let found = self.lookup(rel)?;
        if let (Found::Missing, Some(fallback)) = (&found, &self.files.fallback) {
            // (Checked when the config was read.)
            if let Ok(rel) = normalise(fallback, self.files.dotfiles) {
                // A folder there is no file to answer with (and no
                // redirect to make for another path).
                return match self.lookup(&rel)? {
                    Found::Folder => Ok(Found::Missing),
                    found => Ok(found),
                };
            }
        }
        Ok(found)
    }

    fn lookup(&self, rel: &Relative) -> std::io::Result<Found> {
        let files = self.files;
        // (Relative to the root.)
        let mut path = PathBuf::from(OsStr::from_bytes(&rel.path));
        // Opened first, then looked at (as nginx does): one `stat` fewer
        // than looking first. (Non-blocking, so that a FIFO or a device
        // there cannot hold the thread; it is then refused as no file.)
        let Some(mut file) = open_found(files, &path)? else {
            return Ok(Found::Missing);
        };
        let mut meta = file.metadata()?;
        if meta.is_dir() {
            if !rel.slash {
                return Ok(Found::Folder);
            }
            let mut index = None;
            for i in &files.index {
                let p = path.join(i);
                if let Some(f) = open_found(files, &p)? {
                    let m = f.metadata()?;
                    if m.is_file() {
                        index = Some((p, f, m));
                        break;
                    }
                }
            }
            match index {
                Some((p, f, m)) => (path, file, meta) = (p, f, m),
                None => return Ok(Found::Missing),
            }
        } else if rel.slash {
            return Ok(Found::Missing);
        }
        if !meta.is_file() {
            // A device, a FIFO, a socket: never.
            return Ok(Found::Missing);
        }
        let content_type = crate::files::mime::content_type(path.as_os_str().as_bytes());
        let mut offered = Vec::new();
        // Siblings are looked for only when the client names codings (a
        // client that names none takes the file as it is: no `Vary`, as
        // nginx's `gzip_static`; three `stat`s fewer per request).
        let asks = self.fields.contains_key(http::header::ACCEPT_ENCODING);
        if files.precompressed && asks {
            for (coding, suffix) in SIBLINGS {
                let sibling = files.root.join(with_suffix(&path, suffix));
                if std::fs::metadata(sibling).is_ok_and(|m| m.is_file()) {
                    offered.push(coding);
                }
            }
        }
        let coding = crate::compress::negotiate(self.fields, &offered);
        if let Some((_, suffix)) = coding.and_then(|c| SIBLINGS.iter().find(|(s, _)| *s == c)) {
            let Some(sibling) = open_found(files, &with_suffix(&path, suffix))? else {
                return Ok(Found::Missing);
            };
            file = sibling;
            meta = file.metadata()?;
            if !meta.is_file() {
                return Ok(Found::Missing);
            }
        }
        let nanos = u128::try_from(meta.mtime()).unwrap_or(0) * 1_000_000_000
            + u128::try_from(meta.mtime_nsec()).unwrap_or(0);
        let rep = Representation {
            len: meta.len(),
            etag: crate::files::etag(meta.ino(), meta.len(), nanos, coding),
            modified: u64::try_from(meta.mtime()).unwrap_or(0),
            content_type,
            coding,
            vary: !offered.is_empty(),
        };
        // (Only a multipart answer, to a `Range` request, needs one.)
        let boundary = match self.fields.contains_key(http::header::RANGE) {
            true => format!("{:016x}", crate::random::next_u64()),
            false => String::new(),
        };
        let mut answer = crate::files::answer(
            self.method,
            self.fields,
            &rep,
            std::time::SystemTime::now(),
            &boundary,
        );
        if *self.method == Method::HEAD {
            answer.parts.clear();
        }
        let in_file: u64 = answer
            .parts
            .iter()
            .map(|p| match p {
                Part::File { len, .. } => *len,
                Part::Text(_) => 0,
            })
            .sum();
        if in_file == 0 {
            return Ok(Found::File(None, answer));
        }
        if in_file <= SMALL {
            for p in &mut answer.parts {
                if let Part::File { start, len } = *p {
                    *p = Part::Text(read_at(&file, start, len)?);
                }
            }
            return Ok(Found::File(None, answer));
        }
        Ok(Found::File(Some(Arc::new(file)), answer))
    }
}

/// `path` with `suffix` added to its file name (`a.js` → `a.js.br`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// [`open`], with what means "no file here" (`ENOENT`, `ENOTDIR`, a
/// loop of links, a name too long, a link out of the root) as `None`.
fn open_found(files: &StaticFiles, rel: &Path) -> std::io::Result<Option<std::fs::File>> {
    use rustix::io::Errno;
    match open(files, rel) {
        Ok(Some(f)) => Ok(Some(f)),
        Ok(None) => {
            tracing::debug!(path = %rel.display(), "static file: a symbolic link out of the root");
            Ok(None)
        }
        Err(e)
            if matches!(
                Errno::from_io_error(&e),
                Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::NAMETOOLONG)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Opens `rel` under the root (a file or a folder); `None` when
/// `symlinks = "inside"` and a symbolic link on the way leads out of the
/// root. The kernel checks that as it resolves (`openat2` with
/// `RESOLVE_BENEATH` on the root, see [`beneath`]); what it refuses (an
/// absolute link, even one back inside, or an old kernel without
/// `openat2`) is opened plainly and checked by [`inside`].
fn open(files: &StaticFiles, rel: &Path) -> std::io::Result<Option<std::fs::File>> {
    use rustix::fs::OFlags;
    // Non-blocking: a FIFO in a file's place must not hold the thread
    // until a writer comes (it is then refused, not being a file); reads
    // of a file ignore the flag. No controlling terminal from a device.
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let path = || files.root.join(rel);
    let plain = |path: &Path| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
            .open(path)
    };
    if files.symlinks != Symlinks::Inside {
        return plain(&path()).map(Some);
    }
    match beneath(&files.root, rel, flags) {
        Ok(fd) => return Ok(Some(std::fs::File::from(fd))),
        // No such file: no other way to open it either.
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
            return Err(e.into())
        }
        Err(_) => {}
    }
    let path = path();
    let file = plain(&path)?;
    Ok(inside(files, &file, &path).then_some(file))
}

/// A root opened (`O_PATH`), the folder it is (device and inode), and
/// when a `stat` of its path last found that folder.
struct OpenRoot {
    path: PathBuf,
    fd: std::os::fd::OwnedFd,
    id: (u64, u64),
    checked: std::time::Instant,
}

/// At most this many roots kept open per thread (the config's static
/// roots, and those of configs reloaded since).
const ROOTS: usize = 16;

/// How long a kept root is used without a `stat` of its path (as nginx's
/// `open_file_cache_valid`, which is 60 s by default): a root swapped on
/// deploy is followed within this time for files both releases have, at
/// once for a file only the new one has.
const ROOT_CHECKED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// This thread's open roots, the most recently opened last.
    static OPEN_ROOTS: std::cell::RefCell<Vec<OpenRoot>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Closes this thread's open roots (at a reload: a root the new config
/// no longer serves is not held open, say against an unmount).
pub(crate) fn forget_roots() {
    OPEN_ROOTS.with(|roots| roots.borrow_mut().clear());
}

/// Which folder `st` is: device and inode.
#[allow(clippy::unnecessary_cast)] // (u64 on 64-bit Linux, not everywhere)
fn folder(st: &rustix::fs::Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// `rel` opened beneath `root` with `openat2(RESOLVE_BENEATH)`. The root's
/// descriptor is kept per thread. It is used as it is for
/// [`ROOT_CHECKED_FOR`] after a `stat` of the root's path found the same
/// folder, then checked again; a file not found under it has the root
/// checked at once. So a root that is a link swapped on deploy, or a
/// folder made again in its place, is followed (one system call per
/// request, the `openat2`, where an open and a close of the root, or a
/// `stat` each time, made two or three).
fn beneath(
    root: &Path,
    rel: &Path,
    flags: rustix::fs::OFlags,
) -> rustix::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    // (The root itself: `.`, which `RESOLVE_BENEATH` allows.)
    let rel = match rel.as_os_str().is_empty() {
        true => Path::new("."),
        false => rel,
    };
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let open = |fd: &std::os::fd::OwnedFd| rustix::fs::openat2(fd, rel, flags, Mode::empty(), how);
    OPEN_ROOTS.with(|roots| {
        let mut roots = roots.borrow_mut();
        let now = std::time::Instant::now();
        // What the kept root answered without a check: a file not found.
        let mut missing = None;
        if let Some(r) = roots.iter().find(|r| r.path == root) {
            if now.saturating_duration_since(r.checked) < ROOT_CHECKED_FOR {
                match open(&r.fd) {
                    Err(e @ (Errno::NOENT | Errno::NOTDIR)) => missing = Some((e, r.id)),
                    done => return done,
                }
            }
        }
        let id = folder(&rustix::fs::stat(root)?);
        if let Some(r) = roots.iter_mut().find(|r| r.path == root && r.id == id) {
            r.checked = now;
            return match missing {
                // The same folder: not there (without asking twice).
                Some((e, seen)) if seen == id => Err(e),
                _ => open(&r.fd),
            };
        }
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // What was opened (the root may have been swapped since the
        // `stat`; the open found what the path names now).
        let opened = OpenRoot {
            path: root.to_path_buf(),
            id: folder(&rustix::fs::fstat(&fd)?),
            fd,
            checked: now,
        };
        let file = open(&opened.fd);
        roots.retain(|r| r.path != root);
        if roots.len() >= ROOTS {
            roots.remove(0);
        }
        roots.push(opened);
        file
    })
}

/// Whether the open `file` (at `path`) is inside the root, links
/// followed. The file's real path is the kernel's for the open
/// descriptor (`/proc/self/fd`): what was opened is what is checked, so a
/// link swapped between a check and the open cannot slip through;
/// without `/proc`, `path` canonicalised. The root's real path is the
/// one read with the config, or, when the file is not under it, the
/// root's now (a root that is itself a link, swapped on deploy).
fn inside(files: &StaticFiles, file: &std::fs::File, path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .or_else(|_| path.canonicalize());
    let Ok(real) = real else {
        return false;
    };
    real.starts_with(&files.real_root)
        || files
            .root
            .canonicalize()
            .is_ok_and(|root| real.starts_with(root))
}
