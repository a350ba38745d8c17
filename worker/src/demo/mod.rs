//! `actcore dev --demo`: the first minute of a newcomer. A State Hub
//! stand-in ([`hub`]) in this process, demo activities firing every 10 s
//! (two sharing the stand-in's rotation, so every kind of result shows up
//! within half a minute; one whose bridge is down, with `open_after = 2`, so
//! its circuit opens), an embedded store of its own (`.actcore/demo/`), the
//! worker and the status page on 127.0.0.1:8080.

pub mod hub;

use std::path::Path;

use jiff::Timestamp;

use crate::cli::{DEV_LISTEN, DevArgs, Global};
use crate::definition;
use crate::error::Result;
use crate::store::Store;

/// The demo's folder under the working directory: its store and definitions.
pub const DIR: &str = ".actcore/demo";

/// The demo activities, for the stand-in at `hub` (`http://127.0.0.1:PORT`).
pub fn definitions(hub: &str) -> Vec<(&'static str, String)> {
    let sweep = |id: &str, slug: &str, name: &str| {
        format!(
            r#"# A demo activity (actcore dev --demo): the sweep against the local stand-in,
# which answers clean, assessment failures, lock skipped, C-00 and a 502 in turn.
id = "{id}"
name = "{name}"
slug = "{slug}"

[schedule]
cron = "*/10 * * * * *"
misfire_grace = "5s"

[action]
method = "POST"
url = "{hub}/consistency/sweep/remote-all"
body = {{ max_seconds = 5, source = "${{ACTCORE_SOURCE}}" }}
timeout = "5s"

[result]
snapshot_key = "consistency_sweep_remote_all"
"#
        )
    };
    vec![
        (
            "demo-sweep.toml",
            sweep("0d3e0000-0000-4000-8000-000000000001", "demo-sweep", "Demo sweep"),
        ),
        (
            "demo-sweep-eu.toml",
            sweep(
                "0d3e0000-0000-4000-8000-000000000002",
                "demo-sweep-eu",
                "Demo sweep (second region)",
            ),
        ),
        (
            "demo-bridge-down.toml",
            format!(
                r#"# A demo activity whose bridge is down: every answer is a 502, so after
# two automation errors in a row its circuit opens (open_after = 2).
id = "0d3e0000-0000-4000-8000-000000000003"
name = "Demo sweep behind a broken bridge"
slug = "demo-bridge-down"

[schedule]
cron = "*/10 * * * * *"
misfire_grace = "5s"

[action]
method = "POST"
url = "{hub}/bridge-down/consistency/sweep/remote-all"
timeout = "5s"

[guard]
cooldown = "0s"
open_after = 2
open_for = "1m"
"#
            ),
        ),
    ]
}

/// Writes the demo definitions under `dir`, replacing earlier ones.
pub fn write_definitions(dir: &Path, hub: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, text) in definitions(hub) {
        std::fs::write(dir.join(file), text)?;
    }
    Ok(())
}

pub async fn run(_g: &Global, args: &DevArgs) -> Result<()> {
    let hub = hub::start().await?;
    let base = Path::new(DIR);
    let defs_dir = base.join("definitions");
    write_definitions(&defs_dir, &format!("http://{}", hub.addr))?;
    let url = format!("sqlite://{}", base.join("actcore.db").display());
    let store = Store::open_and_migrate(Some(&url)).await?;
    let _lock = crate::cli::hold_embedded_lock(&store)?;
    let files = definition::load_dir(&defs_dir)?;
    store.sync(&files, Timestamp::now(), false).await?;
    tracing::info!(hub = %hub.addr, definitions = %defs_dir.display(), "demo: State Hub stand-in and demo activities ready");
    crate::cli::run_worker(store, &args.worker, DEV_LISTEN).await
}
