//! One certificate ordered (RFC 8555 §7.4) with `instant-acme`: the
//! account loaded or made, the name's challenge answered (its answer put
//! in the storage first, where every instance sharing it reads it), the
//! order finalized with a new key, and the key and chain stored.

use std::path::Path;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use super::certs::Certs;
use super::disk;
use crate::config::acme::{Acme, Challenge};

/// How long an answer stays in the storage before the CA is told to
/// look: other instances read the storage every second.
const SHARE: Duration = Duration::from_secs(2);

/// How long the CA may take to validate, and to issue.
const PATIENCE: Duration = Duration::from_secs(120);

/// The account for `settings`' directory: read from the storage, or
/// made (and stored).
pub(super) async fn account(settings: &Acme) -> Result<Account, String> {
    let builder = || match &settings.ca {
        Some(ca) => {
            Account::builder_with_root(ca).map_err(|e| format!("the CA root {}: {e}", ca.display()))
        }
        None => Account::builder().map_err(|e| format!("the system's roots: {e}")),
    };
    let path = disk::account(&settings.storage, &settings.directory);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let creds: AccountCredentials =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return builder()?
            .from_credentials(creds)
            .await
            .map_err(|e| format!("the account in {}: {e}", path.display()));
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("new account at {}: {e}", settings.directory))?;
    let text = serde_json::to_string(&creds).map_err(|e| e.to_string())?;
    disk::write(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::info!(
        "ACME: new account {} at {}",
        account.id(),
        settings.directory
    );
    Ok(account)
}

/// Orders the certificate of `name`; what is stored, read back.
pub(super) async fn order(
    account: &Account,
    name: &str,
    settings: &Acme,
    certs: &Certs,
) -> Result<disk::Loaded, String> {
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut answered = Vec::new();
    let result = validate(&mut order, name, settings, certs, &mut answered).await;
    // The answers are no longer needed, whatever happened.
    for path in answered {
        let _ = std::fs::remove_file(path);
    }
    certs.read_challenges(settings);
    result?;
    let key = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain = order
        .poll_certificate(&RetryPolicy::new().timeout(PATIENCE))
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    let pem = format!("{key}{chain}");
    let loaded =
        disk::parse_pem(pem.as_bytes(), true).map_err(|e| format!("the CA's certificate: {e}"))?;
    let path = disk::certificate(&settings.storage, name);
    disk::write(&path, pem.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(loaded)
}

/// Answers the order's pending authorizations and waits until the order
/// is ready; the answers written go to `answered`.
async fn validate(
    order: &mut instant_acme::Order,
    name: &str,
    settings: &Acme,
    certs: &Certs,
    answered: &mut Vec<std::path::PathBuf>,
) -> Result<(), String> {
    let kind = match settings.challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut ready = Vec::new();
    {
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut a = a.map_err(|e| format!("authorization: {e}"))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => return Err(format!("the authorization is {s:?}")),
            }
            let Some(challenge) = a.challenge(kind.clone()) else {
                return Err(format!("the CA offers no {kind:?} challenge"));
            };
            let auth = challenge.key_authorization();
            let path = match settings.challenge {
                Challenge::Http01 => {
                    if !disk::token_ok(&challenge.token) {
                        return Err(format!(
                            "the CA's token {:?} is not base64url",
                            challenge.token
                        ));
                    }
                    let path = settings.storage.join(disk::HTTP01).join(&challenge.token);
                    write_answer(&path, auth.as_str().as_bytes())?;
                    path
                }
                Challenge::TlsAlpn01 => {
                    let pem = tls_alpn_answer(name, auth.digest().as_ref())?;
                    let path = disk::tls_alpn_answer(&settings.storage, name);
                    write_answer(&path, pem.as_bytes())?;
                    path
                }
            };
            answered.push(path);
            ready.push(challenge.url.clone());
        }
    }
    if !answered.is_empty() {
        certs.read_challenges(settings);
        tokio::time::sleep(SHARE).await;
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut a = a.map_err(|e| format!("authorization: {e}"))?;
            if let Some(mut c) = a.challenge(kind.clone()) {
                if ready.contains(&c.url) {
                    c.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
                }
            }
        }
    }
    let status = order
        .poll_ready(&RetryPolicy::new().timeout(PATIENCE))
        .await
        .map_err(|e| format!("validation: {e}"))?;
    if status == OrderStatus::Ready {
        return Ok(());
    }
    // Why: the failed challenge's problem, as the CA put it.
    let mut why = format!("the order is {status:?}");
    let mut authorizations = order.authorizations();
    while let Some(Ok(a)) = authorizations.next().await {
        if let Some(p) = a.challenges.iter().find_map(|c| c.error.as_ref()) {
            why = format!("{kind:?} validation failed: {p}");
        }
    }
    Err(why)
}

fn write_answer(path: &Path, bytes: &[u8]) -> Result<(), String> {
    disk::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The TLS-ALPN-01 answer for `name` (RFC 8737 §3): a self-signed
/// certificate for it carrying the key authorization's digest in the
/// critical acmeIdentifier extension; its key first, as the storage holds.
fn tls_alpn_answer(name: &str, digest: &[u8]) -> Result<String, String> {
    let bad = |e: rcgen::Error| format!("the TLS-ALPN-01 certificate: {e}");
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(bad)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(bad)?;
    Ok(format!("{}{}", key.serialize_pem(), cert.pem()))
}
