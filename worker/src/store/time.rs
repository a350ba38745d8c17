//! Timestamps as the embedded store keeps them: fixed-width RFC 3339 UTC
//! text with microseconds, so that text order is time order.

use jiff::Timestamp;

/// `2026-11-23T18:00:00.000000Z`.
pub fn to_text(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn from_text(text: &str) -> Result<Timestamp, sqlx::Error> {
    text.parse::<Timestamp>()
        .map_err(|e| sqlx::Error::Decode(format!("bad timestamp `{text}`: {e}").into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_and_ordered() {
        let a: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let b: Timestamp = "2026-01-01T00:00:00.5Z".parse().unwrap();
        assert_eq!(to_text(a), "2026-01-01T00:00:00.000000Z");
        assert!(to_text(a) < to_text(b));
        assert_eq!(from_text(&to_text(b)).unwrap(), b);
    }
}
