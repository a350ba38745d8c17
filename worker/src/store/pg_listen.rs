//! Postgres LISTEN: a sync's NOTIFY wakes the worker to re-read its
//! definitions. Notifications can be lost while reconnecting, which is why
//! the worker also re-reads periodically; this only makes changes prompt.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{NOTIFY_CHANNEL, PgStore};
use crate::error::Result;

/// Listens until `stop`, reconnecting every 5 s while the database is
/// away (and waking the worker after each reconnect, since changes made in
/// between were not notified). Never gives up on its own.
pub(super) async fn listen(pg: &PgStore, wake: Arc<Notify>, stop: CancellationToken) -> Result<()> {
    let mut reconnected = false;
    loop {
        let connect = async {
            let mut l = sqlx::postgres::PgListener::connect_with(pg.pool()).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            l = connect => match l {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot LISTEN for definition changes; retrying in 5 s");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                    reconnected = true;
                    continue;
                }
            }
        };
        if reconnected {
            wake.notify_one();
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                n = listener.recv() => match n {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        warn!(error = %e, "LISTEN connection lost; reconnecting");
                        reconnected = true;
                        break;
                    }
                }
            }
        }
    }
}
