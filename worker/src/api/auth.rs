//! Bearer tokens for the mutating endpoints. `ACTCORE_ADMIN_TOKEN` is one
//! token named `admin`; `ACTCORE_ADMIN_TOKENS` holds `name:token,name:token`
//! (one per operator or tool), and the name becomes the audit row's actor.
//! Compared in constant time; with no token configured every mutating
//! endpoint answers 403 (read-only API).

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::error::{Error, Result};

/// The configured tokens, by name.
#[derive(Clone, Default)]
pub struct Tokens {
    named: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        let names: Vec<&str> = self.named.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// From the two variables' values; a malformed list is a configuration error.
    pub fn parse(single: Option<&str>, list: Option<&str>) -> Result<Tokens> {
        let mut named = Vec::new();
        if let Some(t) = single.map(str::trim).filter(|t| !t.is_empty()) {
            named.push(("admin".to_string(), t.as_bytes().to_vec()));
        }
        for (i, pair) in list.unwrap_or_default().split(',').enumerate() {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            match pair.split_once(':') {
                Some((name, token)) if !name.trim().is_empty() && token.trim().len() >= 8 => {
                    named.push((name.trim().to_string(), token.trim().as_bytes().to_vec()));
                }
                _ => {
                    return Err(Error::Config(format!(
                        "ACTCORE_ADMIN_TOKENS entry {} is not `name:token` with a token of 8 or more characters; \
                         e.g. ACTCORE_ADMIN_TOKENS=alice:$(openssl rand -hex 16),ci:...",
                        i + 1
                    )));
                }
            }
        }
        Ok(Tokens { named })
    }

    /// From `ACTCORE_ADMIN_TOKEN` and `ACTCORE_ADMIN_TOKENS`.
    pub fn from_env() -> Result<Tokens> {
        Tokens::parse(
            std::env::var("ACTCORE_ADMIN_TOKEN").ok().as_deref(),
            std::env::var("ACTCORE_ADMIN_TOKENS").ok().as_deref(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// The name of the token presented, compared in constant time against
    /// every configured token (no early exit on the first match).
    pub fn name_of(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.named {
            if bool::from(token.as_slice().ct_eq(presented)) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The actor for a mutating request: 403 when no token is configured,
    /// 401 without a bearer token or with a wrong one.
    pub fn authorize(&self, headers: &HeaderMap) -> std::result::Result<String, ApiError> {
        if self.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only",
                "this API is read-only: no ACTCORE_ADMIN_TOKEN or ACTCORE_ADMIN_TOKENS is configured",
            ));
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        match presented {
            None => Err(unauthorized(
                "send `Authorization: Bearer <token>` (ACTCORE_ADMIN_TOKEN, or one of ACTCORE_ADMIN_TOKENS)",
            )),
            Some(t) => self
                .name_of(t.as_bytes())
                .map(str::to_string)
                .ok_or_else(|| unauthorized("the bearer token is not one of the configured admin tokens")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        h
    }

    #[test]
    fn names_come_from_the_list_and_the_single_token_is_admin() {
        let t = Tokens::parse(Some("single-secret"), Some("alice:alice-secret, ci:ci-secret-1")).unwrap();
        assert_eq!(t.authorize(&bearer("alice-secret")).unwrap(), "alice");
        assert_eq!(t.authorize(&bearer("ci-secret-1")).unwrap(), "ci");
        assert_eq!(t.authorize(&bearer("single-secret")).unwrap(), "admin");
        assert_eq!(
            t.authorize(&bearer("alice-secreT")).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            t.authorize(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        let none = Tokens::parse(None, None).unwrap();
        assert_eq!(
            none.authorize(&bearer("anything")).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(!format!("{t:?}").contains("secret"), "{t:?}");
    }

    #[test]
    fn a_malformed_list_names_the_entry_and_the_shape() {
        let e = Tokens::parse(None, Some("alice:alice-secret,bob"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 2") && e.contains("name:token"), "{e}");
        assert!(Tokens::parse(None, Some("x:short")).is_err());
    }
}
