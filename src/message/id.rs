//! A request's ID as the proxy carries it: one it made (32 hex digits,
//! kept as bytes) or a client's it trusts (the field's value). Made ones
//! become a `HeaderValue` only where one goes in a field map: most go out
//! as bytes (`Added::encode`, hyper's `Service::extra`), and checking and
//! allocating a value per request cost about 200 instructions.

use http::HeaderValue;

/// A request's ID (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Id {
    /// Made by the proxy: lowercase hex digits.
    New([u8; 32]),
    /// A field's value: a client's ID the proxy keeps (1 to 200 visible
    /// ASCII characters), or one read back from a request's fields.
    Kept(HeaderValue),
}

impl Id {
    /// Its bytes, as they go in a field.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Id::New(b) => b,
            Id::Kept(v) => v.as_bytes(),
        }
    }

    /// As text (for the logs); `None` for a value that is not (which
    /// kept IDs never are).
    pub(crate) fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }

    /// As a field value, for a field map.
    pub(crate) fn value(&self) -> HeaderValue {
        match self {
            // Hex digits are always a valid field value.
            Id::New(b) => HeaderValue::from_bytes(b).unwrap_or(HeaderValue::from_static("-")),
            Id::Kept(v) => v.clone(),
        }
    }
}

impl PartialEq<&str> for Id {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
