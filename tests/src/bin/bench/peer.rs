//! The reference peer, tokio-cron-scheduler (`bench/peers/tokio-cron-scheduler`),
//! run at the same N against the same sink as actcore, so that every
//! result table puts both side by side from one run on one machine.
//!
//! The peer's N jobs on `*/5 * * * * *` POST `/fire/{i}` without a
//! scheduled-for header; the sink counts each arrival against the 5-second
//! instant it follows (the peer's lateness stays far under 5 s), and the
//! figures are counted exactly as actcore's: lateness = arrival − instant,
//! missed = (job, instant) pairs of the window with no arrival, doubled =
//! pairs with more than one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use jiff::{SignedDuration, Timestamp};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Pcts, Sink, ceil5, proc_cpu, proc_status_kb, sleep_until_ts};

/// The peer's figures at one N.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct PeerFigures {
    pub n: usize,
    pub window_s: u64,
    pub instants: usize,
    pub expected: usize,
    pub received: usize,
    pub missed: usize,
    pub doubled: usize,
    pub lateness: Pcts,
    pub peak_rss_mb: f64,
    pub cpu_pct: f64,
}

/// The peer binary: `--peer-bin`, else `tcron` next to this executable
/// (scripts/bench builds it into the same target directory).
pub(crate) fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tcron")))
        .unwrap_or_else(|| PathBuf::from("tcron"))
}

/// Runs the peer with `n` jobs for `window` seconds of counted instants
/// (after one warm-up instant, as actcore's runs).
pub(crate) async fn run(bin: &std::path::Path, n: usize, window: u64, ticks: u64) -> Result<PeerFigures> {
    eprintln!("== peer tokio-cron-scheduler: {n} jobs on */5 s, {window} s of firing");
    let sink = Sink::start(0).await?;
    let count = (window / 5).max(1) as usize;
    // Scheduling N jobs takes a while at 10,000: READY comes first, then the window.
    let lifetime = 60 + n as u64 / 100 + window + 10;
    let mut child = tokio::process::Command::new(bin)
        .args([n.to_string(), sink.url(), lifetime.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start the peer {} (build it: see scripts/bench)", bin.display()))?;
    let pid = child.id().unwrap_or(0);
    let mut lines = BufReader::new(child.stdout.take().context("peer stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60 + n as u64 / 100), async {
        while let Some(line) = lines.next_line().await? {
            if line.trim() == "READY" {
                return Ok::<_, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    if !matches!(ready, Ok(Ok(true))) {
        let _ = child.kill().await;
        bail!("the peer did not print READY ({ready:?})");
    }
    // One warm-up instant (it opens the client's connections), then the window.
    let t_start = ceil5(Timestamp::now() + SignedDuration::from_secs(5));
    let instants: Vec<Timestamp> = (0..count)
        .map(|k| t_start + SignedDuration::from_secs(5 * k as i64))
        .collect();
    let t_end = *instants.last().expect("at least one instant");
    let half = SignedDuration::from_millis(2500);
    sleep_until_ts(t_start - half).await;
    let cpu0 = proc_cpu(pid).map_or(0, |c| c.0);
    let w0 = std::time::Instant::now();
    sleep_until_ts(t_end + half).await;
    let cpu1 = proc_cpu(pid).map_or(0, |c| c.0);
    let wall = w0.elapsed().as_secs_f64();
    let peak = proc_status_kb(pid, "VmHWM").unwrap_or(0);
    let _ = child.kill().await;

    let (lo, hi) = (t_start.as_nanosecond(), t_end.as_nanosecond());
    let mut per_pair: HashMap<(u32, i128), usize> = HashMap::new();
    let mut lateness = Vec::new();
    for a in sink.take() {
        let Some(s) = a.scheduled_ns.filter(|s| (lo..=hi).contains(s)) else {
            continue;
        };
        *per_pair.entry((a.index, s)).or_default() += 1;
        if let Some(l) = a.lateness_us() {
            lateness.push(l);
        }
    }
    lateness.sort_unstable();
    let expected = n * count;
    let received = per_pair.keys().filter(|(i, _)| (*i as usize) < n).count();
    let f = PeerFigures {
        n,
        window_s: window,
        instants: count,
        expected,
        received,
        missed: expected.saturating_sub(received),
        doubled: per_pair.values().filter(|c| **c > 1).count(),
        lateness: Pcts::of(&lateness),
        peak_rss_mb: peak as f64 / 1024.0,
        cpu_pct: cpu1.saturating_sub(cpu0) as f64 / ticks as f64 / wall.max(1e-9) * 100.0,
    };
    eprintln!(
        "   peer lateness {} ms (n={}); expected {} received {} missed {} doubled {}; peak RSS {:.1} MB, CPU {:.1}%",
        f.lateness, f.lateness.n, f.expected, f.received, f.missed, f.doubled, f.peak_rss_mb, f.cpu_pct
    );
    Ok(f)
}
