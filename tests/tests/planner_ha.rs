//! Two `ebb serve` replicas on one state database: one leads and fires the
//! schedules, the other serves the API; when the leader is killed the other
//! takes over, and no tick is fired twice or lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ebb_tests::{TestEnv, create_replica, eventually, free_port, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 50

[syncs.customers]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "replica"
mode = "mirror"
# Every 3 seconds: a standby takes over well within one period.
schedule = "*/3 * * * * *"

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"
"#;

const PERIOD_SECS: i64 = 3;

struct Planner {
    child: tokio::process::Child,
    log: std::path::PathBuf,
    base: String,
    identity: String,
}

impl Planner {
    /// Starts `ebb serve` as host `name`; its log is `serve-<name>.log`.
    fn start(env: &TestEnv, name: &str) -> Planner {
        let port = free_port();
        let child = env.serve_as_host(port, name);
        let pid = child.id().expect("serve pid");
        Planner {
            child,
            log: env.dir.join(format!("serve-{name}.log")),
            base: format!("http://127.0.0.1:{port}"),
            identity: format!("ebb-serve@{name}:{pid}"),
        }
    }

    fn log_has(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains(text))
    }

    async fn leader_gauge(&self) -> Option<String> {
        let body = reqwest::get(format!("{}/metrics", self.base))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .find(|l| l.starts_with("ebb_planner_leader "))
            .map(str::to_owned)
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Tick {
    fire_at: DateTime<Utc>,
    claimed_by: String,
    run_id: Option<i64>,
}

async fn ticks(env: &TestEnv) -> Vec<Tick> {
    sqlx::query_as(
        "SELECT fire_at, claimed_by, run_id FROM ebb_schedule_ticks \
         WHERE sync_name = 'customers' ORDER BY fire_at",
    )
    .fetch_all(&env.state)
    .await
    .expect("read ticks")
}

#[tokio::test]
async fn one_planner_leads_and_the_standby_takes_over_when_it_is_killed() {
    let mut env = TestEnv::new(CONFIG, &[]).await;
    seed_customers(&env.warehouse, 50).await;
    create_replica(&env.app).await;
    env.start_worker(2);

    let mut a = Planner::start(&env, "planner-a");
    eventually(Duration::from_secs(20), "planner-a to lead", || async {
        a.log_has("leading: this planner fires schedules")
            .then_some(())
    })
    .await;
    let b = Planner::start(&env, "planner-b");
    eventually(Duration::from_secs(20), "planner-b to stand by", || async {
        b.log_has("another planner leads; standing by")
            .then_some(())
    })
    .await;
    eventually(Duration::from_secs(20), "both gauges", || async {
        let (ga, gb) = (a.leader_gauge().await?, b.leader_gauge().await?);
        (ga == "ebb_planner_leader 1" && gb == "ebb_planner_leader 0").then_some(())
    })
    .await;
    // The standby serves the API too.
    let standby_runs = reqwest::get(format!("{}/healthz", b.base))
        .await
        .expect("GET /healthz on the standby");
    assert_eq!(standby_runs.status().as_u16(), 200);

    // Both replicas live through three ticks: only the leader fires them.
    eventually(
        Duration::from_secs(30),
        "three ticks fired by a",
        || async {
            let fired = ticks(&env).await;
            (fired.iter().filter(|t| t.run_id.is_some()).count() >= 3).then_some(())
        },
    )
    .await;

    let killed_at = Utc::now();
    a.child.start_kill().expect("kill planner-a");
    a.child.wait().await.expect("planner-a exits");
    eventually(
        Duration::from_secs(20),
        "planner-b to take over",
        || async {
            b.log_has("leading: this planner fires schedules")
                .then_some(())
        },
    )
    .await;
    let took_over_in = Utc::now() - killed_at;
    eprintln!(
        "planner-b led {} ms after planner-a was killed",
        took_over_in.num_milliseconds()
    );
    eventually(
        Duration::from_secs(30),
        "three ticks fired by b",
        || async {
            let fired = ticks(&env).await;
            let by_b = fired
                .iter()
                .filter(|t| t.claimed_by == b.identity && t.run_id.is_some())
                .count();
            (by_b >= 3).then_some(())
        },
    )
    .await;
    assert_eq!(
        b.leader_gauge().await.as_deref(),
        Some("ebb_planner_leader 1")
    );

    // Pause the sync so the ticks go on being claimed but start no run,
    // and wait until the last run started is recorded on its tick: then
    // the runs and the ticks can be compared while b keeps leading.
    let out = env.ebb(&["pause", "customers"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paused_at = Utc::now();
    eventually(
        Duration::from_secs(30),
        "every scheduled run on its tick",
        || async {
            let unrecorded: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM ebb_runs WHERE trigger = 'schedule' AND id NOT IN \
             (SELECT run_id FROM ebb_schedule_ticks WHERE run_id IS NOT NULL)",
            )
            .fetch_one(&env.state)
            .await
            .expect("unrecorded runs");
            let paused_tick = ticks(&env).await.iter().any(|t| t.fire_at > paused_at);
            (unrecorded == 0 && paused_tick).then_some(())
        },
    )
    .await;

    let fired = ticks(&env).await;
    let summary: Vec<String> = fired
        .iter()
        .map(|t| format!("{} {} {:?}", t.fire_at, t.claimed_by, t.run_id))
        .collect();
    // Each replica fired only while it led.
    for tick in &fired {
        if tick.claimed_by == a.identity {
            assert!(
                tick.fire_at <= killed_at,
                "a fired after its death: {summary:#?}"
            );
        } else {
            assert_eq!(tick.claimed_by, b.identity, "{summary:#?}");
            assert!(
                tick.fire_at > killed_at - chrono::Duration::seconds(PERIOD_SECS),
                "b fired while a led: {summary:#?}"
            );
        }
    }
    // No tick was lost over the failover: one claim every period, no gap.
    for pair in fired.windows(2) {
        assert_eq!(
            (pair[1].fire_at - pair[0].fire_at).num_seconds(),
            PERIOD_SECS,
            "ticks are not one period apart: {summary:#?}"
        );
    }

    // No tick started two runs: every scheduled run is the run of exactly
    // one tick, and no two scheduled runs started within one period.
    let scheduled: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, created_at FROM ebb_runs WHERE sync_name = 'customers' AND trigger = 'schedule' ORDER BY id",
    )
    .fetch_all(&env.state)
    .await
    .expect("scheduled runs");
    let mut tick_runs: Vec<i64> = fired.iter().filter_map(|t| t.run_id).collect();
    tick_runs.sort_unstable();
    let run_ids: Vec<i64> = scheduled.iter().map(|(id, _)| *id).collect();
    assert_eq!(run_ids, tick_runs, "{summary:#?}");
    let mut periods: Vec<i64> = scheduled
        .iter()
        .map(|(_, at)| at.timestamp().div_euclid(PERIOD_SECS))
        .collect();
    let all = periods.len();
    periods.dedup();
    assert_eq!(
        periods.len(),
        all,
        "two runs started in one period: {scheduled:?}"
    );
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ebb_runs WHERE state NOT IN ('succeeded', 'running', 'planning')",
    )
    .fetch_one(&env.state)
    .await
    .expect("count failed runs");
    assert_eq!(failed, 0, "every run succeeded or is still going");
    let replica = TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM customers_synced").await;
    assert_eq!(replica, 50);

    // A leader whose lock session is cut (a network partition, a failover
    // of the state database) steps down, and leads again once it holds the
    // lock on a new session.
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&b.identity)
    .fetch_one(&env.state)
    .await
    .expect("terminate the lock session");
    assert_eq!(
        cut, 1,
        "the lock has its own session, named after the planner"
    );
    eventually(
        Duration::from_secs(20),
        "planner-b to step down and lead again",
        || async {
            let log = std::fs::read_to_string(&b.log).ok()?;
            (log.contains("stepping down")
                && log.matches("leading: this planner fires schedules").count() == 2)
                .then_some(())
        },
    )
    .await;
}
