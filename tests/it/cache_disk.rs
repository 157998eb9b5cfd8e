//! The cache's disk tier (`[caches.NAME] disk = { path, size }`), end to
//! end with an origin that counts what reaches it: what a proxy stored
//! is served by the next proxy on the same folder without the origin; a
//! truncated file and a file with a flipped body byte are never served
//! (refetched instead); `size` evicts the least recently used files;
//! a purge deletes the files.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http::Response;

use crate::common::config::{Route, TestConfig};
use crate::common::*;

/// A folder of its own, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tidegate-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Dir(path)
    }

    /// The cache's files (written whole: no `.tmp`), by path.
    fn files(&self) -> BTreeSet<PathBuf> {
        fn walk(d: &Path, out: &mut BTreeSet<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if !p.to_string_lossy().ends_with(".tmp")
                    && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                {
                    out.insert(p);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.0, &mut out);
        out
    }

    /// The only file.
    fn file(&self) -> PathBuf {
        let f = self.files();
        assert_eq!(f.len(), 1, "{f:?}");
        f.into_iter().next().unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Seen = Arc<Mutex<HashMap<String, usize>>>;

/// Fresh for ten minutes: `/big/*` 300 KiB, the rest `PATH #N`.
fn origin(seen: Seen) -> Backend {
    backend(move |req: http::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_string();
            let n = {
                let mut s = seen.lock().unwrap();
                let c = s.entry(path.clone()).or_default();
                *c += 1;
                *c
            };
            let body = match path.starts_with("/big/") {
                true => format!("{path} #{n} ").repeat(300 << 7)[..300 << 10].to_string(),
                false => format!("{path} #{n}"),
            };
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(full(body))
                .unwrap()
        }
    })
}

struct Setup {
    dir: Dir,
    seen: Seen,
    origin: Backend,
    size: &'static str,
}

impl Setup {
    fn new(tag: &str, size: &'static str) -> Setup {
        let seen = Seen::default();
        Setup {
            dir: Dir::new(tag),
            origin: origin(seen.clone()),
            seen,
            size,
        }
    }

    /// A proxy with the disk tier in this setup's folder.
    fn proxy(&self) -> Proxy {
        Proxy::start(&config(self.origin.addr, &self.dir.0, self.size))
    }

