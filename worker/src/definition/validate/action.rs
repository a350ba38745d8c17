//! Validation of `[action]` (method, URL, body, headers, timeout, preflight) and
//! `[result]` (the JSON pointers that classify a response).

use super::*;

impl Validator<'_> {
    pub(super) fn action(&mut self, a: raw::Action) -> Option<ActionSpec> {
        let kind = match a.kind.as_deref().unwrap_or("http") {
            "http" => ActionKind::Http,
            other => {
                self.push("action.kind", format!("unknown action kind `{other}`"), "use \"http\"");
                ActionKind::Http
            }
        };
        let method = a.method.unwrap_or_else(|| "POST".into()).to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            self.push(
                "action.method",
                format!("unsupported method `{method}`"),
                "use GET, POST, PUT, PATCH or DELETE",
            );
        }
        let url = self.required(
            a.url,
            "action.url",
            "add `url = \"${STATE_HUB_URL}/...\"`: an http action needs a url",
        );
        for (key, value) in [
            ("action.url", url.as_deref()),
            ("action.preflight", a.preflight.as_deref()),
        ] {
            if let Some(v) = value {
                self.url(key, v);
            }
        }
        let body = a
            .body
            .map(|b| serde_json::to_value(b).expect("TOML values are JSON values"));
        let timeout = self.duration(a.timeout, "action.timeout", TIMEOUT);
        for name in a.headers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                self.push(
                    &format!("action.headers.{name}"),
                    "not a valid header name",
                    "use letters, digits and dashes",
                );
            }
        }
        Some(ActionSpec {
            kind,
            method,
            url: url?,
            body,
            headers: a.headers,
            timeout: timeout?,
            preflight: a.preflight,
        })
    }

    pub(super) fn url(&mut self, key: &str, value: &str) {
        if let Err(e) = template::check_syntax(value) {
            self.push(
                key,
                e,
                "write variables as ${NAME} with letters, digits and underscores",
            );
            return;
        }
        // A leading ${VAR} holds the scheme and host: only `check --env` and
        // the worker, which resolve it, can check the URL.
        if value.starts_with("${") {
            return;
        }
        let Some(rest) = value.strip_prefix("http://").or_else(|| value.strip_prefix("https://")) else {
            self.push(
                key,
                format!("`{value}` is not an http(s) URL"),
                "start with http://, https:// or a ${VAR} holding one",
            );
            return;
        };
        // Variables after the scheme stand for some text; the rest must be a URL with a host.
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let sample = template::render_with(value, |_| Some("1".into())).unwrap_or_default();
        let problem = if host.is_empty() || host.starts_with(':') {
            Some("has no host".to_string())
        } else {
            url::Url::parse(&sample)
                .err()
                .map(|e| format!("is not a valid URL: {e}"))
        };
        if let Some(p) = problem {
            self.push(
                key,
                format!("`{value}` {p}"),
                "write a full URL such as \"http://state-hub:8080/health\" or \"${STATE_HUB_URL}/health\"",
            );
        }
    }

    pub(super) fn result(&mut self, r: raw::Result, slug: &str) -> ResultSpec {
        let snapshot_key = r.snapshot_key.unwrap_or_else(|| slug.replace('-', "_"));
        if snapshot_key.is_empty() {
            self.push(
                "result.snapshot_key",
                "must not be empty",
                "set e.g. `snapshot_key = \"consistency_sweep_remote_all\"`",
            );
        }
        ResultSpec {
            snapshot_key,
            automation_error: self.pointer(r.automation_error, "result.automation_error", "/automation_error"),
            assessment_failures: self.pointer(
                r.assessment_failures,
                "result.assessment_failures",
                "/assessment_failures",
            ),
            lock_skipped: self.pointer(r.lock_skipped, "result.lock_skipped", "/lock_skipped"),
            exit_code: self.pointer(r.exit_code, "result.exit_code", "/exit_code"),
        }
    }
}
