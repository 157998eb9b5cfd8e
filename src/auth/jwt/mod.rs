//! JWT bearer tokens (RFC 7519, RFC 6750) checked against a route's
//! `jwt` settings: the signature (RS256/384/512, PS256/384/512,
//! ES256/384, EdDSA with Ed25519) by the `jsonwebtoken` crate (on ring),
//! `exp` (required) and `nbf` with the clock skew, `iss` and `aud`
//! required and among those allowed. The token's `alg` must be in the
//! route's `algorithms` and fit its key's type (`keys.rs`): an RSA key
//! never checks an HMAC or ECDSA signature. `none` and HMAC are refused
//! when the config is read.
//!
//! Pure checking: the config builds a [`Jwt`] (`config/jwt.rs`), the
//! gate (`proxy/jwt.rs`) acts on the [`Verdict`].

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Serialize;

pub(crate) mod cache;
pub(crate) mod fetch;
pub(crate) mod keys;

use keys::Keys;

/// A route's `jwt`, validated.
#[derive(Serialize)]
pub(crate) struct Jwt {
    pub(crate) realm: String,
    pub(crate) issuers: Vec<String>,
    pub(crate) audiences: Vec<String>,
    #[serde(serialize_with = "names")]
    pub(crate) algorithms: Vec<Algorithm>,
    /// The file or URL of the key set (for the config dump).
    pub(crate) jwks: String,
    #[serde(serialize_with = "secs")]
    pub(crate) clock_skew: std::time::Duration,
    #[serde(serialize_with = "claim_fields")]
    pub(crate) claims_to_headers: Vec<(String, HeaderName)>,
    pub(crate) forward_token: bool,
    #[serde(skip)]
    pub(crate) keys: Arc<Keys>,
    /// One validation per allowed algorithm.
    #[serde(skip)]
    validations: Vec<Validation>,
    /// `Bearer realm="..."`: the challenge of a request without a token.
    #[serde(skip)]
    missing: HeaderValue,
}

fn names<S: serde::Serializer>(a: &[Algorithm], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(a.iter().map(|a| format!("{a:?}")))
}

fn secs<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}s", d.as_secs()))
}

