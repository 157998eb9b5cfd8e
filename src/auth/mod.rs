//! Who a request comes from: HTTP Basic authentication against Apache
//! htpasswd files (`basic.rs`: the file parsed and the credentials
//! checked; `cache.rs`: each thread's passwords already verified). Pure
//! data and hashing: read by the config (`config/auth.rs`), acted on by
//! the request phase (`proxy/request.rs`); imports neither.

pub(crate) mod basic;
mod cache;
