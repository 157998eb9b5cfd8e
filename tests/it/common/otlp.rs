//! An in-test OTLP/HTTP trace receiver: a small hyper server that takes
//! each POST to `/v1/traces`, decodes the `ExportTraceServiceRequest` with
//! prost messages written here from opentelemetry-proto (not the proxy's
//! own, so a wrong field number on either side shows), and keeps its
//! spans.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use prost::Message;

use super::{backend, empty, Backend, HANG};

/// The OTLP messages, as opentelemetry-proto numbers them.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, repeated, tag = "11")]
        pub events: Vec<Event>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(string, tag = "2")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(int32, tag = "3")]
        pub code: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
        pub value: Option<Value>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
    }
}

pub use proto::Value;

/// A span as received, with the resource it came under.
#[derive(Debug, Clone)]
pub struct Got {
    pub span: proto::Span,
    pub service: Option<String>,
}

impl Got {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        match self.attr(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn seconds(&self, key: &str) -> Option<f64> {
        match self.attr(key) {
            Some(Value::Double(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver: decodes each POST to `/v1/traces` and keeps
/// its spans.
pub struct Collector {
    pub backend: Backend,
    pub spans: Arc<Mutex<Vec<Got>>>,
}

pub fn collector() -> Collector {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let backend = backend(move |req: Request<hyper::body::Incoming>| {
        let kept = kept.clone();
        async move {
            assert_eq!(req.method(), "POST");
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let export = proto::ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
            let mut kept = kept.lock().unwrap();
            for rs in export.resource_spans {
                let service = rs.resource.as_ref().and_then(|r| {
                    r.attributes.iter().find_map(|kv| match &kv.value {
                        Some(proto::AnyValue {
                            value: Some(Value::String(s)),
                        }) if kv.key == "service.name" => Some(s.clone()),
                        _ => None,
                    })
                });
                for ss in rs.scope_spans {
                    assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some("tidegate"));
                    for span in ss.spans {
                        kept.push(Got {
                            span,
                            service: service.clone(),
                        });
                    }
                }
            }
            let mut r = http::Response::new(empty());
            r.headers_mut()
                .insert("content-type", "application/x-protobuf".parse().unwrap());
            r
        }
    });
    Collector { backend, spans }
}

impl Collector {
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.backend.addr)
    }

    /// The spans once there are `n` (bounded by HANG).
    pub async fn wait_for(&self, n: usize) -> Vec<Got> {
        tokio::time::timeout(HANG, async {
            loop {
                {
                    let spans = self.spans.lock().unwrap();
                    if spans.len() >= n {
                        break spans.clone();
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} span(s) never arrived"))
    }
}
