//! The `actcore` binary: parse, start telemetry, run, report how it ended.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = actcore::cli::Cli::parse();
    actcore::telemetry::init(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("actcore: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(actcore::cli::run(cli)) {
        Ok(()) | Err(actcore::Error::StdoutClosed) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actcore: {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}
