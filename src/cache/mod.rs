//! HTTP caching (RFC 9111, as a shared cache): what is decided
//! ([`policy`]: pure functions over heads and times), what tells
//! responses apart ([`key`]) and where they are kept ([`store`]: one
//! per `[caches.NAME]`, shared by every worker thread). The request
//! path's part (lookup, revalidation, storing while streaming) is
//! `crate::proxy::cache`.

pub(crate) mod disk;
pub(crate) mod entry;
pub(crate) mod growing;
pub(crate) mod key;
pub(crate) mod policy;
pub(crate) mod store;

use std::sync::Arc;

use crate::config::cache::Cache;
pub(crate) use store::Store;

/// Every configured cache's store, in config order (routes refer to
/// them by index).
#[derive(Default)]
pub(crate) struct Caches(Vec<Arc<Store>>);

impl Caches {
    pub(crate) fn new(configs: &[Cache]) -> Caches {
        Caches(configs.iter().map(|c| Arc::new(Store::new(c))).collect())
    }

    /// For a reloaded config: a cache whose name, memory and key are
    /// unchanged keeps what it stored (under its new settings).
    pub(crate) fn carried(&self, configs: &[Cache]) -> Caches {
        Caches(
            configs
                .iter()
                .map(|c| {
                    let old = self.0.iter().find(|s| {
                        s.config.name == c.name
                            && s.config.memory == c.memory
                            && s.config.key == c.key
                    });
                    Arc::new(match old {
                        Some(s) => s.with_config(c),
                        None => Store::new(c),
                    })
                })
                .collect(),
        )
    }

    /// The same stores, each with the disk tier its config names
    /// (opened now and scanned in the background, or the one open
    /// already for that folder and size); an error names the field.
    pub(crate) fn with_disks(&self) -> Result<Caches, (String, String)> {
        let mut out = Vec::with_capacity(self.0.len());
        for s in &self.0 {
            let have = s.disk.as_ref().map(|d| &d.config);
            out.push(match &s.config.disk {
                want if want.as_ref() == have => s.clone(),
                None => Arc::new(s.with_disk(None)),
                Some(want) => match disk::Disk::open(want, &s.config.name) {
                    Ok(d) => Arc::new(s.with_disk(Some(d))),
                    Err(e) => return Err((format!("caches.{}.disk.path", s.config.name), e)),
                },
            });
        }
        Ok(Caches(out))
    }

    /// The same stores, each behind a reference count of its own: one
    /// worker thread's. (A plan holds its store for the request; with one
    /// count shared by every thread, each request's clone and drop moved
    /// that cache line, and the store's settings beside it, between
    /// cores.)
    pub(crate) fn for_thread(&self) -> Caches {
        Caches(
            self.0
                .iter()
                .map(|s| Arc::new(s.with_config(&s.config)))
                .collect(),
        )
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Arc<Store>> {
        self.0.get(i)
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<Store>> {
        self.0.iter().find(|s| s.config.name == name)
    }

    pub(crate) fn all(&self) -> &[Arc<Store>] {
        &self.0
    }
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|s| &s.config.name))
            .finish()
    }
}
