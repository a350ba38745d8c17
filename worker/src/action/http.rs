//! Sending a prepared request: the shared connection pool, the run's
//! headers, the capped body read and the classified result.
//!
//! The run's request goes through hyper's pooled client
//! (`hyper_util::client::legacy`, the client reqwest itself wraps) over
//! hyper-rustls, not through reqwest: reqwest wraps every client in
//! tower-http's redirect layer, whose `on_request` prints each request's
//! `Uri` and parses it again with the `url` crate, and clones its retry
//! and service stack, on every request even with redirects off. Sending
//! through hyper directly cut the worker's CPU per fire by a third at
//! 10,000 activities (A/B in docs/performance.md). Here the target is parsed once per
//! activity ([`prepare`](super::prepare)), and a send only builds the
//! request around it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::prepare::{Fields, Preflight, PreparedRequest, Sendable};
use super::{CONNECT_TIMEOUT, DEFAULT_MAX_BODY, PREFLIGHT_TIMEOUT, SNAPSHOT_TEXT_LIMIT};
use crate::classify::{Classification, Exchange, classify};
use crate::definition::ResultSpec;
use crate::run::{ErrorCode, Source};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const SCHEDULED_FOR: &str = "x-actcore-scheduled-for";
const SOURCE: &str = "x-actcore-source";
/// What reqwest sent, and what peers and their logs already know.
const AGENT: HeaderValue = HeaderValue::from_static(concat!("actcore/", env!("CARGO_PKG_VERSION")));
const ANY: HeaderValue = HeaderValue::from_static("*/*");

/// Facts about the run that the remote receives as headers, so it can
/// deduplicate retries (`Idempotency-Key`) and tell who fired it.
#[derive(Clone, Debug)]
pub struct RunHeaders {
    pub run_id: uuid::Uuid,
    /// `None` for manual runs: the header is then omitted.
    pub scheduled_for: Option<jiff::Timestamp>,
    pub source: Source,
}

/// Sends prepared requests. One per process: it owns the connection pool.
#[derive(Clone, Debug)]
pub struct HttpExecutor {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    max_body: usize,
}

impl Default for HttpExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpExecutor {
    /// A client with a 5 s connect timeout, no redirects (a POST redirect
    /// would become a GET elsewhere; classification reports 3xx instead),
    /// HTTP/2 where TLS negotiates it, and no overall timeout: each
    /// request carries its action's.
    ///
    /// # Panics
    /// Only if the TLS backend cannot initialise, which is a broken build,
    /// not something a definition or a peer can cause.
    pub fn new() -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_keepalive(Some(Duration::from_secs(30)));
        tcp.set_nodelay(true);
        // The TLS layer above it takes https://.
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .expect("the HTTP client (TLS backend) initialises")
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            // Keep every connection of a burst for the next instant: the worker
            // sends at most 256 requests at once (worker::MAX_CONCURRENT_REQUESTS),
            // so this bounds the idle sockets too; with 4, a thousand activities
            // due together opened ~930 new connections every instant.
            .pool_max_idle_per_host(256)
            .build(connector);
        HttpExecutor {
            client,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Overrides the response body cap (tests; peers with large answers).
    pub fn with_max_body(self, n: usize) -> Self {
        HttpExecutor { max_body: n, ..self }
    }

    /// Runs the preflight (if any) and the request, and classifies what
    /// came back. actcore's own headers win over a definition's header of
    /// the same name. `duration_ms` covers the preflight too; the action's
    /// timeout covers the whole exchange, body included.
    pub async fn execute(&self, req: &PreparedRequest, run: &RunHeaders, spec: &ResultSpec) -> ActionReport {
        let started = Instant::now();
        let elapsed = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let no_response = |code: ErrorCode, message: String, http_status: Option<u16>| ActionReport {
            classification: classify(spec, &Exchange::NoResponse { code, message }),
            http_status,
            duration_ms: elapsed(),
            body_text: None,
            truncated: false,
        };

        let rebuilt;
        let send = if req.sendable.matches(req) {
            &req.sendable
        } else {
            match Sendable::of(Fields::of(req), req.body.as_deref()) {
                Ok(s) => {
                    rebuilt = s;
                    &rebuilt
                }
                Err(message) => return no_response(ErrorCode::Config, message, None),
            }
        };
        if let Some(preflight) = &send.preflight
            && let Err(message) = self.preflight(preflight, req.timeout.min(PREFLIGHT_TIMEOUT)).await
        {
            return no_response(ErrorCode::Preflight, message, None);
        }
        let headers = match request_headers(send, run) {
            Ok(h) => h,
            Err(message) => return no_response(ErrorCode::Config, message, None),
        };
        let body = send.body.clone().unwrap_or_default();
        let request = request(req.method.clone(), send.uri.clone(), headers, body);
        let what = send.what.as_str();
        let deadline = tokio::time::Instant::now() + req.timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return no_response(ErrorCode::Transport, describe_error(what, &e), None),
            Err(_) => return no_response(ErrorCode::Timeout, timed_out(what, req.timeout), None),
        };
        let status = response.status().as_u16();
        let reading = || format!("{what} (reading the HTTP {status} body)");
        let (body, truncated) =
            match tokio::time::timeout_at(deadline, read_capped(response.into_body(), self.max_body)).await {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => return no_response(ErrorCode::Transport, describe_error(&reading(), &e), Some(status)),
                Err(_) => return no_response(ErrorCode::Timeout, timed_out(&reading(), req.timeout), Some(status)),
            };
        let classification = classify(
            spec,
            &Exchange::Response {
                status,
                body: &body,
                truncated,
            },
        );
        let body_text = (classification.body.is_none() && !body.is_empty())
            .then(|| String::from_utf8_lossy(&body[..body.len().min(SNAPSHOT_TEXT_LIMIT)]).into_owned());
        ActionReport {
            classification,
            http_status: Some(status),
            duration_ms: elapsed(),
            body_text,
            truncated,
        }
    }

