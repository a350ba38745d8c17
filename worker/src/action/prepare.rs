//! Resolving a definition's request ahead of the instant: `${VAR}`s, the
//! rendered body, the checked URL and headers, and the snapshot's request
//! part, so that a send only sends.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Uri};
use url::Url;

use crate::definition::ActionSpec;
use crate::template::{render_json, render_with};

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
    /// What every send repeats, done once: `url` and `preflight` parsed
    /// into their targets, the headers (the definition's, the content type,
    /// the URL's user info as Basic auth) validated, the body shared.
    pub(super) sendable: Sendable,
}

#[derive(Clone)]
pub(super) struct Sendable {
    /// The request target: `url` without its user info and fragment.
    pub(super) uri: Uri,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) body: Option<bytes::Bytes>,
    /// "METHOD url", password masked: the start of every error message.
    pub(super) what: String,
    /// The preflight GET, resolved like the request itself.
    pub(super) preflight: Option<Preflight>,
    /// The snapshot's `request` part ([`crate::snapshot::request_part`]).
    snapshot: crate::snapshot::Stored,
    /// What it was built from: a request whose public fields were edited
    /// after [`prepare`] is rebuilt at send time instead.
    from: Fields,
}

/// A preflight's target, its Basic auth (from the URL's user info) and
/// "preflight GET url" for its messages.
#[derive(Clone)]
pub(super) struct Preflight {
    pub(super) uri: Uri,
    pub(super) auth: Option<HeaderValue>,
    pub(super) what: String,
}

/// The public fields of a [`PreparedRequest`] that a [`Sendable`] is built from.
#[derive(Clone)]
pub(super) struct Fields {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body_sha256: Option<String>,
    preflight: Option<String>,
}

impl Sendable {
    /// Everything a send needs, built from `from` (the request's public
    /// fields) and its body; `Err` is a `config` message naming the key.
    pub(super) fn of(from: Fields, body: Option<&[u8]>) -> Result<Sendable, String> {
        let (uri, auth) = target(&from.url).map_err(|e| format!("action.url: {e}"))?;
        let preflight = match &from.preflight {
            Some(url) => {
                let (uri, auth) = target(url).map_err(|e| format!("action.preflight: {e}"))?;
                let what = format!("preflight GET {}", redact_url(url));
                Some(Preflight { uri, auth, what })
            }
            None => None,
        };
        Ok(Sendable {
            snapshot: crate::snapshot::request_part(from.method.as_str(), &from.url, body, from.body_sha256.as_deref()),
            uri,
            headers: fixed_headers(&from.headers, body.is_some(), auth)?,
            body: body.map(bytes::Bytes::copy_from_slice),
            what: format!("{} {}", from.method, redact_url(&from.url)),
            preflight,
            from,
        })
    }

    pub(super) fn matches(&self, req: &PreparedRequest) -> bool {
        self.from.method == req.method
            && self.from.url == req.url
            && self.from.headers == req.headers
            && self.from.body_sha256 == req.body_sha256
            && self.from.preflight == req.preflight
            && self.body.as_deref() == req.body.as_deref()
    }
}

impl Fields {
    pub(super) fn of(req: &PreparedRequest) -> Fields {
        Fields {
            method: req.method.clone(),
            url: req.url.clone(),
            headers: req.headers.clone(),
            body_sha256: req.body_sha256.clone(),
            preflight: req.preflight.clone(),
        }
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
    // Rendered here; the URLs and headers are checked once, where they
    // are parsed for sending ([`Sendable::of`]).
    let url = render_with(&action.url, &mut lookup).map_err(|e| format!("action.url: {e}"))?;
    let preflight = match &action.preflight {
        Some(p) => Some(render_with(p, &mut lookup).map_err(|e| format!("action.preflight: {e}"))?),
        None => None,
    };
    let mut headers = Vec::with_capacity(action.headers.len());
    for (name, template) in &action.headers {
        let value = render_with(template, &mut lookup).map_err(|e| format!("action.headers.{name}: {e}"))?;
        headers.push((name.clone(), value));
    }
    let body = match &action.body {
        Some(b) => {
            let rendered = render_json(b, &mut lookup).map_err(|e| format!("action.body: {e}"))?;
            Some(serde_json::to_vec(&rendered).map_err(|e| format!("action.body: {e}"))?)
        }
        None => None,
    };
    let body_sha256 = body.as_deref().map(crate::definition::sha256_hex);
    let from = Fields {
        method,
        url,
        headers,
        body_sha256,
        preflight,
    };
    let sendable = Sendable::of(from.clone(), body.as_deref())?;
    let Fields {
        method,
        url,
        headers,
        body_sha256,
        preflight,
    } = from;
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

/// The request target of `url`, which must be an absolute http(s) URL
/// (user info and fragment removed, as a browser or reqwest sends it),
/// and the user info as a Basic `Authorization` value (percent-decoded,
/// marked sensitive so it is never logged). `Err` says why, without the
/// password.
fn target(url: &str) -> Result<(Uri, Option<HeaderValue>), String> {
    let mut parsed = Url::parse(url).map_err(|e| format!("`{}` is not a valid URL: {e}", redact_url(url)))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(format!("`{}` is not an absolute http(s) URL", redact_url(url)));
    }
    let auth = basic_auth(&parsed);
    if auth.is_some() {
        // Only fails for URLs that cannot have user info, which `auth` rules out.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
    }
    parsed.set_fragment(None);
    let uri = parsed
        .as_str()
        .parse::<Uri>()
        .map_err(|e| format!("`{}` is not a valid request target: {e}", redact_url(url)))?;
    Ok((uri, auth))
}

fn basic_auth(url: &Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let pair = format!("{}:{}", decode(url.username()), decode(url.password().unwrap_or("")));
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
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

/// The headers every request of a definition carries: its own (checked
/// here), the content type of a JSON body, and the URL's user
/// info as Basic auth unless the definition sets `Authorization` itself.
fn fixed_headers(
    headers: &[(String, String)],
    json_body: bool,
    auth: Option<HeaderValue>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        let key = format!("action.headers.{name}");
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{key}: not a valid header name"))?;
        // The value is not quoted: it may hold a secret.
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("{key}: the resolved value is not a valid header value (control characters?)"))?;
        out.push((name, value));
    }
    if json_body {
        out.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    }
    if let Some(auth) = auth
        && !out.iter().any(|(name, _)| name == AUTHORIZATION)
    {
        out.push((AUTHORIZATION, auth));
    }
    Ok(out)
}
