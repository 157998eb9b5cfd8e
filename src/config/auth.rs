//! A route's `basic_auth`: its htpasswd file read and parsed when the
//! config loads (so `tidegate check`, start and reload refuse a file
//! that is missing, unreadable or has a refused line, naming the file's
//! line), and its realm made into the 401's challenge. A reload reads the
//! file again.

use std::path::Path;
use std::sync::Arc;

use super::raw;
use crate::auth::basic::{challenge, BasicAuth, Htpasswd};

/// Larger files are refused (and `/dev/zero` is not read forever).
const MAX_BYTES: u64 = 16 << 20;

/// The route's `basic_auth`, or `(field, reason)`, the field relative to
/// the route.
pub(super) fn basic_auth(
    a: &raw::BasicAuth,
    base: &Path,
) -> Result<Arc<BasicAuth>, (String, String)> {
    let field = |name: &str, reason: String| (format!("basic_auth.{name}"), reason);
    let challenge = challenge(&a.realm).ok_or_else(|| {
        field(
            "realm",
            format!(
                "`{}` cannot be a header value (control characters)",
                a.realm
            ),
        )
    })?;
    if a.htpasswd.is_empty() {
        return Err(field("htpasswd", "is empty".into()));
    }
    let path = base.join(&a.htpasswd);
    let shown = path.display();
    let text = super::source::read_bounded(&path, MAX_BYTES)
        .map_err(|e| field("htpasswd", format!("cannot read {shown}: {e}")))?;
    let file = Htpasswd::parse(&text).map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("{shown}:{}: {}", e.line, e.reason))
            .collect();
        field("htpasswd", lines.join("; "))
    })?;
    if file.is_empty() {
        return Err(field("htpasswd", format!("{shown} has no users")));
    }
    Ok(Arc::new(BasicAuth::new(
        a.realm.clone(),
        challenge,
        path,
        a.forward_authorization.unwrap_or(false),
        file,
    )))
}
