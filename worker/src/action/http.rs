//! Sending a prepared request: the shared connection pool, the run's
//! headers, the capped body read and the classified result.

use std::time::{Duration, Instant};

use reqwest::Response;
use reqwest::header::{HeaderMap, HeaderValue};

use super::prepare::{PreparedRequest, Sendable, redact_url};
use super::{CONNECT_TIMEOUT, DEFAULT_MAX_BODY, PREFLIGHT_TIMEOUT, SNAPSHOT_TEXT_LIMIT};
use crate::classify::{Classification, Exchange, classify};
use crate::definition::ResultSpec;
use crate::run::{ErrorCode, Source};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const SCHEDULED_FOR: &str = "x-actcore-scheduled-for";
const SOURCE: &str = "x-actcore-source";

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
    client: reqwest::Client,
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
    /// and no overall timeout: each request carries its action's.
    ///
    /// # Panics
    /// Only if the TLS backend cannot initialise, which is a broken build,
    /// not something a definition or a peer can cause.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            // Keep every connection of a burst for the next instant: the worker
            // sends at most 256 requests at once (worker::MAX_CONCURRENT_REQUESTS),
            // so this bounds the idle sockets too; with 4, a thousand activities
            // due together opened ~930 new connections every instant.
            .pool_max_idle_per_host(256)
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("actcore/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client (TLS backend) initialises");
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
    /// the same name. `duration_ms` covers the preflight too.
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

        if let Some(url) = &req.preflight
            && let Err(message) = self.preflight(url, req.timeout.min(PREFLIGHT_TIMEOUT)).await
        {
            return no_response(ErrorCode::Preflight, message, None);
        }
        let rebuilt;
        let send = if req.sendable.matches(req) {
            &req.sendable
        } else {
            match Sendable::of(
                &req.method,
                &req.url,
                &req.headers,
                req.body.as_deref(),
                req.body_sha256.as_deref(),
            ) {
                Ok(s) => {
                    rebuilt = s;
                    &rebuilt
                }
                Err(message) => return no_response(ErrorCode::Config, message, None),
            }
        };
        let headers = match request_headers(send, run) {
            Ok(h) => h,
            Err(message) => return no_response(ErrorCode::Config, message, None),
        };
        let mut builder = self
            .client
            .request(req.method.clone(), send.url.clone())
            .timeout(req.timeout)
            .headers(headers);
        if let Some(body) = &send.body {
            builder = builder.body(body.clone());
        }
        let what = send.what.as_str();
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let (code, message) = describe_error(what, req.timeout, e);
                return no_response(code, message, None);
            }
        };
        let status = response.status().as_u16();
        let (body, truncated) = match read_capped(&mut response, self.max_body).await {
            Ok(read) => read,
            Err(e) => {
                let (code, message) =
                    describe_error(&format!("{what} (reading the HTTP {status} body)"), req.timeout, e);
                return no_response(code, message, Some(status));
            }
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

    /// A GET that must answer 2xx; `Err` is the operator-facing reason.
    async fn preflight(&self, url: &str, timeout: Duration) -> Result<(), String> {
        let what = format!("preflight GET {}", redact_url(url));
        match self.client.get(url).timeout(timeout).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{what}: HTTP {}", r.status())),
            Err(e) => Err(describe_error(&what, timeout, e).1),
        }
    }
}

fn request_headers(send: &Sendable, run: &RunHeaders) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(send.headers.len() + 3);
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
    Ok(map)
}

/// Reads at most `max` bytes of the body; `true` when there was more. A
/// declared length over the cap is known to be truncated up front, so only
/// the snapshot's prefix is read.
async fn read_capped(response: &mut Response, max: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let declared = response.content_length();
    let declared_over = declared.is_some_and(|n| n > max as u64);
    let keep = if declared_over {
        max.min(SNAPSHOT_TEXT_LIMIT)
    } else {
        max
    };
    let capacity = declared
        .map_or(8 * 1024, |n| usize::try_from(n).unwrap_or(usize::MAX))
        .min(keep);
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await? {
        let room = keep - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, declared_over))
}

/// Maps a reqwest error to `timeout` (the action's own deadline), `config`
/// (the request could not be built) or `transport` (connect, DNS, TLS, a
/// dropped connection), with the error's whole cause chain as the message.
fn describe_error(what: &str, timeout: Duration, error: reqwest::Error) -> (ErrorCode, String) {
    // A connect timeout is "could not reach", not the action's deadline.
    if error.is_timeout() && !error.is_connect() {
        return (
            ErrorCode::Timeout,
            format!("{what}: no complete response within {timeout:?}"),
        );
    }
    let code = if error.is_builder() {
        ErrorCode::Config
    } else {
        ErrorCode::Transport
    };
    let error = error.without_url();
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    (code, format!("{what}: {}", parts.join(": ")))
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
