//! Fields the proxy adds to a request for its upstream that nothing on
//! the way reads (a request ID, a `traceparent`). They are written where
//! the request goes out: already encoded, after the request's own fields,
//! by hyper's encoder on an HTTP/1.1 connection that takes the request in
//! place (inserting a non-standard name in a `HeaderMap` costs about 250
//! instructions: hashing it byte by byte, probing, moving the entries);
//! inserted in its fields on any other way out.

use http::HeaderMap;

/// Fields added where a request goes out (see the module doc).
pub(crate) trait Added {
    /// Appends each field to `dst` as `name: value\r\n`. Names and values
    /// must be valid (hyper writes the bytes as they are).
    fn encode(&self, dst: &mut Vec<u8>);
    /// Inserts each field in `h`, replacing any of the same name.
    fn insert(&self, h: &mut HeaderMap);
}

/// `name: value\r\n`, in the pieces hyper's `Service::extra` writes.
pub(crate) fn field<'a>(name: &'a [u8], value: &'a [u8]) -> [&'a [u8]; 4] {
    [name, b": ", value, b"\r\n"]
}

/// Appends `name: value\r\n` to `dst`.
pub(crate) fn encode_field(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.reserve(name.len() + value.len() + 4);
    for piece in field(name, value) {
        dst.extend_from_slice(piece);
    }
}
