//! The `actcore` binary: parse, start telemetry, run, report how it ended.

use clap::Parser;

fn main() -> std::process::ExitCode {
    actcore::memory::tune();
    let cli = actcore::cli::Cli::parse();
    let logs = actcore::telemetry::init(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            drop(logs);
            eprintln!("actcore: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(actcore::cli::run(cli));
    drop(runtime);
    // The log lines first, then the verdict, in the order they happened.
    drop(logs);
    match result {
        Ok(()) | Err(actcore::Error::StdoutClosed) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actcore: {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}
