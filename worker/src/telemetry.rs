//! Logs: readable text by default, JSON lines with `--log-format json`;
//! `RUST_LOG` filters (default `info`).

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Lines queued for stderr before a logging call waits for the writer
/// (the queue is allocated whole: 32 bytes a line).
const LOG_QUEUE_LINES: usize = 16 * 1024;

/// Installs the global subscriber, writing to stderr so stdout stays for
/// command output (`--json`).
///
/// Lines are formatted on the calling thread and written by a dedicated
/// one, through a buffer flushed whenever the queue is empty: at 10,000
/// runs an instant, one `write(2)` per line was about a quarter of the
/// worker's CPU per fire (113 → 85 µs, docs/performance.md). Nothing is dropped (a full queue makes the caller wait).
/// Keep the returned guard until exit: dropping it flushes what is left.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
        // sqlx warns of a DATABASE_URL parameter it does not know with its
        // value: `sslpassword=…` would be logged in clear.
        .add_directive(
            "sqlx_postgres::options::parse=error"
                .parse()
                .expect("a valid directive"),
        );
    // Colours only on a terminal: log files and `kubectl logs` get plain text.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("actcore-log")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    guard
}
