//! Passwords out of database URLs, for every message that names one.

/// Redacts every password from a database URL for messages: the userinfo's
/// (`postgres://user:***@host`) and any password-like query parameter
/// (`?password=***`, `sslpassword`, `passwd`, `pwd`, `secret`, `token`, ...).
/// Textual, so it also works on a URL that does not parse; when in doubt it
/// hides too much rather than too little.
pub fn redact_url(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let query_at = url[after_scheme..].find('?').map(|i| after_scheme + i);
    let (head, query) = url.split_at(query_at.unwrap_or(url.len()));
    let mut out = String::with_capacity(url.len());
    // The userinfo ends at the last `@` before the query (a password may hold `@`).
    match (after_scheme > 0, head[after_scheme..].rfind('@')) {
        (true, Some(at)) => {
            let userinfo = &head[after_scheme..after_scheme + at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(&head[..after_scheme]);
                    out.push_str(user);
                    out.push_str(":***");
                    out.push_str(&head[after_scheme + at..]);
                }
                None => out.push_str(head),
            }
        }
        _ => out.push_str(head),
    }
    let Some(params) = query.strip_prefix('?') else {
        return out;
    };
    out.push('?');
    for (i, param) in params.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match param.split_once('=') {
            Some((key, _)) if password_like(key) => {
                out.push_str(key);
                out.push_str("=***");
            }
            _ => out.push_str(param),
        }
    }
    out
}

/// A query parameter that may carry a secret (`password`, `sslpassword`,
/// `PassWord`, `pass%77ord`, ...).
fn password_like(key: &str) -> bool {
    let bytes = key.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], escaped) {
            (b'%', Some(b)) => {
                decoded.push(b);
                i += 3;
            }
            (b, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let key = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    key == "pass"
        || ["password", "passwd", "pwd", "secret", "token"]
            .iter()
            .any(|w| key.contains(w))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn fault9_passwords_are_redacted_in_the_userinfo_and_the_query() {
        for (url, expected) in [
            ("postgres://u:secret@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:se@cr:et@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db?password=secret", "postgres://u@h/db?password=***"),
            (
                "postgres://h/db?password=se@cret&sslmode=require",
                "postgres://h/db?password=***&sslmode=require",
            ),
            (
                "postgres://u:a@h/db?sslmode=verify-full&sslpassword=secret&PASSWORD=secret",
                "postgres://u:***@h/db?sslmode=verify-full&sslpassword=***&PASSWORD=***",
            ),
            ("postgres://h/db?pass%77ord=secret", "postgres://h/db?pass%77ord=***"),
            ("postgres://h/db?user=u&pass=secret", "postgres://h/db?user=u&pass=***"),
            (
                "postgres://h/db?application_name=x",
                "postgres://h/db?application_name=x",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("sqlite://.actcore/actcore.db", "sqlite://.actcore/actcore.db"),
            ("not a url password=secret", "not a url password=secret"),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
            if url.contains("secret") && url.contains("://") {
                assert!(!redact_url(url).contains("secret"), "{url}");
            }
        }
    }
}
