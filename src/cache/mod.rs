//! The HTTP cache (temporary stub: the lead replaces this file).

pub(crate) mod policy;
