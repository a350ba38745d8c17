//! The file's shape as written: everything optional, so that missing keys
//! become named problems rather than serde's generic message.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub id: Option<String>,
    pub name: Option<String>,
    pub slug: Option<String>,
    pub enabled: Option<bool>,
    pub schedule: Option<Schedule>,
    pub action: Option<Action>,
    pub result: Option<Result>,
    pub retry: Option<Retry>,
    pub guard: Option<Guard>,
    pub canary: Option<Canary>,
    pub retention: Option<Retention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub misfire: Option<String>,
    pub misfire_grace: Option<String>,
    pub catchup_window: Option<String>,
    pub overlap: Option<String>,
    pub jitter: Option<String>,
    pub dst: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub kind: Option<String>,
    pub method: Option<String>,
    pub url: Option<String>,
    pub body: Option<toml::Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout: Option<String>,
    pub preflight: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Result {
    pub snapshot_key: Option<String>,
    pub automation_error: Option<String>,
    pub assessment_failures: Option<String>,
    pub lock_skipped: Option<String>,
    pub exit_code: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub max_attempts: Option<u32>,
    pub initial_interval: Option<String>,
    pub backoff_coefficient: Option<f64>,
    pub max_interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    pub cooldown: Option<String>,
    pub max_automated_attempts: Option<u32>,
    pub window: Option<String>,
    pub open_after: Option<u32>,
    pub open_for: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub verify: Option<String>,
    pub events_pointer: Option<String>,
    pub source_pointer: Option<String>,
    pub time_pointer: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub succeeded: Option<String>,
    pub failed: Option<String>,
}
