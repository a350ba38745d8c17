//! `actcore api`, and the admin API every `worker` and `dev` serves beside
//! its loop (`--listen` / `ACTCORE_LISTEN`).

use super::*;
use crate::api::{self, ApiState, Liveness, Tokens};

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Where the admin API listens (HOST:PORT; 127.0.0.1:0 picks a free port).
    #[arg(long, env = "ACTCORE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
}

/// `actcore api`: the API and the page, no firing; healthy while its
/// database pool answers.
pub(super) async fn api(g: &Global, args: &ApiArgs) -> Result<()> {
    let store = Store::open(g.database_url.as_deref()).await?;
    let tokens = Tokens::from_env()?;
    let listener = api::bind(&args.listen).await?;
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    api::serve(listener, ApiState::new(store, tokens, Liveness::Server), stop).await
}

/// The API beside a worker: bound before the loop starts (a port in use
/// fails the start, naming the flag), stopped after the loop has drained.
pub(super) struct Beside {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Beside {
    pub(super) async fn start(store: &Store, listen: &str) -> Result<Beside> {
        let tokens = Tokens::from_env()?;
        let listener = api::bind(listen).await?;
        let state = ApiState::new(store.clone(), tokens, Liveness::Loop(&api::heartbeat::LOOP));
        // The address on stdout (logs go to stderr): `dev` users open it.
        let addr = listener.local_addr()?;
        out!("actcore: status page and admin API on http://{addr}/");
        let stop = CancellationToken::new();
        let task = tokio::spawn(api::serve(listener, state, stop.clone()));
        Ok(Beside { stop, task })
    }

    pub(super) async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "the admin API stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "the admin API task failed"),
            Ok(Ok(())) => {}
        }
    }
}
