//! Which store errors are worth retrying, and how long to wait between
//! tries. A transient error (the database is away, a connection broke, the
//! pool had none free) heals by itself; a permanent one (the row itself is
//! refused) never will, and retrying it would wedge whatever waits behind.

use jiff::SignedDuration;

use crate::error::Error;

/// True when retrying the same statement may succeed.
pub(crate) fn is_transient(e: &Error) -> bool {
    match e {
        Error::Connect { .. } | Error::Io(_) => true,
        Error::Db(db) => match db {
            sqlx::Error::Database(d) => {
                // Serialization failure, deadlock, the server shutting down
                // or starting, too many connections; class 08 is connection trouble.
                let code = d.code().unwrap_or_default();
                matches!(code.as_ref(), "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03")
                    || code.starts_with("08")
                    // SQLite: "database is locked" / busy.
                    || matches!(code.as_ref(), "5" | "6" | "261" | "517")
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            _ => false,
        },
        _ => false,
    }
}

/// Doubling delays from `first` up to `max`.
pub(crate) struct Backoff {
    next: SignedDuration,
    max: SignedDuration,
}

impl Backoff {
    pub fn new(first: SignedDuration, max: SignedDuration) -> Backoff {
        Backoff { next: first, max }
    }

    /// The delay before the next try (the following one doubles).
    pub fn peek(&self) -> SignedDuration {
        self.next
    }

    pub fn step(&mut self) -> SignedDuration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_transient_a_refused_row_is_not() {
        assert!(is_transient(&Error::Db(sqlx::Error::PoolTimedOut)));
        assert!(is_transient(&Error::Db(sqlx::Error::Io(std::io::Error::other(
            "reset"
        )))));
        assert!(!is_transient(&Error::Db(sqlx::Error::RowNotFound)));
        assert!(!is_transient(&Error::Config("x".into())));
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let mut b = Backoff::new(SignedDuration::from_millis(50), SignedDuration::from_millis(150));
        let steps: Vec<i128> = (0..4).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, [50, 100, 150, 150]);
    }
}
