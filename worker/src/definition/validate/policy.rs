//! Validation of the self-healing, verification and history tables:
//! `[retry]`, `[guard]`, `[canary]` and `[retention]`.

use super::*;

impl Validator<'_> {
    pub(super) fn retry(&mut self, r: raw::Retry) -> RetrySpec {
        let max_attempts = r.max_attempts.unwrap_or(3);
        if max_attempts == 0 {
            self.push(
                "retry.max_attempts",
                "must be at least 1 (the first attempt counts)",
                "set `max_attempts = 1` for no retries",
            );
        }
        let backoff_coefficient = r.backoff_coefficient.unwrap_or(2.0);
        if !(1.0..=100.0).contains(&backoff_coefficient) {
            self.push(
                "retry.backoff_coefficient",
                format!("{backoff_coefficient} is out of range"),
                "use a value from 1.0 to 100.0, e.g. 2.0",
            );
        }
        let initial_interval = self.duration(r.initial_interval, "retry.initial_interval", INITIAL_INTERVAL);
        let max_interval = self.duration(r.max_interval, "retry.max_interval", MAX_INTERVAL);
        if let (Some(initial), Some(max)) = (initial_interval, max_interval)
            && max < initial
        {
            self.push(
                "retry.max_interval",
                format!("{max} is below retry.initial_interval ({initial})"),
                "the backoff grows from initial_interval up to max_interval: raise max_interval or lower initial_interval",
            );
        }
        RetrySpec {
            max_attempts,
            initial_interval: initial_interval.unwrap_or(INITIAL_INTERVAL.default),
            backoff_coefficient,
            max_interval: max_interval.unwrap_or(MAX_INTERVAL.default),
        }
    }

    pub(super) fn canary(&mut self, c: raw::Canary) -> Option<CanarySpec> {
        let verify = self.required(
            c.verify,
            "canary.verify",
            "add `verify = \"${STATE_HUB_URL}/progress/?event_type=consistency_sweep_remote_all&limit=5\"`, a GET that lists recent events",
        )?;
        self.url("canary.verify", &verify);
        Some(CanarySpec {
            verify,
            events_pointer: self.pointer(c.events_pointer, "canary.events_pointer", ""),
            source_pointer: self.pointer(c.source_pointer, "canary.source_pointer", "/detail/source"),
            time_pointer: self.pointer(c.time_pointer, "canary.time_pointer", "/created_at"),
        })
    }

    pub(super) fn guard(&mut self, g: raw::Guard) -> GuardSpec {
        let open_after = g.open_after.unwrap_or(4);
        if open_after == 0 {
            self.push(
                "guard.open_after",
                "must be at least 1",
                "set e.g. `open_after = 4` consecutive automation errors",
            );
        }
        GuardSpec {
            cooldown: self
                .duration(g.cooldown, "guard.cooldown", COOLDOWN)
                .unwrap_or_default(),
            max_automated_attempts: g.max_automated_attempts.unwrap_or(6),
            window: self.duration(g.window, "guard.window", WINDOW).unwrap_or_default(),
            open_after,
            open_for: self
                .duration(g.open_for, "guard.open_for", OPEN_FOR)
                .unwrap_or_default(),
        }
    }

    pub(super) fn retention(&mut self, r: raw::Retention) -> RetentionSpec {
        RetentionSpec {
            succeeded: self
                .duration(r.succeeded, "retention.succeeded", RETENTION_SUCCEEDED)
                .unwrap_or(RETENTION_SUCCEEDED.default),
            failed: self
                .duration(r.failed, "retention.failed", RETENTION_FAILED)
                .unwrap_or(RETENTION_FAILED.default),
        }
    }
}