fn claim_fields<S: serde::Serializer>(c: &[(String, HeaderName)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(c.iter().map(|(k, v)| (k, v.as_str())))
}

/// The `dump` of a route's `jwt`.
pub(crate) fn dump<S: serde::Serializer>(jwt: &Option<Arc<Jwt>>, s: S) -> Result<S::Ok, S::Error> {
    jwt.as_deref().serialize(s)
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("realm", &self.realm)
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

/// What a request's token is worth.
pub(crate) enum Verdict {
    /// Valid: what it lets through.
    Pass(cache::Passed),
    /// No bearer token (RFC 6750 §3.1: the challenge has no error code).
    Missing,
    /// Refused, and why (said in `error_description`, and logged).
    Invalid(&'static str),
    /// Its `kid` is not in the key set (a fetch may bring it).
    UnknownKey,
}

/// `text` as an RFC 9110 quoted-string's content.
fn quoted(text: &str) -> String {
    let mut v = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if c == '"' || c == '\\' {
            v.push('\\');
        }
        v.push(c);
    }
    v
}

impl Jwt {
    /// Builds the checks; `None` if `realm` cannot be a field value.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        realm: String,
        issuers: Vec<String>,
        audiences: Vec<String>,
        algorithms: Vec<Algorithm>,
        jwks: String,
        keys: Keys,
        clock_skew: std::time::Duration,
        claims_to_headers: Vec<(String, HeaderName)>,
        forward_token: bool,
    ) -> Option<Jwt> {
        let missing =
            HeaderValue::from_str(&format!("Bearer realm=\"{}\"", quoted(&realm))).ok()?;
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = clock_skew.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                v.set_issuer(&issuers);
                v.set_audience(&audiences);
                v
            })
            .collect();
        Some(Jwt {
            realm,
            issuers,
            audiences,
            algorithms,
            jwks,
            clock_skew,
            claims_to_headers,
            forward_token,
            keys: Arc::new(keys),
            validations,
            missing,
        })
    }

    /// The challenge of a request without a token.
    pub(crate) fn missing(&self) -> HeaderValue {
        self.missing.clone()
    }

    /// The challenge of a refused token (RFC 6750 §3.1).
    pub(crate) fn invalid(&self, reason: &str) -> HeaderValue {
        let v = format!(
            "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{reason}\"",
            quoted(&self.realm)
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| self.missing.clone())
    }

    /// Checks the bearer token of `headers`.
    pub(crate) fn verify(&self, headers: &HeaderMap) -> Verdict {
        let Some(token) = bearer(headers) else {
            return Verdict::Missing;
        };
        if token.is_empty() {
            return Verdict::Invalid("malformed token");
        }
        let set = self.keys.load();
        let now = jsonwebtoken::get_current_timestamp();
        let cached = cache::key(set.id, token);
        if let Some(p) = cache::get(&cached, now) {
            return Verdict::Pass(p);
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            // `alg: none` lands here too: not an algorithm the crate knows.
            return Verdict::Invalid("malformed token or unknown algorithm");
        };
        let Some(i) = self.algorithms.iter().position(|a| *a == header.alg) else {
            return Verdict::Invalid("algorithm not allowed");
        };
        let Some(key) = set.find(header.kid.as_deref()) else {
            return match header.kid {
                Some(_) => Verdict::UnknownKey,
                None => Verdict::Invalid("no kid, and the key set has more than one key"),
            };
        };
        if !key.algorithms.contains(&header.alg) {
            return Verdict::Invalid("algorithm does not fit the key");
        }
        let Some(validation) = self.validations.get(i) else {
            return Verdict::Invalid("algorithm not allowed");
        };
        type Claims = serde_json::Map<String, serde_json::Value>;
        match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
            Ok(data) => {
                let passed = self.passed(&data.claims);
                if set.id != 0 {
                    cache::insert(cached, passed.clone());
                }
                Verdict::Pass(passed)
            }
            Err(e) => Verdict::Invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm => "algorithm does not fit the key",
                ErrorKind::MissingRequiredClaim(c) if c == "exp" => "no exp claim",
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => "no iss claim",
                ErrorKind::MissingRequiredClaim(_) => "no aud claim",
                _ => "malformed token",
            }),
        }
    }

    /// Removes the client's own copies of the claim fields (before the
    /// check: a refused or absent token never leaves them in).
    pub(crate) fn strip(&self, headers: &mut HeaderMap) {
        for (_, name) in &self.claims_to_headers {
            headers.remove(name);
        }
    }

    /// What a valid token's `claims` let through: the claim fields
    /// (strings as they are, numbers and booleans as text, others
    /// skipped), `sub`, and how long that holds (`exp` and the skew).
    fn passed(&self, claims: &serde_json::Map<String, serde_json::Value>) -> cache::Passed {
        use serde_json::Value;
        let mut fields = Vec::with_capacity(self.claims_to_headers.len());
        for (claim, name) in &self.claims_to_headers {
            let text = match claims.get(claim) {
                Some(Value::String(s)) => HeaderValue::from_str(s).ok(),
                Some(Value::Number(n)) => HeaderValue::from_str(&n.to_string()).ok(),
                Some(Value::Bool(b)) => {
                    Some(HeaderValue::from_static(if *b { "true" } else { "false" }))
                }
                _ => None,
            };
            if let Some(v) = text {
                fields.push((name.clone(), v));
            }
        }
        let sub = match claims.get("sub") {
            Some(Value::String(s)) => Some(s.as_str().into()),
            _ => None,
        };
        // `exp` is required: checked already.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        cache::Passed {
            fields,
            sub,
            until: exp.saturating_add(self.clock_skew.as_secs()),
        }
    }

    /// Sets a valid token's claim fields and removes `Authorization`
    /// unless `forward_token`. Returns `sub`, for the access log's user.
    pub(crate) fn apply(&self, passed: cache::Passed, headers: &mut HeaderMap) -> Option<Arc<str>> {
        for (name, value) in passed.fields {
            headers.insert(name, value);
        }
        if !self.forward_token {
            headers.remove(AUTHORIZATION);
        }
        passed.sub
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_any_case_and_other_schemes_missing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer  abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer(&h), Some(""));
    }

    #[test]
    fn quoted_escapes() {
        assert_eq!(quoted(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
