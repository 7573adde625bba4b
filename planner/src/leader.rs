//! Which `ebb serve` replica fires schedules. Every replica serves the API
//! and the health endpoints; one, the leader, also runs the schedules, the
//! watchdog, `after` and dbt triggers, alerts and the janitor.
//!
//! The leader is whoever holds a Postgres session-level advisory lock on the
//! state database, on a connection of its own. Postgres releases the lock
//! when that session ends, so when a leader dies the next replica to try
//! (every [`TRY_EVERY`]) takes over:
//! - a killed process: its socket closes and the lock is free at once;
//! - a host that vanished without closing its socket: the session is ended
//!   by the server after [`SILENT_SESSION_TIMEOUT`] without a query
//!   (`idle_session_timeout`, Postgres 14 and later), since the leader
//!   queries it every [`HEARTBEAT_EVERY`] while alive.
//!
//! A leader whose heartbeat fails steps down at once. It may still be
//! firing a tick at that moment, as may its successor: each tick is also
//! claimed in `ebb_schedule_ticks`, so it starts at most one run.

use std::time::Duration;

use ebb_shared::secret::Secret;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnection;
use tokio::sync::watch;

/// The advisory lock's key: "ebb_lead" in ASCII. Advisory locks are per
/// database, so planners of different state databases never compete.
const LOCK_KEY: i64 = 0x6562_625f_6c65_6164;
/// How often a standby replica tries to take the lock.
pub const TRY_EVERY: Duration = Duration::from_secs(1);
/// How often the leader checks that its lock's session is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A heartbeat (or a try) that takes longer has failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// The server ends the lock's session after this long without a query.
const SILENT_SESSION_TIMEOUT: &str = "10s";
/// Waits between attempts to reach the state database for the lock.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

/// Whether this session still holds the lock (a bigint key shows in
/// `pg_locks` as its high and low 32 bits, with `objsubid` 1).
const STILL_HELD: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
     AND pid = pg_backend_pid() AND granted AND objsubid = 1 \
     AND ((classid::bigint << 32) | objid::bigint) = $1)";

/// Whether this replica leads, as it changes.
pub type Leading = watch::Receiver<bool>;

/// Starts campaigning for leadership on the state database at `url`, as
/// `identity` (which shows in `pg_stat_activity.application_name`).
/// The receiver turns true while this replica leads.
pub fn campaign(url: Secret, identity: String) -> Leading {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move { run(url, identity, tx).await });
    rx
}

async fn run(url: Secret, identity: String, tx: watch::Sender<bool>) {
    let mut silent_timeout = true;
    let mut standing_by_logged = false;
    loop {
        let mut conn = match connect(&url, &identity, silent_timeout).await {
            Ok(conn) => conn,
            Err(e) if silent_timeout && is_unknown_setting(&e) => {
                tracing::warn!(
                    "the state database does not know idle_session_timeout (Postgres < 14): a leader whose host vanishes keeps leadership until the server notices its connection is gone"
                );
                silent_timeout = false;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?RECONNECT_EVERY, "cannot reach the state database to elect a leader");
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
        };
        // Stand by until the lock is ours or the connection fails.
        let acquired = loop {
            match query_bool(&mut conn, "SELECT pg_try_advisory_lock($1)").await {
                Ok(true) => break true,
                Ok(false) => {
                    if !standing_by_logged {
                        tracing::info!(planner = %identity, "another planner leads; standing by (serving the API only)");
                        standing_by_logged = true;
                    }
                    tokio::time::sleep(TRY_EVERY).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the state database connection while standing by");
                    break false;
                }
            }
        };
        if !acquired {
            continue;
        }
        standing_by_logged = false;
        tracing::info!(planner = %identity, "leading: this planner fires schedules and triggers");
        let _ = tx.send(true);
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            match query_bool(&mut conn, STILL_HELD).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(planner = %identity, "the leader's lock was released behind its back; stepping down");
                    break;
                }
                Err(e) => {
                    tracing::error!(planner = %identity, error = %e, "the connection holding leadership failed; stepping down");
                    break;
                }
            }
        }
        let _ = tx.send(false);
        drop(conn);
    }
}

async fn connect(
    url: &Secret,
    identity: &str,
    silent_timeout: bool,
) -> Result<PgConnection, sqlx::Error> {
    let mut options = ebb_shared::db::options(url)?.application_name(identity);
    if silent_timeout {
        options = options.options([("idle_session_timeout", SILENT_SESSION_TIMEOUT)]);
    }
    tokio::time::timeout(QUERY_TIMEOUT * 3, options.connect())
        .await
        .map_err(|_| timed_out("connecting"))?
}

fn is_unknown_setting(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "42704")
}

async fn query_bool(conn: &mut PgConnection, sql: &'static str) -> Result<bool, sqlx::Error> {
    let query = sqlx::query_scalar(sql).bind(LOCK_KEY).fetch_one(&mut *conn);
    match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(answer) => answer,
        Err(_) => Err(timed_out("querying")),
    }
}

fn timed_out(doing: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{doing} the state database took too long"),
    ))
}

/// This replica's name among planners: the pod name on Kubernetes
/// (`HOSTNAME`), and the process id, since two may share a host.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ebb".to_owned());
    format!("ebb-serve@{host}:{}", std::process::id())
}

/// Waits until `leading` turns `want`; false when the campaign ended.
pub async fn wait_for(leading: &mut Leading, want: bool) -> bool {
    leading.wait_for(|now| *now == want).await.is_ok()
}
