//! What Ebb does to a queue beside apalis-redis, each a Lua script of its
//! own in `lua/` working on apalis-redis 1.0's key layout (see
//! `../shared/notes/stack.md`).

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use apalis_redis::{Config, ConnectionManager};
use redis::Script;

use super::WriteBatchTask;
use crate::error::QueueError;

static PROMOTE_DUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/promote_due.lua")));
static QUEUED_PAYLOADS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/queued_payloads.lua")));
static PURGE_DONE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/purge_done.lua")));

/// Well below the ~8,000 values Redis unpacks into one command.
const CHUNK: usize = 1_000;
/// Tasks moved by one script call, so no call blocks Redis for long.
const PROMOTE_PER_CALL: usize = 10_000;
/// Finished tasks forgotten per call.
const FORGET_PER_CALL: usize = 1_000;

/// The clock apalis-redis scores scheduled tasks with: this host's, in
/// seconds.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Moves every due task of the queue from its scheduled set to its active
/// list, in chunks; returns how many moved. apalis-redis's own fetch does
/// the same with one `unpack`, which fails for every fetch once more than
/// about 8,000 tasks are due; calling this after each push, and from every
/// worker on its poll interval, keeps that number small.
pub async fn promote_due(conn: &mut ConnectionManager, config: &Config) -> Result<u64, QueueError> {
    let mut moved = 0;
    loop {
        let n: u64 = PROMOTE_DUE
            .key(config.scheduled_jobs_set())
            .key(config.active_jobs_list())
            .key(config.signal_list())
            .arg(now_secs())
            .arg(CHUNK)
            .arg(PROMOTE_PER_CALL)
            .invoke_async(conn)
            .await
            .map_err(|source| QueueError::Redis {
                context: "promoting due tasks",
                source,
            })?;
        moved += n;
        if n < PROMOTE_PER_CALL as u64 {
            return Ok(moved);
        }
    }
}

/// The `(run, batch)` of every task the queue holds: waiting, scheduled, or
/// fetched by a registered worker. A pending batch that is not among them,
/// and that no worker has claimed, has lost its task.
pub async fn queued_batches(
    conn: &mut ConnectionManager,
    config: &Config,
) -> Result<HashSet<(i64, i32)>, QueueError> {
    let payloads: Vec<Option<Vec<u8>>> = QUEUED_PAYLOADS
        .key(config.active_jobs_list())
        .key(config.scheduled_jobs_set())
        .key(config.workers_set())
        .key(config.job_data_hash())
        .arg(config.inflight_jobs_set())
        .arg(CHUNK)
        .invoke_async(conn)
        .await
        .map_err(|source| QueueError::Redis {
            context: "listing the tasks a queue holds",
            source,
        })?;
    Ok(payloads
        .iter()
        .flatten()
        .filter_map(|payload| serde_json::from_slice::<WriteBatchTask>(payload).ok())
        .map(|task| (task.run_id, task.batch_no))
        .collect())
}

/// Drops the payloads and metadata of up to a thousand finished tasks;
/// returns how many. apalis-redis keeps them forever.
pub async fn forget_finished(
    conn: &mut ConnectionManager,
    config: &Config,
) -> Result<u64, QueueError> {
    PURGE_DONE
        .key(config.done_jobs_set())
        .key(config.job_data_hash())
        .arg(config.job_meta_hash())
        .arg(FORGET_PER_CALL)
        .invoke_async(conn)
        .await
        .map_err(|source| QueueError::Redis {
            context: "forgetting finished tasks",
            source,
        })
}
