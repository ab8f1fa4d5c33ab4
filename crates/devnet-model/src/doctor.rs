//! What `devnet doctor --json` prints, and what the tray app's window shows
//! after "Run doctor".

use devnet_path::Verdict;
use devnet_path::doctor::Finding;
use serde::{Deserialize, Serialize};

use crate::status::Discovered;

/// Doctor's whole answer: what discovery found and where, each CIDR's path
/// with its evidence, and the findings with their fixes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct DoctorReport {
    pub discovered: Vec<Discovered>,
    /// What discovery could not settle, in words.
    pub discovery_notes: Vec<String>,
    pub paths: Vec<Verdict>,
    pub findings: Vec<Finding>,
}
