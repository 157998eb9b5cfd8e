//! A route's `jwt`: its settings checked and its key set read when the
//! config loads. A `jwks_file` is read and parsed here (so `tidegate
//! check`, start and reload refuse one that is missing, unreadable, not a
//! JWKS or without a usable key, naming the file); a reload reads it
//! again. A `jwks_url` is only checked here: the fetch thread started
//! with the config fetches it (`auth/jwt/fetch.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use jsonwebtoken::Algorithm;

use super::raw;
use crate::auth::jwt::keys::{KeySet, Keys, Remote};
use crate::auth::jwt::Jwt;

/// Larger files are refused (and `/dev/zero` is not read forever).
const MAX_BYTES: u64 = 1 << 20;
/// `clock_skew` when not given.
const DEFAULT_SKEW: Duration = Duration::from_secs(60);
/// `jwks_refresh` when not given.
const DEFAULT_REFRESH: Duration = Duration::from_secs(600);

/// The route's `jwt`, or every `(field, reason)`, each field relative to
/// the route.
pub(super) fn jwt(j: &raw::Jwt, base: &Path) -> Result<Arc<Jwt>, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut err = |name: &str, reason: String| errors.push((format!("jwt.{name}"), reason));
    if j.issuers.is_empty() {
        err("issuers", "needs at least one issuer (`iss`)".into());
    }
    if j.audiences.is_empty() {
        err("audiences", "needs at least one audience (`aud`)".into());
    }
    if j.algorithms.is_empty() {
        err("algorithms", "needs at least one algorithm".into());
    }
    let mut algorithms = Vec::new();
    for (i, name) in j.algorithms.iter().enumerate() {
        match algorithm(name) {
            Ok(a) if !algorithms.contains(&a) => algorithms.push(a),
            Ok(_) => {}
            Err(reason) => err(&format!("algorithms[{i}]"), reason),
        }
    }
    let clock_skew = match j.clock_skew.as_deref() {
        None => DEFAULT_SKEW,
        Some(t) => humantime::parse_duration(t).unwrap_or_else(|e| {
            err(
                "clock_skew",
                format!("`{t}` is not a duration like `60s` ({e})"),
            );
            DEFAULT_SKEW
        }),
    };
    let mut claims_to_headers = Vec::new();
    for (claim, field) in j.claims_to_headers.iter().flatten() {
        match HeaderName::from_bytes(field.as_bytes()) {
            Ok(name) if name == http::header::AUTHORIZATION || name == http::header::HOST => err(
                &format!("claims_to_headers.{claim}"),
                format!("`{field}` cannot carry a claim"),
            ),
            Ok(name) => claims_to_headers.push((claim.clone(), name)),
            Err(_) => err(
                &format!("claims_to_headers.{claim}"),
                format!("`{field}` is not a header name"),
            ),
        }
    }
    if j.jwks_refresh.is_some() && j.jwks_url.is_none() {
        err("jwks_refresh", "only applies with `jwks_url`".into());
    }
    let keys = match (&j.jwks_file, &j.jwks_url) {
        (Some(_), Some(_)) => {
            err(
                "jwks_url",
                "give `jwks_file` or `jwks_url`, not both".into(),
            );
            None
        }
        (None, None) => {
            err(
                "jwks_file",
                "a key set is needed: `jwks_file` or `jwks_url`".into(),
            );
            None
        }
        (Some(file), None) => {
            let path = base.join(file);
            let shown = path.display().to_string();
            match super::source::read_bounded(&path, MAX_BYTES)
                .map_err(|e| format!("cannot read {shown}: {e}"))
                .and_then(|text| KeySet::parse(&text).map_err(|e| format!("{shown}: {e}")))
            {
                Ok(set) => Some((shown, Keys::fixed(set))),
                Err(reason) => {
                    err("jwks_file", reason);
                    None
                }
            }
        }
        (None, Some(url)) => match remote(url, j.jwks_refresh.unwrap_or(DEFAULT_REFRESH)) {
            Ok(r) => Some((url.clone(), Keys::remote(r))),
            Err(reason) => {
                err("jwks_url", reason);
                None
            }
        },
    };
    let realm = j.realm.clone().unwrap_or_else(|| "tidegate".into());
    let Some((jwks, keys)) = keys else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let built = Jwt::new(
        realm.clone(),
        j.issuers.clone(),
        j.audiences.clone(),
        algorithms,
        jwks,
        keys,
        clock_skew,
        claims_to_headers,
        j.forward_token.unwrap_or(false),
    );
    built.map(Arc::new).ok_or_else(|| {
        vec![(
            "jwt.realm".into(),
            format!("`{realm}` cannot be a header value (control characters)"),
        )]
    })
}

/// An allowed algorithm: an asymmetric signature; never `none` nor HMAC.
fn algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("`none` (unsigned tokens) is never accepted".into());
    }
    match name.parse::<Algorithm>() {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Err(format!(
            "`{name}`: HMAC needs a shared secret and is not accepted; use RS*, PS*, ES* or EdDSA"
        )),
        Ok(a) => Ok(a),
        Err(_) => Err(format!(
            "`{name}` is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
        )),
    }
}

fn remote(url: &str, refresh: Duration) -> Result<Remote, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{url}`: only http:// and https:// URLs")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(Remote { url: uri, refresh })
}