    /// A GET that must answer 2xx within `timeout`; `Err` is the
    /// operator-facing reason.
    async fn preflight(&self, preflight: &Preflight, timeout: Duration) -> Result<(), String> {
        let mut headers = HeaderMap::with_capacity(3);
        if let Some(auth) = &preflight.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        default_headers(&mut headers);
        let request = request(Method::GET, preflight.uri.clone(), headers, Bytes::new());
        let what = preflight.what.as_str();
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(r)) if r.status().is_success() => Ok(()),
            Ok(Ok(r)) => Err(format!("{what}: HTTP {}", r.status())),
            Ok(Err(e)) => Err(describe_error(what, &e)),
            Err(_) => Err(timed_out(what, timeout)),
        }
    }
}

fn request(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request
}

fn request_headers(send: &Sendable, run: &RunHeaders) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(send.headers.len() + 5);
    for (name, value) in &send.headers {
        map.insert(name.clone(), value.clone());
    }
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = run.run_id.hyphenated().encode_lower(&mut id);
    let text = |s: &str| HeaderValue::from_str(s).map_err(|e| format!("internal header value: {e}"));
    map.insert(IDEMPOTENCY_KEY, text(id)?);
    map.insert(SOURCE, HeaderValue::from_static(run.source.as_str()));
    if let Some(at) = run.scheduled_for {
        // jiff prints a Timestamp as RFC 3339 in UTC (`...Z`).
        map.insert(SCHEDULED_FOR, text(&at.to_string())?);
    }
    default_headers(&mut map);
    Ok(map)
}

/// `User-Agent` and `Accept` unless the definition set its own.
fn default_headers(map: &mut HeaderMap) {
    map.entry(USER_AGENT).or_insert(AGENT);
    map.entry(ACCEPT).or_insert(ANY);
}

fn timed_out(what: &str, timeout: Duration) -> String {
    format!("{what}: no complete response within {timeout:?}")
}

/// Reads at most `max` bytes of the body; `true` when there was more. A
/// declared length over the cap is known to be truncated up front, so only
/// the snapshot's prefix is read.
async fn read_capped(mut body: Incoming, max: usize) -> Result<(Vec<u8>, bool), hyper::Error> {
    let declared = body.size_hint().exact();
    let declared_over = declared.is_some_and(|n| n > max as u64);
    let keep = if declared_over {
        max.min(SNAPSHOT_TEXT_LIMIT)
    } else {
        max
    };
    let capacity = declared
        .map_or(8 * 1024, |n| usize::try_from(n).unwrap_or(usize::MAX))
        .min(keep);
    let mut out = Vec::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue; // trailers
        };
        let room = keep - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, true));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, declared_over))
}

/// The error's whole cause chain after `what`, each distinct message
/// once: "POST http://… : client error (Connect): tcp connect error:
/// Connection refused (os error 111)".
fn describe_error(what: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    format!("{what}: {}", parts.join(": "))
}

/// One attempt's result: the classification for the run row, and the
/// request/response facts for `context_snapshot`.
#[derive(Clone, Debug)]
pub struct ActionReport {
    pub classification: Classification,
    /// `None` when no response arrived.
    pub http_status: Option<u16>,
    pub duration_ms: u64,
    /// The body as text when it was not JSON, truncated to ~4 KiB for the snapshot.
    pub body_text: Option<String>,
    /// The body exceeded the size cap.
    pub truncated: bool,
}
