//! A route's `basic_auth`, applied in the route phase: credentials
//! checked before the route does anything, a 401 with the realm's
//! challenge without valid ones, and `Authorization` removed before the
//! request goes upstream (unless `forward_authorization`). A password
//! this thread has not verified yet is hashed on tokio's blocking pool
//! ([`verified`]), never on the worker thread.

use std::cell::Cell;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use crate::auth::basic::{self, Check, Verify};
use crate::error::ProxyError;
use crate::router::Route;

/// A password to verify before the request goes on.
pub(crate) struct Pending {
    job: Verify,
    challenge: HeaderValue,
}

/// The route's credentials check: `Ok(None)` to go on (no `basic_auth`,
/// or credentials verified before: their user goes in `user`), a
/// [`Pending`] to verify first, or the 401.
#[inline]
pub(crate) fn check(
    route: &Route,
    headers: &mut HeaderMap,
    user: &Cell<Option<Arc<str>>>,
) -> Result<Option<Pending>, ProxyError> {
    let Some(auth) = &route.basic_auth else {
        return Ok(None);
    };
    match auth.check(headers) {
        Check::Pass(name) => {
            user.set(Some(name));
            if !auth.forward_authorization {
                headers.remove(AUTHORIZATION);
            }
            Ok(None)
        }
        Check::Deny(reason) => Err(ProxyError::Unauthorized {
            challenge: auth.challenge.clone(),
            reason,
        }),
        Check::Verify(job) => Ok(Some(Pending {
            job,
            challenge: auth.challenge.clone(),
        })),
    }
}

impl Pending {
    pub(crate) fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }
}

/// Verifies `p` off the worker thread; once it passed, the same
/// [`check`] passes on this thread (the route phase runs again).
pub(crate) async fn verified(p: Pending) -> Result<(), ProxyError> {
    match basic::verify(p.job).await {
        true => Ok(()),
        false => Err(unauthorized(p.challenge)),
    }
}

/// A wrong password.
pub(crate) fn unauthorized(challenge: HeaderValue) -> ProxyError {
    ProxyError::Unauthorized {
        challenge,
        reason: "wrong password",
    }
}
