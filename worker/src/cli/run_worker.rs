//! `worker` and `dev`'s worker: the embedded-store lock, the config, the signals.

use super::*;

/// The embedded store is single node: a second worker on the same file
/// refuses to start and names the process holding it.
pub(crate) fn hold_embedded_lock(store: &Store) -> Result<Option<std::fs::File>> {
    let Store::Sqlite(s) = store else { return Ok(None) };
    let lock_path = s.path().with_extension("lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            writeln!(file, "{}", std::process::id())?;
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
            Err(Error::Locked(format!(
                "the embedded store {} is in use by another worker (pid {}); the embedded store is single node: \
                 stop that process, or run replicas against Postgres (DATABASE_URL=postgres://…)",
                s.path().display(),
                holder.trim()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Io(e)),
    }
}

/// Runs the worker loop with the admin API beside it (on `--listen`, else `default_listen`).
pub(crate) async fn run_worker(store: Store, args: &WorkerArgs, default_listen: &str) -> Result<()> {
    let api = super::serve::Beside::start(&store, args.listen.as_deref().unwrap_or(default_listen)).await?;
    let result = run_loop(store, args).await;
    api.stop().await;
    result
}

async fn run_loop(store: Store, args: &WorkerArgs) -> Result<()> {
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: no new claims; waiting for runs in flight");
        signal_token.cancel();
    });
    let config = WorkerConfig {
        worker_id: args.worker_id.clone().unwrap_or_else(default_worker_id),
        lease: args.lease.std(),
        shutdown_grace: args.shutdown_grace.map(Dur::std),
        reread: args.reread.std(),
    };
    worker::run(store, config, shutdown).await
}

pub(super) fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into());
    format!("{host}-{}", std::process::id())
}

pub(super) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
