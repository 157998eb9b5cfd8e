//! The ACME thread, one per process with `[acme]`: every second it reads
//! what changed in the storage (certificates another instance obtained,
//! challenges another instance answers) into [`Certs`]; the instance that
//! holds the storage's lock ([`super::lock`]) also orders each name that
//! has no certificate or is past two thirds of its certificate's life
//! (less a random jitter of up to a thirtieth, so that names and
//! instances do not all renew at once). A failed order leaves the served
//! certificate in place, is logged as a warning and counted, and is tried
//! again after `retry`, doubled with each failure up to a day.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::certs::Certs;
use super::disk;
use super::lock::Lock;
use crate::config::acme::Acme;

/// How often the storage is looked at.
const TICK: Duration = Duration::from_secs(1);
/// The longest an order may take, account included.
const ORDER_LIMIT: Duration = Duration::from_secs(600);
/// The longest wait between tries of a failing name.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// The running thread: told of new settings on reload, stopped on
/// shutdown (it then gives the lock up).
pub(crate) struct Manager {
    settings: watch::Sender<Arc<Acme>>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").finish_non_exhaustive()
    }
}

impl Manager {
    pub(crate) fn start(settings: Arc<Acme>, certs: Arc<Certs>) -> std::io::Result<Manager> {
        let (settings, settings_rx) = watch::channel(settings);
        let (stop, stop_rx) = watch::channel(false);
        let handle = std::thread::Builder::new()
            .name("tidegate-acme".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("ACME: no runtime, no certificates: {e}");
                        return;
                    }
                };
                rt.block_on(run(settings_rx, stop_rx, certs));
            })?;
        Ok(Manager {
            settings,
            stop,
            handle,
        })
    }

    /// A reload's settings (names added are ordered, removed ones left).
    pub(crate) fn update(&self, settings: Arc<Acme>) {
        let _ = self.settings.send(settings);
    }

    pub(crate) fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.join();
    }
}

