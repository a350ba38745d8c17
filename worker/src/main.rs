//! The `actcore` binary: parse, start telemetry, run, report how it ended.

use clap::Parser;

/// jemalloc, not glibc's malloc. When 10,000 activities share an instant
/// the worker allocates their tasks, requests, snapshots and rows at once,
/// from both runtime threads, and frees them a second later: glibc spent a
/// fifth of the worker's CPU in malloc and free and kept freed pages per
/// thread arena. Measured A/B at N=10,000 (docs/performance.md): worker CPU
/// per fire 94-100 µs -> 73-79 µs, peak RSS 94-103 MB -> 90-91 MB.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Two arenas (two runtime threads); freed pages go back to the system
/// after a second, by jemalloc's own thread, so an idle worker stays small
/// between bursts.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"narenas:2,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
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
