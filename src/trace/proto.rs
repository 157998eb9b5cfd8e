//! The OTLP messages the exporter sends: the subset of
//! opentelemetry-proto's `collector/trace/v1/trace_service.proto`,
//! `trace/v1/trace.proto`, `common/v1/common.proto` and
//! `resource/v1/resource.proto` that a span of ours uses, with their field
//! numbers and types. prost does the encoding (fields left out here are
//! simply never sent; links, array and key-list values are not used).
//!
//! These types only encode, and two of them are declared for that with
//! the wire format in mind: attribute keys and string values are `bytes`
//! fields of the string fields' numbers (both are length-delimited, the
//! same bytes on the wire), so a static key or a moved string costs no
//! copy; and `ScopeSpans.spans` holds each span already encoded (a
//! repeated `bytes` field is written exactly as a repeated message), so
//! the nested lengths of a span are worked out once, not once per level.

use bytes::Bytes;

/// `ExportTraceServiceRequest`: the body of a POST to `/v1/traces`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub(crate) resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub(crate) attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub(crate) scope: Option<InstrumentationScope>,
    /// Each an encoded [`Span`].
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub(crate) spans: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) version: String,
}

/// `Span.SpanKind.SPAN_KIND_SERVER`.
pub(crate) const SPAN_KIND_SERVER: i32 = 2;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
pub(crate) const STATUS_CODE_ERROR: i32 = 2;
/// `SpanFlags`: the W3C flags in the low byte, and whether the parent
/// is remote known (`0x100`) and true (`0x200`).
pub(crate) const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
pub(crate) const FLAGS_IS_REMOTE: u32 = 0x200;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub(crate) trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub(crate) parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub(crate) name: String,
    #[prost(int32, tag = "6")]
    pub(crate) kind: i32,
    #[prost(fixed64, tag = "7")]
    pub(crate) start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub(crate) end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub(crate) attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "11")]
    pub(crate) events: Vec<Event>,
    #[prost(message, optional, tag = "15")]
    pub(crate) status: Option<Status>,
    #[prost(fixed32, tag = "16")]
    pub(crate) flags: u32,
}

/// `Span.Event`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Event {
    #[prost(fixed64, tag = "1")]
    pub(crate) time_unix_nano: u64,
    #[prost(string, tag = "2")]
    pub(crate) name: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Status {
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(int32, tag = "3")]
    pub(crate) code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KeyValue {
    /// A string field.
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) key: Bytes,
    #[prost(message, optional, tag = "2")]
    pub(crate) value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
    pub(crate) value: Option<Value>,
}

/// `AnyValue.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Value {
    /// `string_value`: UTF-8, a string field.
    #[prost(bytes = "bytes", tag = "1")]
    String(Bytes),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
    #[prost(double, tag = "4")]
    Double(f64),
}

impl KeyValue {
    pub(crate) fn new(key: &'static str, value: Value) -> KeyValue {
        KeyValue {
            key: Bytes::from_static(key.as_bytes()),
            value: Some(AnyValue { value: Some(value) }),
        }
    }
}

impl Value {
    /// A string value, moved (no copy).
    pub(crate) fn text(s: impl Into<String>) -> Value {
        Value::String(Bytes::from(s.into()))
    }

    pub(crate) fn static_text(s: &'static str) -> Value {
        Value::String(Bytes::from_static(s.as_bytes()))
    }
}