/// Where a name stands.
struct Name {
    /// When its certificate is due for renewal (now when it has none).
    due: SystemTime,
    /// Failures in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

/// When a certificate valid from `nb` to `na` is renewed: two thirds
/// into its life, less up to a thirtieth of it at random.
fn renewal(nb: SystemTime, na: SystemTime) -> SystemTime {
    let life = na.duration_since(nb).unwrap_or_default();
    let jitter = life.mul_f64((crate::random::next_u64() % 1000) as f64 / 1000.0 / 30.0);
    nb + life.mul_f64(2.0 / 3.0) - jitter
}

/// What the thread knows of the storage between ticks.
#[derive(Default)]
struct Seen {
    certificates: Option<SystemTime>,
    challenges: (Option<SystemTime>, Option<SystemTime>),
}

async fn run(
    mut settings_rx: watch::Receiver<Arc<Acme>>,
    mut stop: watch::Receiver<bool>,
    certs: Arc<Certs>,
) {
    let mut settings = settings_rx.borrow_and_update().clone();
    let mut lock = Lock::new(&settings.storage);
    let mut names: HashMap<String, Name> = HashMap::new();
    let mut seen = Seen::default();
    let mut account: Option<instant_acme::Account> = None;
    let mut beat = Instant::now();
    let mut held = false;
    loop {
        if settings_rx.has_changed().unwrap_or(false) {
            let new = settings_rx.borrow_and_update().clone();
            if new.storage != settings.storage {
                lock.release();
                lock = Lock::new(&new.storage);
                held = false;
                beat = Instant::now();
            }
            if new.directory != settings.directory || new.ca != settings.ca {
                account = None;
            }
            settings = new;
            seen = Seen::default();
        }
        sync(&settings, &certs, &mut seen, &mut names);
        if Instant::now() >= beat {
            held = lock.hold(settings.lock_timeout);
            certs.stats().lock_held = held;
            beat = Instant::now() + settings.lock_timeout / 3;
        }
        if held {
            let due = settings.names.iter().find(|n| {
                names.get(*n).is_some_and(|s| {
                    s.due <= SystemTime::now() && s.retry_at.is_none_or(|r| r <= Instant::now())
                })
            });
            if let Some(name) = due.cloned() {
                let ordered = {
                    let work = ordered(&settings, &name, &certs, &mut account);
                    tokio::pin!(work);
                    // The heartbeat goes on while the CA works.
                    loop {
                        tokio::select! {
                            r = &mut work => break Some(r),
                            _ = tokio::time::sleep(settings.lock_timeout / 3) => {
                                lock.hold(settings.lock_timeout);
                                beat = Instant::now() + settings.lock_timeout / 3;
                            }
                            _ = stop.changed() => break None,
                        }
                    }
                };
                match ordered {
                    None => break,
                    Some(r) => done(&settings, &name, r, &certs, &mut names, &mut seen),
                }
                continue;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = settings_rx.changed() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    lock.release();
}

/// Orders `name`, with the account made or read first.
async fn ordered(
    settings: &Acme,
    name: &str,
    certs: &Certs,
    account: &mut Option<instant_acme::Account>,
) -> Result<disk::Loaded, String> {
    let work = async {
        if account.is_none() {
            *account = Some(super::order::account(settings).await?);
        }
        let Some(a) = account.as_ref() else {
            return Err("no account".into());
        };
        super::order::order(a, name, settings, certs).await
    };
    // A CA that stops answering mid-request must not stall the thread.
    tokio::time::timeout(ORDER_LIMIT, work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from the CA within {}",
                humantime::format_duration(ORDER_LIMIT)
            ))
        })
}

/// Takes an order's outcome in: the certificate served at once, or the
/// failure logged and counted with the next try set.
fn done(
    settings: &Acme,
    name: &str,
    result: Result<disk::Loaded, String>,
    certs: &Certs,
    names: &mut HashMap<String, Name>,
    seen: &mut Seen,
) {
    let Some(state) = names.get_mut(name) else {
        return;
    };
    match result {
        Ok(loaded) => {
            tracing::info!(
                name,
                "ACME: certificate obtained, valid until {}",
                httpdate::fmt_http_date(loaded.not_after)
            );
            state.due = renewal(loaded.not_before, loaded.not_after);
            state.failures = 0;
            state.retry_at = None;
            let mut stats = certs.stats();
            let s = stats.names.entry(name.to_string()).or_default();
            s.ok += 1;
            drop(stats);
            // Read from the storage again (so every instance serves the
            // same), this one included.
            seen.certificates = None;
            sync(settings, certs, seen, names);
        }
        Err(why) => {
            let wait = settings
                .retry
                .saturating_mul(1u32 << state.failures.min(16))
                .min(MAX_BACKOFF);
            state.failures += 1;
            state.retry_at = Some(Instant::now() + wait);
            let served = certs.issued(name).is_some();
            tracing::warn!(
                name,
                "ACME: ordering the certificate failed ({} in a row): {why}; {}; next try in {}",
                state.failures,
                if served {
                    "the current certificate stays"
                } else {
                    "no certificate yet for this name"
                },
                humantime::format_duration(wait)
            );
            certs
                .stats()
                .names
                .entry(name.to_string())
                .or_default()
                .failed += 1;
        }
    }
}

/// Reads what changed in the storage: certificates (and the names' due
/// times) and challenges.
fn sync(settings: &Acme, certs: &Certs, seen: &mut Seen, names: &mut HashMap<String, Name>) {
    let dir = settings.storage.join("certificates");
    let stamp = disk::stamp(&dir);
    if stamp.is_none() || stamp != seen.certificates {
        // (The folders are made at load; again only if one went away.)
        if stamp.is_none() {
            if let Err(e) = disk::prepare(&settings.storage) {
                tracing::warn!("ACME: storage: {e}");
            }
        }
        seen.certificates = disk::stamp(&dir);
        let loaded = disk::certificates(&settings.storage, &settings.names);
        names.retain(|n, _| settings.names.contains(n));
        let mut stats = certs.stats();
        stats.names.retain(|n, _| settings.names.contains(n));
        for n in &settings.names {
            let l = loaded.get(n);
            let due = l.map_or(SystemTime::UNIX_EPOCH, |l| {
                renewal(l.not_before, l.not_after)
            });
            let entry = names.entry(n.clone()).or_insert(Name {
                due,
                failures: 0,
                retry_at: None,
            });
            // A certificate that changed (here or elsewhere) sets the due
            // time afresh; an unchanged one keeps its jitter.
            let expires = l.map(|l| unix(l.not_after));
            let s = stats.names.entry(n.clone()).or_default();
            if s.expires != expires {
                entry.due = due;
                s.expires = expires;
            }
        }
        drop(stats);
        certs.set_issued(loaded);
    }
    let stamps = (
        disk::stamp(&settings.storage.join(disk::HTTP01)),
        disk::stamp(&settings.storage.join(disk::TLS_ALPN01)),
    );
    if stamps != seen.challenges {
        seen.challenges = stamps;
        certs.read_challenges(settings);
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::renewal;
    use std::time::{Duration, SystemTime};

    #[test]
    fn renewal_is_two_thirds_in_less_a_jitter_of_up_to_a_thirtieth() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let life = Duration::from_secs(90 * 86_400);
        let latest = nb + life.mul_f64(2.0 / 3.0);
        let earliest = latest - life / 30;
        let times: Vec<SystemTime> = (0..64).map(|_| renewal(nb, nb + life)).collect();
        for t in &times {
            assert!(
                *t > earliest - Duration::from_secs(1) && *t <= latest,
                "{t:?}"
            );
        }
        // Spread: instances and names do not all renew at one moment.
        assert!(times.iter().any(|t| *t != times[0]), "no jitter");
        // A certificate that ends before it begins is due at once.
        assert_eq!(renewal(nb, nb - life), nb);
    }
}
