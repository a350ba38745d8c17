//! The library's one error type. Each error knows its exit code (docs/reference/cli.md:
//! 0 done, 1 database, I/O or internal error, 2 usage, 78 config) and a
//! metric label. Automation errors are recorded in runs, not exit codes.

use crate::definition::Problems;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Definition files failed validation; nothing was written.
    #[error("{0}")]
    Definitions(#[from] Problems),
    /// The database could not be reached: one line, password redacted.
    #[error("cannot reach the database at {url}: {reason}; {hint}")]
    Connect { url: String, reason: String, hint: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A flag or argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// Configuration is wrong (environment, files, URLs).
    #[error("{0}")]
    Config(String),
    /// The embedded store is held by another process.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A part of the worker stopped that must not (a background task died).
    #[error("{0}")]
    Internal(String),
    /// A run this command executed itself (the fallback) ended in an
    /// automation error: it is recorded, and the exit code says so (1).
    #[error("{0}")]
    Automation(String),
    /// Standard output was closed by its reader (`actcore runs | head -1`):
    /// the command stops printing and ends quietly, with success.
    #[error("standard output closed")]
    StdoutClosed,
}

impl Error {
    /// The process exit code a script can rely on.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Definitions(_) | Error::Config(_) | Error::Locked(_) => 78,
            Error::Usage(_) => 2,
            Error::Connect { .. }
            | Error::Db(_)
            | Error::Migrate(_)
            | Error::Io(_)
            | Error::Internal(_)
            | Error::Automation(_) => 1,
            Error::StdoutClosed => 0,
        }
    }

    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Definitions(_) => "definitions",
            Error::Connect { .. } => "connect",
            Error::Db(_) => "db",
            Error::Migrate(_) => "migrate",
            Error::Usage(_) => "usage",
            Error::Config(_) => "config",
            Error::Locked(_) => "locked",
            Error::Io(_) => "io",
            Error::Internal(_) => "internal",
            Error::Automation(_) => "automation",
            Error::StdoutClosed => "stdout_closed",
        }
    }
}
