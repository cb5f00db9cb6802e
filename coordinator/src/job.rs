//! Identifiers and the job state machine shared by the store, the scheduler
//! and the API.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A job's number, given by the store in submission order (1, 2, ...).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A worker's number, given by the coordinator when it registers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct WorkerId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// Where a job is in its life.
///
/// ```text
/// queued ──► running ◄──► waiting_for_workers
///   │           │               │
///   └───────────┴───────────────┴──► completed | failed | cancelled
/// ```
/// (`completed` only from `running`; the last three are terminal.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `min_workers` free workers.
    Queued,
    /// Training on a ring of workers.
    Running,
    /// Was running, lost workers and has fewer than `min_workers`: it waits
    /// (keeping its survivors) instead of failing.
    WaitingForWorkers,
    /// Reached its last step; its final checkpoint is written.
    Completed,
    /// Stopped by an error (recorded with the job).
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl JobState {
    /// Every state, in the order above.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::WaitingForWorkers,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The state's name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::WaitingForWorkers => "waiting_for_workers",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job is over (no transition leaves this state).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Whether a job may go from `self` to `to`. Staying in the same state
    /// is not a transition (see [`JobStore::set_state`](crate::store::JobStore::set_state)).
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        match (self, to) {
            (Queued, Running | Failed | Cancelled) => true,
            (Running, WaitingForWorkers | Completed | Failed | Cancelled) => true,
            // A restarted coordinator puts running jobs back in the queue
            // until workers come back.
            (Running, Queued) => true,
            (WaitingForWorkers, Running | Queued | Failed | Cancelled) => true,
            _ => false,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| format!("unknown job state `{text}`"))
    }
}