    fn count(&self, path: &str) -> usize {
        self.seen.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn config(origin: SocketAddr, dir: &Path, size: &str) -> String {
    TestConfig::new()
        .set("admin.address", "127.0.0.1:0")
        .set("caches.pages.memory", "16MiB")
        .set("caches.pages.max_object", "1MiB")
        .set("caches.pages.disk.path", dir.to_str().unwrap())
        .set("caches.pages.disk.size", size)
        .group("app", [origin])
        .route(Route::to("app").set("cache", "pages"))
        .toml()
}

async fn get(p: &Proxy, path: &str) -> (String, String) {
    let (status, h, body) = exchange(p.addr, "GET", "cache.test", path, &[], empty()).await;
    assert_eq!(status, 200, "{path}");
    let cs = h.get("cache-status").map_or("", |v| v.to_str().unwrap());
    (cs.to_string(), body)
}

/// The proxy's disk tier as `/caches` tells it.
async fn disk(p: &Proxy) -> serde_json::Value {
    let admin = p.running().admin_addr().unwrap();
    let (_, _, body) = exchange(admin, "GET", "admin", "/caches", &[], empty()).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v[0]["disk"].clone()
}

/// Polls the admin listener until the disk tier holds `n` files (the
/// folder scanned, or what was asked written).
async fn until_files(p: &Proxy, n: u64) {
    tokio::time::timeout(HANG, async {
        while disk(p).await["files"].as_u64() != Some(n) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the disk tier never held {n} files"));
}

#[tokio::test]
async fn a_restart_keeps_what_was_stored() {
    let s = Setup::new("restart", "64MiB");
    let p = s.proxy();
    let (cs, body) = get(&p, "/a").await;
    assert_eq!(body, "/a #1");
    assert!(cs.ends_with("stored"), "{cs}");
    until("the file is written", || s.dir.files().len() == 1).await;
    p.stop();

    let p = s.proxy();
    until_files(&p, 1).await;
    let (cs, body) = get(&p, "/a").await;
    assert_eq!(body, "/a #1");
    assert!(
        cs.starts_with("tidegate; hit;") && cs.ends_with("detail=disk"),
        "{cs}"
    );
    // Back in memory now.
    let (cs, body) = get(&p, "/a").await;
    assert_eq!(body, "/a #1");
    assert!(
        cs.starts_with("tidegate; hit;") && !cs.contains("disk"),
        "{cs}"
    );
    assert_eq!(s.count("/a"), 1);
}

#[tokio::test]
async fn a_truncated_file_is_dropped_and_refetched() {
    let s = Setup::new("truncated", "64MiB");
    let p = s.proxy();
    get(&p, "/a").await;
    until("the file is written", || s.dir.files().len() == 1).await;
    p.stop();
    let file = s.dir.file();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(f.metadata().unwrap().len() - 3).unwrap();
    drop(f);

    let p = s.proxy();
    // The scan finds it short and deletes it.
    until("the truncated file is deleted", || !file.exists()).await;
    let (cs, body) = get(&p, "/a").await;
    assert_eq!(body, "/a #2");
    assert!(cs.contains("fwd=uri-miss"), "{cs}");
    assert_eq!(s.count("/a"), 2);
}

#[tokio::test]
async fn a_file_with_a_flipped_body_byte_is_dropped_and_refetched() {
    let s = Setup::new("flipped", "64MiB");
    let p = s.proxy();
    get(&p, "/abc").await;
    until("the file is written", || s.dir.files().len() == 1).await;
    p.stop();
    // The body's last byte (`1` of `/abc #1`): the length and the head
    // are intact, only the checksum tells.
    let file = s.dir.file();
    let mut bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.last(), Some(&b'1'));
    *bytes.last_mut().unwrap() = b'9';
    std::fs::write(&file, &bytes).unwrap();

    let p = s.proxy();
    until_files(&p, 1).await;
    let (cs, body) = get(&p, "/abc").await;
    assert_eq!(body, "/abc #2");
    assert!(cs.contains("fwd=uri-miss"), "{cs}");
    assert_eq!(s.count("/abc"), 2);
    until("the damaged file is deleted", || !file.exists()).await;
    // The refetched response is stored again, and served.
    until("the new file is written", || s.dir.files().len() == 1).await;
    assert_eq!(get(&p, "/abc").await.1, "/abc #2");
}

#[tokio::test]
async fn the_size_bound_evicts_the_least_recently_used() {
    // 300 KiB a file: three fit in 1 MiB, not four.
    let s = Setup::new("evicts", "1MiB");
    let p = s.proxy();
    for i in 1..=6 {
        let before = s.dir.files();
        let (_, body) = get(&p, &format!("/big/{i}")).await;
        assert_eq!(body.len(), 300 << 10);
        until("the file is written", || {
            s.dir.files().difference(&before).count() == 1
        })
        .await;
    }
    until("the oldest files are deleted", || s.dir.files().len() == 3).await;
    let total: u64 = s
        .dir
        .files()
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(total <= 1 << 20, "{total}");
    let d = disk(&p).await;
    assert_eq!(d["files"], 3, "{d}");
    p.stop();

    let p = s.proxy();
    until_files(&p, 3).await;
    let (cs, body) = get(&p, "/big/6").await;
    assert!(cs.ends_with("detail=disk"), "{cs}");
    assert!(body.starts_with("/big/6 #1 "));
    let (cs, body) = get(&p, "/big/1").await;
    assert!(cs.contains("fwd=uri-miss"), "{cs}");
    assert!(body.starts_with("/big/1 #2 "));
    assert_eq!((s.count("/big/1"), s.count("/big/6")), (2, 1));
}

#[tokio::test]
async fn a_purge_deletes_the_files() {
    let s = Setup::new("purge", "64MiB");
    let p = s.proxy();
    get(&p, "/a").await;
    get(&p, "/b").await;
    until("both files are written", || s.dir.files().len() == 2).await;
    let admin = p.running().admin_addr().unwrap();
    let (status, _, _) = exchange(
        admin,
        "POST",
        "admin",
        "/caches/pages/purge?url=http://cache.test/a",
        &[],
        empty(),
    )
    .await;
    assert_eq!(status, 200);
    // Deleted before the answer.
    assert_eq!(s.dir.files().len(), 1);
    p.stop();

    let p = s.proxy();
    until_files(&p, 1).await;
    assert_eq!(get(&p, "/a").await.1, "/a #2");
    let (cs, body) = get(&p, "/b").await;
    assert_eq!(body, "/b #1");
    assert!(cs.ends_with("detail=disk"), "{cs}");
    until("the new file is written", || s.dir.files().len() == 2).await;
    // Everything.
    let admin = p.running().admin_addr().unwrap();
    exchange(admin, "POST", "admin", "/caches/pages/purge", &[], empty()).await;
    assert_eq!(s.dir.files().len(), 0);
}
