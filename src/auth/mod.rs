//! Who a request comes from: HTTP Basic authentication against Apache
//! htpasswd files (`basic.rs`: the file parsed and the credentials
//! checked; `cache.rs`: each thread's passwords already verified), and
//! JWT bearer tokens (`jwt/`: the checks, the key sets, the `jwks_url`
//! fetch thread). Pure data, hashing and signature checks: read by the
//! config (`config/auth.rs`, `config/jwt.rs`), acted on by the gate
//! (`proxy/auth.rs`, `proxy/jwt.rs`); imports neither.

pub(crate) mod basic;
mod cache;
pub(crate) mod jwt;
