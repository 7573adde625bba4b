//! `ebb serve` (cron schedules, health endpoints) and the planner's
//! watchdog, which rebuilds from Postgres the tasks Redis lost.

use std::process::Stdio;
use std::time::Duration;

use ebb_tests::{TestEnv, bin, create_replica, eventually, free_port, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
# Long on purpose: recovery below must come from the queue epoch, not from
# the search for lost tasks every requeue_after_secs.
requeue_after_secs = 600

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
{SCHEDULE}

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"
"#;

async fn env(schedule: &str, rows: i64) -> TestEnv {
    let env = TestEnv::new(CONFIG, &[("{SCHEDULE}", schedule.to_owned())]).await;
    seed_customers(&env.warehouse, rows).await;
    create_replica(&env.app).await;
    env
}

fn serve(env: &TestEnv, port: u16) -> tokio::process::Child {
    let log = std::fs::File::create(env.dir.join("serve.log")).expect("serve log");
    tokio::process::Command::new(bin("ebb"))
        .arg("--config")
        .arg(env.config_path())
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .env("EBB_LOG_TEXT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ebb serve")
}

async fn http_status(url: &str) -> Option<u16> {
    let client = reqwest::Client::new();
    let response = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

async fn runs(env: &TestEnv) -> Vec<serde_json::Value> {
    env.ebb_json(&["runs"])
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn serve_fires_scheduled_runs_one_at_a_time_and_answers_health_checks() {
    // Every 2 seconds (6-field cron with seconds).
    let mut env = env("schedule = \"*/2 * * * * *\"", 300).await;
    let port = free_port();
    let mut daemon = serve(&env, port);
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "/healthz", || async {
        (http_status(&format!("{base}/healthz")).await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(http_status(&format!("{base}/readyz")).await, Some(200));

    // No worker yet: the first scheduled run stays active, and later ticks
    // must skip the sync instead of planning it a second time.
    let first = eventually(Duration::from_secs(20), "a scheduled run", || async {
        runs(&env)
            .await
            .into_iter()
            .find(|r| r["state"] == "running")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let while_active = runs(&env).await;
    assert_eq!(
        while_active.len(),
        1,
        "ticks during an active run start nothing: {while_active:?}"
    );
    assert_eq!(first["trigger"], "schedule");

    // /metrics shows the waiting run (300 rows in batches of 50) and that
    // no worker drains its queue.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    for line in [
        "ebb_runs_active{sync=\"customers\"} 1",
        "ebb_queue_waiting_tasks{destination=\"replica\"} 6",
        "ebb_queue_live_workers{destination=\"replica\"} 0",
        "ebb_limiter_max_concurrency{destination=\"replica\"} 8",
        "ebb_metrics_errors 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }

    env.start_worker(4);
    let done = eventually(Duration::from_secs(60), "the run to finish", || async {
        let all = runs(&env).await;
        all.iter()
            .find(|r| r["id"] == first["id"] && r["state"] == "succeeded")
            .cloned()
    })
    .await;
    assert_eq!(done["delivered"], 300, "{done}");
    let replica = TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM customers_synced").await;
    assert_eq!(replica, 300);

    // Later ticks plan again, find nothing changed and send nothing.
    let later = eventually(Duration::from_secs(20), "a later scheduled run", || async {
        runs(&env)
            .await
            .into_iter()
            .find(|r| r["id"].as_i64() > first["id"].as_i64() && r["state"] == "succeeded")
    })
    .await;
    assert_eq!(later["to_send"], 0, "{later}");
    assert_eq!(later["unchanged"], 300, "{later}");

    let pid = daemon.id().expect("serve pid");
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let status = tokio::time::timeout(Duration::from_secs(20), daemon.wait())
        .await
        .expect("serve exits after SIGTERM")
        .expect("wait for serve");
    assert!(status.success(), "serve exit status {status}");
}

#[tokio::test]
async fn readyz_reports_an_unreachable_queue() {
    let env = TestEnv::new(CONFIG, &[("{SCHEDULE}", String::new())]).await;
    // Point the daemon at a Redis port nobody listens on.
    let dead_port = free_port();
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    std::fs::write(
        env.config_path(),
        text.replace(
            "redis://127.0.0.1:6379",
            &format!("redis://127.0.0.1:{dead_port}"),
        ),
    )
    .expect("rewrite config");
    let port = free_port();
    let _daemon = serve(&env, port);
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "/healthz", || async {
        (http_status(&format!("{base}/healthz")).await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(http_status(&format!("{base}/readyz")).await, Some(503));
    // It says what is not ready, and nothing an unauthenticated caller
    // could use: no host, no port, no error text.
    let body = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("GET /readyz")
        .text()
        .await
        .expect("readyz body");
    assert_eq!(body, "not ready: queue");
    // Metrics still answer, saying what they could not read.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.lines().any(|l| l == "ebb_metrics_errors 1"),
        "{metrics}"
    );
}

/// Redis loses the queue's data mid-run (what FLUSHALL or a restart without
/// persistence does): `ebb run` notices the new queue epoch and re-enqueues
/// the unsettled batches from Postgres, long before `requeue_after_secs`.
#[tokio::test]
async fn a_run_survives_redis_losing_its_queue() {
    let mut env = env("", 1000).await;
    let run = env.ebb_command(&["run", "customers", "--json"]);
    let run = run_in_background(run);
    eventually(Duration::from_secs(30), "tasks on the queue", || async {
        (env.queued_tasks().await == 20).then_some(())
    })
    .await;
    assert!(env.wipe_queue().await > 0);
    assert_eq!(env.queued_tasks().await, 0);
    env.start_worker(4);
    let out = tokio::time::timeout(Duration::from_secs(60), run.wait_with_output())
        .await
        .expect("run finishes after the queue was rebuilt")
        .expect("ebb run output");
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("ebb run --json output");
    assert_eq!(summary["run"]["state"], "succeeded", "{summary}");
    assert_eq!(summary["run"]["delivered"], 1000, "{summary}");
    let replica = TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM customers_synced").await;
    assert_eq!(replica, 1000);
    let events = summary["run"]["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["kind"] == "requeued"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("Redis lost its data"))),
        "the run says why it was re-enqueued: {summary}"
    );
}

/// The planner that started a run dies and Redis loses the tasks: `ebb
/// serve`'s watchdog finds the running run and finishes it from Postgres.
#[tokio::test]
async fn serve_finishes_a_run_whose_planner_died_and_whose_tasks_were_lost() {
    let mut env = env("", 500).await;
    let mut run = run_in_background(env.ebb_command(&["run", "customers", "--json"]));
    eventually(Duration::from_secs(30), "tasks on the queue", || async {
        (env.queued_tasks().await == 10).then_some(())
    })
    .await;
    run.kill().await.expect("kill the planner");
    env.wipe_queue().await;

    let port = free_port();
    let _daemon = serve(&env, port);
    env.start_worker(4);
    let done = eventually(Duration::from_secs(60), "the run to finish", || async {
        runs(&env)
            .await
            .into_iter()
            .find(|r| r["state"] == "succeeded")
    })
    .await;
    assert_eq!(done["delivered"], 500, "{done}");
    let replica = TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM customers_synced").await;
    assert_eq!(replica, 500);
}

fn run_in_background(mut cmd: tokio::process::Command) -> tokio::process::Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ebb run")
}

/// Two planners for one sync (a second `ebb run`, or a second `ebb serve`
/// by mistake): the second is refused while the first run is active, and
/// nothing is planned twice.
#[tokio::test]
async fn a_second_planner_is_refused_while_a_run_is_active() {
    let mut env = env("", 200).await;
    let first = run_in_background(env.ebb_command(&["run", "customers", "--json"]));
    eventually(Duration::from_secs(30), "the first run's tasks", || async {
        (env.queued_tasks().await == 4).then_some(())
    })
    .await;
    let second = env.ebb(&["run", "customers"]).await;
    assert_eq!(second.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("sync `customers` already has an active run #1"),
        "{stderr}"
    );
    env.start_worker(2);
    let out = tokio::time::timeout(Duration::from_secs(60), first.wait_with_output())
        .await
        .expect("first run finishes")
        .expect("ebb run output");
    assert_eq!(out.status.code(), Some(0));
    let all = runs(&env).await;
    assert_eq!(all.len(), 1, "one run only: {all:?}");
    assert_eq!(all[0]["delivered"], 200);
}

/// `/readyz` and `/metrics` of `ebb serve` share one Redis connection: a
/// flood of probes opens none of its own (they used to open a connection
/// per request), and probes beyond the few served at once are turned away
/// at once rather than piling up.
#[tokio::test]
async fn probes_share_one_redis_connection() {
    let redis = ebb_tests::PrivateRedis::start();
    let env = TestEnv::new_on_redis(CONFIG, &[("{SCHEDULE}", String::new())], &redis.url()).await;
    let port = free_port();
    let _daemon = serve(&env, port);
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "/readyz", || async {
        (http_status(&format!("{base}/readyz")).await == Some(200)).then_some(())
    })
    .await;
    let connections = || async {
        let client = redis::Client::open(redis.url()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private redis");
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("total_connections_received")
    };
    let before = connections().await;
    let probes = (0..40).map(|i| {
        let url = format!("{base}/{}", if i % 2 == 0 { "readyz" } else { "metrics" });
        async move { http_status(&url).await }
    });
    let answers = futures::future::join_all(probes).await;
    assert!(
        answers.iter().all(|a| matches!(a, Some(200) | Some(503))),
        "{answers:?}"
    );
    assert!(answers.contains(&Some(200)), "{answers:?}");
    let opened = connections().await - before;
    // One for the counting connection itself, and at most one reconnect.
    assert!(
        opened <= 2,
        "{opened} Redis connections opened by 40 probes"
    );
}
