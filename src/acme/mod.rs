//! ACME certificates (RFC 8555) for the names TLS listeners list under
//! `tls.acme`: `certs.rs` is what handshakes and requests read (the
//! certificates obtained, the challenges being answered), `manager.rs`
//! the thread that keeps them (reads the storage, orders and renews),
//! `order.rs` one order with `instant-acme`, `disk.rs` the storage folder
//! that instances may share, `lock.rs` which of them orders.
//!
//! The request path meets this module in two places: a TLS listener's
//! certificate choice (`downstream/tls.rs`: an obtained certificate for
//! its name, or the TLS-ALPN-01 answer to a handshake offering
//! `acme-tls/1`), and a plain listener's `/.well-known/acme-challenge/`
//! (`proxy/request.rs`, before any route or HTTPS redirect).

mod certs;
pub(crate) mod disk;
mod lock;
mod manager;
mod order;

pub(crate) use certs::{Certs, Stats, ACME_TLS_ALPN, HTTP01_PREFIX};
pub(crate) use manager::Manager;

/// Reads what the storage holds for `settings`' names into `certs` now
/// (the ACME thread does so every second after).
pub(crate) fn load(settings: &crate::config::acme::Acme, certs: &Certs) {
    certs.set_issued(disk::certificates(&settings.storage, &settings.names));
    certs.read_challenges(settings);
}
