//! `cpu_affinity = "auto"` binds worker thread i to the i-th CPU the
//! process may use; "off" leaves every worker free to run on all of them.
//! The proxy runs as the `tidegate` binary, so that its `tidegate-N`
//! threads are its workers and not those of another test's proxy.

use crate::common::binary::Binary;
use crate::common::*;

/// The CPUs in a `Cpus_allowed_list` line of a /proc status file
/// (`0-3,6`).
fn allowed(status_path: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(status_path).expect("read status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list line")
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// Each `tidegate-N` worker thread of process `pid`, by N: its CPUs.
fn workers(pid: u32) -> Vec<(usize, Vec<usize>)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let dir = task.path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread has ended
        };
        if let Some(n) = name.trim().strip_prefix("tidegate-") {
            let status = dir.join("status");
            found.push((
                n.parse().expect("worker number"),
                allowed(status.to_str().unwrap()),
            ));
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_binds_each_worker_to_its_own_cpu_and_off_binds_none() {
    let origin = backend(|_req| async { text(200, "ok") });
    let mine = allowed("/proc/self/status");
    assert!(!mine.is_empty());
    let threads = 3;
    let config = |affinity: &str| {
        config_to(origin.addr, "").replace(
            "threads = 2\n",
            &format!("threads = {threads}\ncpu_affinity = \"{affinity}\"\n"),
        )
    };

    let toml = config("auto");
    assert!(toml.contains("cpu_affinity = \"auto\""), "{toml}");
    let start = |toml: String| async move {
        let file = TempFile::with("affinity.toml", toml.as_bytes());
        let mut tidegate = Binary::start(&["--config", file.arg(), "--log-level", "info"]);
        let addr = tidegate.listening().await;
        assert_eq!(get(addr, "/").await.0, 200);
        tidegate
    };

    let tidegate = start(toml).await;
    let bound = workers(tidegate.pid);
    // Worker i on the i-th allowed CPU, wrapping around when there are
    // more workers than CPUs.
    let want: Vec<_> = (0..threads)
        .map(|i| (i, vec![mine[i % mine.len()]]))
        .collect();
    assert_eq!(bound, want, "allowed CPUs: {mine:?}");
    drop(tidegate);

    let tidegate = start(config("off")).await;
    let free = workers(tidegate.pid);
    assert_eq!(free.len(), threads);
    for (i, cpus) in free {
        assert_eq!(cpus, mine, "worker {i}");
    }
}
