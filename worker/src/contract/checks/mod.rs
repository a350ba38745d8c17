//! The drift checks: pure functions over a parsed contract, rendered
//! manifests, definitions and file texts. Each returns the drifts it found,
//! every one naming the file, the field, what the contract expects, what was
//! found, and the fix.
//!
//! - [`workloads`]: the rendered (or live) workloads: environment, image,
//!   grace period, mounts, probes;
//! - [`files`]: the definitions' timeouts, the Dockerfile, the flagship's
//!   schedule and the fallback timer, the alert rules.

mod files;
mod workloads;

pub use files::*;
pub use workloads::*;

const CONTRACT: &str = "k8s/contract.toml";
