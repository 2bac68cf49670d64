//! An in-process OTLP trace receiver on 127.0.0.1 that decodes the real protobuf: OTLP/HTTP
//! (`POST /v1/traces`, `application/x-protobuf`) and OTLP/gRPC (h2c, served by the
//! `TraceService` that `opentelemetry-proto` generates), both on one port.

use super::eventually_notified;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tower_service::Service as _;

/// One span as the receiver decoded it (ids in lowercase hex, as in a `traceparent`).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `http` or `grpc`.
    pub via: &'static str,
    /// `service.name` of the span's resource.
    pub service: String,
    pub name: String,
    /// The protobuf `SpanKind` (2 server, 3 client, 5 consumer).
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    /// Names of the span's events (the log events recorded inside it).
    pub events: Vec<String>,
    /// The protobuf status code (0 unset, 1 ok, 2 error).
    pub status: i32,
}

type Store = Arc<Mutex<Vec<ReceivedSpan>>>;

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    spans: Store,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn record(store: &Store, notify: &Notify, via: &'static str, req: ExportTraceServiceRequest) {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    via,
                    service: service.clone(),
                    name: s.name,
                    kind: s.kind,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    attributes: s.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect(),
                    events: s.events.iter().map(|e| e.name.clone()).collect(),
                    status: s.status.map_or(0, |st| st.code),
                });
            }
        }
    }
    store.lock().unwrap().extend(out);
    notify.notify_waiters();
}

#[derive(Clone)]
struct Collector {
    spans: Store,
    notify: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        record(&self.spans, &self.notify, "grpc", request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn plain(status: u16, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed_unsync());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Store = Arc::default();
        let notify = Arc::new(Notify::new());
        let collector = Collector { spans: spans.clone(), notify: notify.clone() };
        let grpc = TraceServiceServer::new(collector.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (collector, grpc) = (collector.clone(), grpc.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (collector, mut grpc) = (collector.clone(), grpc.clone());
                        async move {
                            if req.uri().path().starts_with("/opentelemetry.proto.collector.trace.v1.TraceService/") {
                                let resp = grpc.call(req).await.unwrap_or_else(|e| match e {});
                                return Ok::<_, hyper::Error>(resp.map(|b| b.map_err(Into::into).boxed_unsync()));
                            }
                            if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
                                return Ok(plain(404, "text/plain", b"not an OTLP traces path".to_vec()));
                            }
                            let body = req.into_body().collect().await?.to_bytes();
                            match ExportTraceServiceRequest::decode(body) {
                                Ok(decoded) => {
                                    record(&collector.spans, &collector.notify, "http", decoded);
                                    let answer = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                                    Ok(plain(200, "application/x-protobuf", answer))
                                }
                                Err(e) => Ok(plain(400, "text/plain", format!("not OTLP protobuf: {e}").into_bytes())),
                            }
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { addr, spans, notify, task }
    }

    /// `http://127.0.0.1:<port>`: the collector base URL for either protocol.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received so far; on timeout, panics listing them.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let timeout = Duration::from_secs(30);
        eventually_notified(what, timeout, &self.notify, || self.spans(), |got| done(got), |got| format!("{got:#?}"))
            .await
    }
}
