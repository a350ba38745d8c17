//! Human durations as definitions write them (`"60s"`, `"2m"`, `"1h30m"`).
//!
//! A [`Dur`] keeps milliseconds and prints itself canonically, so `"2m"` and
//! `"120s"` hash to the same spec and a reformatted file is not a change.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration with millisecond precision, written as
/// `<number><unit>` pieces (`ms`, `s`, `m`, `h`, `d`), e.g. `"1h30m"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(u64);

impl Dur {
    pub const ZERO: Dur = Dur(0);

    pub const fn from_millis(ms: u64) -> Self {
        Dur(ms)
    }

    pub const fn from_secs(s: u64) -> Self {
        Dur(s * 1000)
    }

    pub const fn from_days(d: u64) -> Self {
        Dur(d * 86_400_000)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub const fn std(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// As a signed duration; saturates instead of wrapping negative above
    /// `i64::MAX` milliseconds (a validated duration is never that long).
    pub fn signed(self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_millis(i64::try_from(self.0).unwrap_or(i64::MAX))
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// The inclusive range a duration key or flag must lie in. Every duration
/// actcore accepts is bounded (at most [`Bounds::LONGEST`]), so none can
/// overflow a timestamp when added to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: Dur,
    pub max: Dur,
}

impl Bounds {
    /// The longest duration any key or flag allows: a year (366 days).
    pub const LONGEST: Dur = Dur::from_days(366);

    pub const fn new(min: Dur, max: Dur) -> Bounds {
        Bounds { min, max }
    }

    /// `"from 2s to 1d"`, for messages and `--help`.
    pub fn describe(&self) -> String {
        format!("from {} to {}", self.min, self.max)
    }

    /// `Err` says what is wrong with `d`; the caller names the key or flag and the fix.
    pub fn check(&self, d: Dur) -> Result<Dur, String> {
        if d < self.min {
            Err(format!(
                "{d} is below the minimum {} (allowed: {})",
                self.min,
                self.describe()
            ))
        } else if d > self.max {
            Err(format!(
                "{d} is above the maximum {} (allowed: {})",
                self.max,
                self.describe()
            ))
        } else {
            Ok(d)
        }
    }

    /// Parses a duration and checks it: a clap value parser for a bounded flag.
    pub fn parse(&self, text: &str) -> Result<Dur, String> {
        let d = text.parse::<Dur>().map_err(|e| e.to_string())?;
        self.check(d)
    }
}

/// Why a duration string was refused; the caller adds file and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurError(pub String);

impl fmt::Display for DurError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (write a number and a unit: ms, s, m, h or d, e.g. \"60s\")",
            self.0
        )
    }
}

impl std::error::Error for DurError {}

impl FromStr for Dur {
    type Err = DurError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(DurError("empty duration".into()));
        }
        let bytes = text.as_bytes();
        let mut total: u64 = 0;
        let mut i = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(DurError(format!("`{text}`: expected a number at `{}`", &text[start..])));
            }
            let number: u64 = text[start..i]
                .parse()
                .map_err(|_| DurError(format!("`{text}`: number too large")))?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let factor = match &text[unit_start..i] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => return Err(DurError(format!("`{text}`: missing unit after {number}"))),
                other => return Err(DurError(format!("`{text}`: unknown unit `{other}`"))),
            };
            total = number
                .checked_mul(factor)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| DurError(format!("`{text}`: too large")))?;
        }
        Ok(Dur(total))
    }
}

impl fmt::Display for Dur {
    /// Canonical form: the fewest pieces, largest units first (`"1h30m"`, `"90s"` → `"1m30s"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e: DurError| serde::de::Error::custom(e.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        for (input, millis, canonical) in [
            ("60s", 60_000, "1m"),
            ("330s", 330_000, "5m30s"),
            ("2m", 120_000, "2m"),
            ("1h30m", 5_400_000, "1h30m"),
            ("250ms", 250, "250ms"),
            ("0s", 0, "0s"),
            ("1d", 86_400_000, "1d"),
        ] {
            let d: Dur = input.parse().unwrap();
            assert_eq!(d.as_millis(), millis, "{input}");
            assert_eq!(d.to_string(), canonical, "{input}");
            assert_eq!(d.to_string().parse::<Dur>().unwrap(), d);
        }
    }

    #[test]
    fn fault4_bounds_name_the_range_and_signed_never_wraps() {
        let lease = Bounds::new(Dur::from_secs(2), Dur::from_days(1));
        assert_eq!(lease.parse("30s"), Ok(Dur::from_secs(30)));
        assert_eq!(lease.parse("2s"), Ok(Dur::from_secs(2)));
        let low = lease.parse("1ms").unwrap_err();
        assert!(low.contains("below") && low.contains("from 2s to 1d"), "{low}");
        let high = lease.parse("99999999999d").unwrap_err();
        assert!(high.contains("above") && high.contains("from 2s to 1d"), "{high}");
        assert!(lease.parse("20000000000000000d").unwrap_err().contains("too large"));
        assert!(Dur::from_millis(u64::MAX).signed().is_positive());
        // The longest bound added to the latest plausible now stays a valid timestamp.
        let now: jiff::Timestamp = "2999-12-31T23:59:59Z".parse().unwrap();
        assert!(now.checked_add(Bounds::LONGEST.signed()).is_ok());
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "60", "s", "5 minutes", "-1s", "1y", "1.5s"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} should be refused");
        }
    }
}
