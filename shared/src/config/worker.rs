//! `[worker]`: queue liveness settings shared by workers and the planner.

use std::time::Duration;

use serde::Deserialize;

/// `[worker]`: queue liveness settings shared by workers and the planner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// A worker silent for `heartbeat_secs × missed_heartbeats` is taken for
    /// dead: another worker takes over its tasks, and its claims on batches
    /// run out after the same time.
    pub heartbeat_secs: u64,
    pub missed_heartbeats: usize,
    /// How often an idle worker looks for new tasks. apalis-redis wakes an
    /// idle worker only on its heartbeat, so workers beat this often.
    pub poll_interval_ms: u64,
    /// On SIGTERM, how long in-flight batches may take before the worker exits.
    pub shutdown_timeout_secs: u64,
    /// How often the planner's watchdog looks for lost tasks: pending
    /// batches of running runs that no worker holds and the queue no longer
    /// has (Redis losing its data is caught at once, by the queue epoch). A
    /// lost task is re-enqueued within this time.
    pub requeue_after_secs: u64,
    /// A batch whose task was delivered this many times without settling
    /// (its worker crashed on it each time) is quarantined to the DLQ.
    pub max_deliveries: u32,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            heartbeat_secs: 10,
            missed_heartbeats: 3,
            poll_interval_ms: 500,
            shutdown_timeout_secs: 30,
            requeue_after_secs: 30,
            max_deliveries: 5,
        }
    }
}

impl WorkerSettings {
    /// How long a silent worker is still presumed alive.
    pub fn orphan_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1) * self.missed_heartbeats.max(2) as u64)
    }

    /// How long a worker's claim on a batch lasts without renewal; renewed
    /// every third of it while the batch is delivered.
    pub fn claim_lease(&self) -> Duration {
        self.orphan_timeout()
    }

    /// The interval apalis-redis heartbeats (and so polls) at.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.clamp(50, 60_000)).min(self.orphan_timeout())
    }

    /// Missed apalis heartbeats (at [`Self::poll_interval`]) that add up to
    /// [`Self::orphan_timeout`].
    pub fn missed_polls(&self) -> usize {
        let polls = self.orphan_timeout().as_millis() / self.poll_interval().as_millis().max(1);
        (polls as usize).max(2)
    }
}
