//! Logs: readable text by default, JSON lines with `--log-format json`;
//! `RUST_LOG` filters (default `info`).

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber, writing to stderr so stdout stays for
/// command output (`--json`).
pub fn init(format: LogFormat) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}
