//! The HTTP executor: one attempt of an `http` action, reduced to a
//! [`Classification`] and the request/response facts the snapshot keeps.
//!
//! Work is split so the instant itself stays cheap: [`prepare`] resolves
//! `${VAR}`s, renders and serialises the body and checks the URL and
//! headers ahead of time; [`HttpExecutor::execute`] only sends. Every
//! failure becomes a classified outcome: nothing here panics or returns an
//! error to the scheduler.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, Url};

use crate::classify::{Classification, Exchange, classify};
use crate::definition::{ActionSpec, ResultSpec};
use crate::run::{ErrorCode, Source};
use crate::template::{render_json, render_with};

/// Default cap on a response body: a sweep result is a few KiB, so 1 MiB
/// only stops a misbehaving peer from filling memory.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// How much of a non-JSON or truncated body the snapshot keeps as text.
pub const SNAPSHOT_TEXT_LIMIT: usize = 4 * 1024;
/// Upper bound of the preflight's timeout: it is a fast-fail probe.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting is bounded separately from the action's (long) timeout so an
/// unreachable host fails in seconds, not after `action.timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const SCHEDULED_FOR: &str = "x-actcore-scheduled-for";
const SOURCE: &str = "x-actcore-source";

/// Everything about a request that can be resolved before the instant (off the hot path).
#[derive(Clone)]
pub struct PreparedRequest {
    pub method: Method,
    /// Rendered and checked to be an absolute http(s) URL.
    pub url: String,
    /// The definition's headers, rendered and checked to be valid.
    pub headers: Vec<(String, String)>,
    /// The rendered body, serialised once, sent as `application/json`
    /// (the snapshot parses it back: a `Value` kept per activity cost
    /// ~630 bytes each, 6 MB at 10,000 activities).
    pub body: Option<Vec<u8>>,
    /// Hex SHA-256 of `body`: the snapshot's fingerprint of a large body.
    pub body_sha256: Option<String>,
    pub timeout: Duration,
    /// Rendered preflight URL: a GET that must answer 2xx before the main call.
    pub preflight: Option<String>,
    /// What every send repeats, done once: `url` parsed, the headers
    /// (the definition's and the content type) validated, the body shared.
    sendable: Sendable,
}

#[derive(Clone)]
struct Sendable {
    url: Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<bytes::Bytes>,
    /// "METHOD url", password masked: the start of every error message.
    what: String,
    /// The snapshot's `request` part ([`crate::snapshot::request_part`]).
    snapshot: crate::snapshot::Stored,
    /// What it was built from: a request whose public fields were edited
    /// after [`prepare`] is rebuilt at send time instead.
    from: (Method, String, Vec<(String, String)>, Option<String>),
}

impl Sendable {
    fn of(
        method: &Method,
        url: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
        body_sha256: Option<&str>,
    ) -> Result<Sendable, String> {
        Ok(Sendable {
            snapshot: crate::snapshot::request_part(method.as_str(), url, body, body_sha256),
            url: Url::parse(url).map_err(|e| format!("action.url: `{}` is not a valid URL: {e}", redact_url(url)))?,
            headers: fixed_headers(headers, body.is_some())?,
            body: body.map(bytes::Bytes::copy_from_slice),
            what: format!("{method} {}", redact_url(url)),
            from: (
                method.clone(),
                url.to_string(),
                headers.to_vec(),
                body_sha256.map(str::to_string),
            ),
        })
    }

    fn matches(&self, req: &PreparedRequest) -> bool {
        self.from.0 == req.method
            && self.from.1 == req.url
            && self.from.2 == req.headers
            && self.from.3 == req.body_sha256
            && self.body.as_deref() == req.body.as_deref()
    }
}

impl PreparedRequest {
    /// The snapshot's `request` part: serialised once by [`prepare`], built
    /// again only for a request whose fields were edited since.
    pub fn snapshot_part(&self) -> std::borrow::Cow<'_, serde_json::value::RawValue> {
        match self.sendable.matches(self) {
            true => std::borrow::Cow::Borrowed(&self.sendable.snapshot),
            false => std::borrow::Cow::Owned(crate::snapshot::request_part(
                self.method.as_str(),
                &self.url,
                self.body.as_deref(),
                self.body_sha256.as_deref(),
            )),
        }
    }
}

impl fmt::Debug for PreparedRequest {
    /// Header values are left out: they are where tokens live.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("body", &self.body.as_deref().map(String::from_utf8_lossy))
            .field("timeout", &self.timeout)
            .field("preflight", &self.preflight.as_deref().map(redact_url))
            .finish()
    }
}

/// Resolves `${VAR}` with `lookup` and checks the result, so a missing
/// variable or a bad URL is found before the instant. `Err` is a message
/// naming the key (and the variable); the caller records an automation
/// error `config`.
pub fn prepare(action: &ActionSpec, mut lookup: impl FnMut(&str) -> Option<String>) -> Result<PreparedRequest, String> {
    let method = Method::from_bytes(action.method.as_bytes())
        .map_err(|_| format!("action.method: `{}` is not an HTTP method", action.method))?;
    let url = render_with(&action.url, &mut lookup).map_err(|e| format!("action.url: {e}"))?;
    check_url("action.url", &url)?;
    let preflight = match &action.preflight {
        Some(p) => {
            let p = render_with(p, &mut lookup).map_err(|e| format!("action.preflight: {e}"))?;
            check_url("action.preflight", &p)?;
            Some(p)
        }
        None => None,
    };
    let mut headers = Vec::with_capacity(action.headers.len());
    for (name, template) in &action.headers {
        let key = format!("action.headers.{name}");
        let value = render_with(template, &mut lookup).map_err(|e| format!("{key}: {e}"))?;
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{key}: not a valid header name"))?;
        // The value is not quoted: it may hold a secret.
        HeaderValue::from_str(&value)
            .map_err(|_| format!("{key}: the resolved value is not a valid header value (control characters?)"))?;
        headers.push((name.clone(), value));
    }
    let body = match &action.body {
        Some(b) => {
            let rendered = render_json(b, &mut lookup).map_err(|e| format!("action.body: {e}"))?;
            Some(serde_json::to_vec(&rendered).map_err(|e| format!("action.body: {e}"))?)
        }
        None => None,
    };
    let body_sha256 = body.as_deref().map(|b| {
        use sha2::Digest;
        sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
    });
    let sendable = Sendable::of(&method, &url, &headers, body.as_deref(), body_sha256.as_deref())?;
    Ok(PreparedRequest {
        method,
        url,
        headers,
        body,
        body_sha256,
        timeout: action.timeout.std(),
        preflight,
        sendable,
    })
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("{key}: `{}` is not a valid URL: {e}", redact_url(url)))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(format!("{key}: `{}` is not an absolute http(s) URL", redact_url(url)));
    }
    Ok(())
}

/// The URL with its password (if any) masked, for messages and the
/// snapshot. Textual, so it also works on a URL that does not parse.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    match authority[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &url[scheme_end + at..]
        ),
        None => url.to_string(),
    }
}

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

/// The headers every request of a definition carries: its own (checked
/// by [`prepare`]) and the content type of a JSON body.
fn fixed_headers(headers: &[(String, String)], json_body: bool) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        let key = format!("action.headers.{name}");
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{key}: not a valid header name"))?;
        let value = HeaderValue::from_str(value).map_err(|_| format!("{key}: not a valid header value"))?;
        out.push((name, value));
    }
    if json_body {
        out.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    }
    Ok(out)
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

#[cfg(test)]
mod tests;
