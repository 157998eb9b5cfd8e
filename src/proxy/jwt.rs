//! A route's `jwt`, applied in the gate after basic auth: the client's
//! own copies of the claim fields removed, the bearer token checked
//! (`auth::jwt`), a 401 with RFC 6750's challenge without a valid one,
//! and for a valid one the claim fields set, `sub` noted as the access
//! log's user, and `Authorization` removed (unless `forward_token`). A
//! `kid` the key set lacks waits for a fetch of a `jwks_url` set, bounded
//! in time and rate (`auth/jwt/keys.rs`), then is checked once more.

use std::cell::Cell;
use std::sync::Arc;

use http::header::HeaderMap;

use crate::auth::jwt::{Jwt, Verdict};
use crate::error::ProxyError;

/// Checks `headers`' token against `jwt`: `Ok` to go on.
pub(crate) async fn check(
    jwt: &Jwt,
    headers: &mut HeaderMap,
    user: &Cell<Option<Arc<str>>>,
) -> Result<(), ProxyError> {
    jwt.strip(headers);
    let seen = jwt.keys.fetches();
    let verdict = match jwt.verify(headers) {
        Verdict::UnknownKey => match jwt.keys.refreshed(seen).await {
            true => jwt.verify(headers),
            false => Verdict::UnknownKey,
        },
        v => v,
    };
    match verdict {
        Verdict::Pass(passed) => {
            if let Some(sub) = jwt.apply(passed, headers) {
                user.set(Some(sub));
            }
            Ok(())
        }
        Verdict::Missing => Err(ProxyError::BadToken {
            challenge: jwt.missing(),
            reason: "no bearer token",
        }),
        Verdict::Invalid(reason) => Err(ProxyError::BadToken {
            challenge: jwt.invalid(reason),
            reason,
        }),
        Verdict::UnknownKey => {
            let reason = "unknown kid";
            Err(ProxyError::BadToken {
                challenge: jwt.invalid(reason),
                reason,
            })
        }
    }
}
