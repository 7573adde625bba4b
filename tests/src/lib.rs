//! Test harness for Ebb's integration tests: real Postgres and Redis on
//! 127.0.0.1, the real `ebb` and `ebb-worker` binaries, and destination
//! emulators. Each [`TestEnv`] has its own databases and Redis key prefix, so
//! tests run in parallel.

pub mod bigquery;
pub mod braze;
pub mod conformance;
pub mod customerio;
pub mod google_ads;
pub mod hubspot;
pub mod intercom;
pub mod keys;
pub mod mailchimp;
pub mod mariadb;
pub mod meta;
pub mod otlp;
pub mod rate_window;
pub mod receiver;
pub mod rest_api;
pub mod salesforce;
pub mod slow_link;
pub mod snowflake;
pub mod zendesk;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use sqlx::PgPool;
use tokio::process::{Child, Command};

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// How long one `ebb` command may take in a test. Generous on purpose: a
/// test asserts what a run did, not how fast (that is for the benchmarks),
/// and a loaded 2-core machine is slow.
pub const EBB_DEADLINE: Duration = Duration::from_secs(300);
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Where cargo put `ebb` and `ebb-worker` (next to the test binary's folder).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// What every test config starts with: `{HEADER}` in a config given to
/// [`TestEnv::new`] becomes this env's `[state]` and `[sources.warehouse]`.
const HEADER: &str = r#"
[state]
database_url = "{STATE_URL}"
redis_url = "{REDIS_URL}"
queue_prefix = "{PREFIX}"

[sources.warehouse]
type = "postgres"
url = "{WAREHOUSE_URL}"
"#;

pub struct TestEnv {
    pub id: String,
    pub dir: PathBuf,
    pub state: PgPool,
    pub warehouse: PgPool,
    pub app: PgPool,
    pub urls: Urls,
    workers: Vec<(Child, WorkerSpec)>,
    template: (String, Vec<(String, String)>),
    /// `ebb` commands run so far, to name their log files.
    commands: std::sync::atomic::AtomicUsize,
}

/// How a worker was started, to restart it the same way.
struct WorkerSpec {
    concurrency: usize,
    env: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct Urls {
    pub state: String,
    pub warehouse: String,
    pub app: String,
    pub prefix: String,
    pub redis: String,
}

impl TestEnv {
    /// Creates the databases; `config` is written as ebb.toml after replacing
    /// `{HEADER}`, `{STATE_URL}`, `{WAREHOUSE_URL}`, `{APP_URL}`, `{PREFIX}` and any
    /// `extra` placeholders.
    pub async fn new(config: &str, extra: &[(&str, String)]) -> TestEnv {
        TestEnv::new_on_redis(config, extra, REDIS_URL).await
    }

    /// Like [`TestEnv::new`], with the queue on another Redis (`{REDIS_URL}`).
    pub async fn new_on_redis(config: &str, extra: &[(&str, String)], redis: &str) -> TestEnv {
        let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
        let admin = PgPool::connect(ADMIN_URL)
            .await
            .expect("connect to the local Postgres as postgres");
        let mut urls = Urls {
            state: String::new(),
            warehouse: String::new(),
            app: String::new(),
            prefix: format!("ebbtest-{id}"),
            redis: redis.to_owned(),
        };
        for (role, slot) in [
            ("state", &mut urls.state),
            ("wh", &mut urls.warehouse),
            ("app", &mut urls.app),
        ] {
            let db = format!("ebb_t_{id}_{role}");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&admin)
                .await
                .expect("create test database");
            *slot = format!("postgres://postgres@127.0.0.1:5432/{db}");
        }
        admin.close().await;
        let dir = std::env::temp_dir().join(format!("ebb-test-{id}"));
        std::fs::create_dir_all(dir.join("models")).expect("temp dir");
        let env = TestEnv {
            state: PgPool::connect(&urls.state).await.expect("state db"),
            warehouse: PgPool::connect(&urls.warehouse)
                .await
                .expect("warehouse db"),
            app: PgPool::connect(&urls.app).await.expect("app db"),
            id,
            dir,
            urls,
            workers: Vec::new(),
            commands: Default::default(),
            template: (
                config.to_owned(),
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            ),
        };
        env.write_config(config, extra);
        env
    }

    pub fn write_config(&self, config: &str, extra: &[(&str, String)]) {
        let mut text = config
            .replace("{HEADER}", HEADER)
            .replace("{STATE_URL}", &self.urls.state)
            .replace("{WAREHOUSE_URL}", &self.urls.warehouse)
            .replace("{APP_URL}", &self.urls.app)
            .replace("{PREFIX}", &self.urls.prefix)
            .replace("{REDIS_URL}", &self.urls.redis);
        for (k, v) in extra {
            text = text.replace(k, v);
        }
        std::fs::write(self.dir.join("ebb.toml"), text).expect("write ebb.toml");
    }

    /// Moves Ebb's state database to another server (e.g. a
    /// [`PrivatePostgres`] the test can crash), before anything ran.
    pub async fn move_state_to(&mut self, admin_url: &str) {
        let admin = PgPool::connect(admin_url)
            .await
            .expect("connect to the other server");
        let db = format!("ebb_t_{}_state", self.id);
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await
            .expect("create state database");
        admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(admin_url);
        self.urls.state = format!("{base}/{db}");
        self.state = PgPool::connect(&self.urls.state).await.expect("state db");
        let (config, extra) = self.template.clone();
        let extra: Vec<(&str, String)> =
            extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        self.write_config(&config, &extra);
    }

    pub fn write_file(&self, relative: &str, content: &str) {
        let path = self.dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the file's folder");
        }
        std::fs::write(path, content).expect("write file");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("ebb.toml")
    }

    /// `ebb --config <this env's ebb.toml> ARGS`, logging warnings as text.
    pub fn ebb_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("ebb"));
        cmd.arg("--config").arg(self.config_path()).args(args);
        cmd.env("RUST_LOG", "warn")
            .env("EBB_LOG_TEXT", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Replaces `from` (which must be there) with `to` in this env's
    /// `ebb.toml`.
    pub fn replace_in_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config_path()).expect("read ebb.toml");
        assert!(text.contains(from), "`{from}` is not in ebb.toml");
        std::fs::write(self.config_path(), text.replace(from, to)).expect("write ebb.toml");
    }

    /// Plans `sync` (a model of `rows` rows) and asserts the planner's peak
    /// memory stayed under `limit_mib`: the model was streamed, not held.
    pub async fn assert_plan_streams(&self, sync: &str, rows: u64, limit_mib: u64) {
        let (plan, peak_kib) = self.plan_with_peak_memory(sync).await;
        assert_eq!(plan["added"], rows, "{plan}");
        eprintln!(
            "ebb plan read {rows} rows with a peak RSS of {} MiB",
            peak_kib / 1024
        );
        assert!(
            peak_kib < limit_mib * 1024,
            "the planner held {} MiB: the model is not streamed",
            peak_kib / 1024
        );
    }

    /// Runs `ebb plan SYNC --json` and returns its plan with the planner's
    /// peak resident memory in KiB (VmHWM, read while it runs).
    pub async fn plan_with_peak_memory(&self, sync: &str) -> (serde_json::Value, u64) {
        let mut plan = self
            .ebb_command(&["plan", sync, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ebb plan");
        let pid = plan.id().expect("pid");
        let mut peak = 0;
        while plan.try_wait().expect("wait for ebb plan").is_none() {
            if let Some(kib) = peak_rss_kib(pid) {
                peak = peak.max(kib);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let output = plan.wait_with_output().await.expect("ebb plan output");
        assert!(
            output.status.success(),
            "ebb plan failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(peak > 0, "the planner's memory was never read");
        let plan = serde_json::from_slice(&output.stdout).expect("plan JSON");
        (plan, peak)
    }

    /// Runs `ebb ARGS` to completion, within [`EBB_DEADLINE`]. Its stdout
    /// and stderr are also kept in the test directory, in files named after
    /// the command, so a failed test can be read after the fact.
    pub async fn ebb(&self, args: &[&str]) -> Output {
        self.ebb_within(args, EBB_DEADLINE).await
    }

    /// [`TestEnv::ebb`] with another deadline.
    pub async fn ebb_within(&self, args: &[&str], deadline: Duration) -> Output {
        let n = self
            .commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name: String = args
            .iter()
            .take(2)
            .flat_map(|a| a.chars().filter(|c| c.is_ascii_alphanumeric()).take(12))
            .collect();
        let stdout_path = self.dir.join(format!("ebb-{n:02}-{name}.out"));
        let stderr_path = self.dir.join(format!("ebb-{n:02}-{name}.err"));
        let file = |path: &Path| std::fs::File::create(path).expect("command log file");
        let mut cmd = self.ebb_command(args);
        cmd.stdout(file(&stdout_path))
            .stderr(file(&stderr_path))
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn ebb");
        let status = match tokio::time::timeout(deadline, child.wait()).await {
            Ok(status) => status.expect("wait for ebb"),
            Err(_) => {
                let _ = child.start_kill();
                let diagnosis = self.diagnosis(&stderr_path).await;
                panic!(
                    "`ebb {}` did not finish within {deadline:?}; its output is in {} and {}\n{diagnosis}",
                    args.join(" "),
                    stdout_path.display(),
                    stderr_path.display()
                )
            }
        };
        Output {
            status,
            stdout: std::fs::read(&stdout_path).unwrap_or_default(),
            stderr: std::fs::read(&stderr_path).unwrap_or_default(),
        }
    }

    /// Runs `ebb ARGS --json`, expecting success, and parses stdout.
    pub async fn ebb_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.ebb(&all).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "`ebb {}` printed no JSON ({e}); exit {:?}\nstdout: {stdout}\nstderr: {}",
                all.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `ebb run SYNC --json` → the run object; asserts the command's exit code
    /// matches the run state.
    pub async fn run_sync(&self, sync: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["run", sync];
        args.extend_from_slice(extra);
        let summary = self.ebb_json(&args).await;
        summary["run"].clone()
    }

    pub fn start_worker(&mut self, concurrency: usize) -> u32 {
        self.start_worker_with(concurrency, &[])
    }

    /// Starts a worker with extra environment (e.g. `EBB_FAULTS`); returns its pid.
    pub fn start_worker_with(&mut self, concurrency: usize, env: &[(&str, &str)]) -> u32 {
        let spec = WorkerSpec {
            concurrency,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let child = self.spawn_worker(&spec, self.workers.len());
        let pid = child.id().expect("worker pid");
        self.workers.push((child, spec));
        pid
    }

    fn spawn_worker(&self, spec: &WorkerSpec, index: usize) -> Child {
        // Appends, so a restarted worker's log follows its predecessor's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker-{index}.log")))
            .expect("log file");
        Command::new(bin("ebb-worker"))
            .arg("--config")
            .arg(self.config_path())
            .arg("--concurrency")
            .arg(spec.concurrency.to_string())
            .arg("--name")
            .arg(format!("test-{}-{index}", self.id))
            .env("RUST_LOG", "info")
            .env("EBB_LOG_TEXT", "1")
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ebb-worker")
    }

    /// Starts `ebb serve` on `port` with `args`; its log (appended across
    /// restarts) is `serve.log` in the test directory.
    pub fn serve(&self, port: u16, args: &[&str]) -> Child {
        self.serve_command(port, args, "serve.log")
            .spawn()
            .expect("spawn ebb serve")
    }

    /// Starts `ebb serve` as if on host `host` (its planner identity is
    /// `ebb-serve@<host>:<pid>`), logging to `serve-<host>.log`.
    pub fn serve_as_host(&self, port: u16, host: &str) -> Child {
        let mut command = self.serve_command(port, &[], &format!("serve-{host}.log"));
        command.env("HOSTNAME", host);
        command.spawn().expect("spawn ebb serve")
    }

    fn serve_command(&self, port: u16, args: &[&str], log: &str) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))
            .expect("serve log");
        let mut command = Command::new(bin("ebb"));
        command
            .arg("--config")
            .arg(self.config_path())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("EBB_LOG_TEXT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        command
    }

    /// Restarts every worker that has exited, as Kubernetes would; returns
    /// how many were restarted.
    pub fn restart_dead_workers(&mut self) -> usize {
        let mut restarted = 0;
        for index in 0..self.workers.len() {
            let exited = matches!(self.workers[index].0.try_wait(), Ok(Some(_)));
            if exited {
                let child = self.spawn_worker(&self.workers[index].1, index);
                self.workers[index].0 = child;
                restarted += 1;
            }
        }
        restarted
    }

    /// The destination's id for a record, as the ledger holds it.
    pub async fn ledger_id(&self, sync: &str, key: &str) -> Option<String> {
        sqlx::query_scalar(
            "SELECT destination_id FROM ebb_ledger WHERE sync_name = $1 AND record_key = $2",
        )
        .bind(sync)
        .bind(key)
        .fetch_optional(&self.state)
        .await
        .expect("ledger")
        .flatten()
    }

    /// Rewrites the config, then runs `ebb check --connect`.
    pub async fn check_connect_with(
        &self,
        config: &str,
        extra: &[(&str, String)],
    ) -> (Option<i32>, String, String) {
        self.write_config(config, extra);
        self.check_connect().await
    }

    /// `ebb check --connect`: (exit code, stdout, stderr).
    pub async fn check_connect(&self) -> (Option<i32>, String, String) {
        let out = self.ebb(&["check", "--connect"]).await;
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Whether worker `index` has exited (and is not restarted).
    pub fn worker_exited(&mut self, index: usize) -> bool {
        matches!(self.workers[index].0.try_wait(), Ok(Some(_)))
    }

    /// SIGKILLs worker `index` (no cleanup, no acks) and reaps it.
    pub async fn kill_worker(&mut self, index: usize) {
        let child = &mut self.workers[index].0;
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Sends SIGTERM to worker `index` and waits for it to exit; returns
    /// whether it exited successfully.
    pub async fn terminate_worker(&mut self, index: usize) -> bool {
        let child = &mut self.workers[index].0;
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("worker did not exit within 60 s of SIGTERM")
            .expect("wait for worker");
        status.success()
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.urls.redis.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis")
    }

    /// Deletes every Redis key of this env's queue, as FLUSHALL or a Redis
    /// restart without persistence would (scoped, so parallel tests survive).
    pub async fn wipe_queue(&self) -> usize {
        let mut conn = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}:*", self.urls.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("DEL");
        }
        keys.len()
    }

    /// Tasks waiting on this env's queues (one per destination): apalis-redis
    /// pushes them into the `scheduled` ZSET, and a worker's fetch promotes
    /// them to the `active` list.
    pub async fn queued_tasks(&self) -> i64 {
        let mut conn = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}:writes:*", self.urls.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let mut waiting = 0;
        for key in keys {
            let n: i64 = if key.ends_with(":active") {
                redis::cmd("LLEN").arg(&key).query_async(&mut conn).await
            } else if key.ends_with(":scheduled") {
                redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await
            } else {
                continue;
            }
            .expect("queue length");
            waiting += n;
        }
        waiting
    }

    /// Deletes the task of batch `batch_no` of run `run_id` from this env's
    /// queues, as a lost task would be gone; returns whether it was there.
    pub async fn drop_task(&self, run_id: i64, batch_no: i64) -> bool {
        let mut conn = self.redis().await;
        let hashes: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}:writes:*}}:data", self.urls.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        for hash in hashes {
            let queue = hash.trim_end_matches(":data");
            let tasks: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&hash)
                .query_async(&mut conn)
                .await
                .expect("HGETALL");
            for (id, payload) in tasks {
                let task: serde_json::Value = serde_json::from_str(&payload).expect("task JSON");
                if task["run_id"] == run_id && task["batch_no"] == batch_no {
                    let _: () = redis::pipe()
                        .cmd("LREM")
                        .arg(format!("{queue}:active"))
                        .arg(0)
                        .arg(&id)
                        .cmd("ZREM")
                        .arg(format!("{queue}:scheduled"))
                        .arg(&id)
                        .cmd("HDEL")
                        .arg(&hash)
                        .arg(&id)
                        .query_async(&mut conn)
                        .await
                        .expect("delete a task");
                    return true;
                }
            }
        }
        false
    }

    /// Process ids of the workers started so far (None once one has exited).
    pub fn worker_pids(&self) -> Vec<Option<u32>> {
        self.workers.iter().map(|(c, _)| c.id()).collect()
    }

    pub fn worker_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("worker-{index}.log"))).unwrap_or_default()
    }

    pub async fn scalar_i64(pool: &PgPool, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .expect(sql)
    }
}

/// The last `n` lines of a text file, each indented, or why there are none.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..].iter().map(|l| format!("    {l}\n")).collect()
        }
        Err(e) => format!("    ({e})\n"),
    }
}

impl TestEnv {
    /// What a hung command leaves to look at, for the test's own output
    /// (CI keeps only that): the command's last log lines, the runs and
    /// unsettled batches, the test databases' sessions that wait on a lock
    /// or sit in a transaction, and each worker's last log lines.
    async fn diagnosis(&self, stderr_path: &Path) -> String {
        let mut out = format!(
            "--- last lines of {}:\n{}",
            stderr_path.display(),
            tail(stderr_path, 15)
        );
        let queries: [(&str, &str, &PgPool); 3] = [
            (
                "runs",
                "SELECT to_jsonb(r) - 'error' - 'traceparent' FROM ebb_runs r ORDER BY id",
                &self.state,
            ),
            (
                "unsettled batches",
                "SELECT to_jsonb(b) FROM ebb_batches b WHERE state <> 'settled' ORDER BY run_id, batch_no",
                &self.state,
            ),
            (
                "sessions waiting on a lock or in a transaction",
                "SELECT jsonb_build_object('db', datname, 'app', application_name, 'state', state, \
                     'wait', wait_event_type || ':' || wait_event, 'since', now() - xact_start, \
                     'blocked_by', pg_blocking_pids(pid), 'query', left(query, 200)) \
                 FROM pg_stat_activity WHERE datname LIKE 'ebb_t_%' \
                 AND (wait_event_type = 'Lock' OR state LIKE 'idle in transaction%' OR now() - query_start > interval '30 seconds' AND state = 'active')",
                &self.state,
            ),
        ];
        for (what, sql, pool) in queries {
            out.push_str(&format!("--- {what}:\n"));
            let rows = tokio::time::timeout(
                Duration::from_secs(5),
                sqlx::query_scalar::<_, serde_json::Value>(sqlx::AssertSqlSafe(sql))
                    .fetch_all(pool),
            )
            .await;
            match rows {
                Ok(Ok(rows)) => {
                    for row in rows {
                        out.push_str(&format!("    {row}\n"));
                    }
                }
                Ok(Err(e)) => out.push_str(&format!("    ({e})\n")),
                Err(_) => out.push_str("    (no answer within 5 s)\n"),
            }
        }
        out.push_str("--- queue keys (type, size):\n");
        match tokio::time::timeout(Duration::from_secs(5), self.queue_sizes()).await {
            Ok(Ok(sizes)) => out.push_str(&sizes),
            Ok(Err(e)) => out.push_str(&format!("    ({e})\n")),
            Err(_) => out.push_str("    (no answer within 5 s)\n"),
        }
        for (index, (worker, _)) in self.workers.iter().enumerate() {
            let path = self.dir.join(format!("worker-{index}.log"));
            // A zombie (`Z`) has exited and awaits its parent's wait.
            let alive = worker
                .id()
                .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
                .and_then(|stat| {
                    stat.rsplit_once(") ")
                        .map(|(_, rest)| !rest.starts_with('Z'))
                })
                .unwrap_or(false);
            out.push_str(&format!(
                "--- worker {index} ({}), last lines of {}:\n{}",
                if alive { "running" } else { "exited" },
                path.display(),
                tail(&path, 25)
            ));
        }
        out
    }

    /// Each of this env's Redis keys with its type and size, one per line.
    async fn queue_sizes(&self) -> redis::RedisResult<String> {
        let mut conn = redis::Client::open(self.urls.redis.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}:*", self.urls.prefix))
            .query_async(&mut conn)
            .await?;
        keys.sort();
        let mut out = String::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await?;
            let size_command = match kind.as_str() {
                "list" => Some("LLEN"),
                "set" => Some("SCARD"),
                "zset" => Some("ZCARD"),
                "hash" => Some("HLEN"),
                _ => None,
            };
            let size: i64 = match size_command {
                Some(command) => redis::cmd(command).arg(&key).query_async(&mut conn).await?,
                None => 1,
            };
            out.push_str(&format!("    {key} {kind} {size}\n"));
        }
        Ok(out)
    }

    /// Shell commands that dump Ebb's state and queue into the test
    /// directory.
    fn dump_script(&self) -> String {
        let dir = self.dir.display();
        let state = &self.urls.state;
        let mut dump = String::new();
        for (name, sql) in [
            ("runs", "SELECT * FROM ebb_runs ORDER BY id"),
            ("events", "SELECT * FROM ebb_run_events ORDER BY id"),
            (
                "batches",
                "SELECT * FROM ebb_batches ORDER BY run_id, batch_no",
            ),
            (
                "dlq",
                "SELECT id, sync_name, stage, kind, record_key, reason, status FROM ebb_dlq ORDER BY id",
            ),
        ] {
            dump.push_str(&format!(
                "psql -q '{state}' -c \"\\copy ({sql}) TO '{dir}/state-{name}.csv' CSV HEADER\" >/dev/null 2>&1; "
            ));
        }
        dump.push_str(&format!(
            "for k in $(redis-cli -u '{redis}' --scan --pattern '{{{prefix}:*'); do \
             echo \"$k $(redis-cli -u '{redis}' type \"$k\")\"; done > '{dir}/queue.txt' 2>&1; ",
            redis = self.urls.redis,
            prefix = self.urls.prefix,
        ));
        dump
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for (w, _) in &mut self.workers {
            let _ = w.start_kill();
        }
        let id = &self.id;
        let prefix = &self.urls.prefix;
        let dir = self.dir.display();
        // A failed test keeps its directory (config, `ebb` and worker logs)
        // with a dump of Ebb's state and queue, and says where it is.
        let failed = std::thread::panicking();
        // EBB_TEST_KEEP=1 keeps every test's directory and databases, to
        // look at a run that passed (a benchmark's timeline, say).
        if std::env::var_os("EBB_TEST_KEEP").is_some_and(|v| v == "1") {
            eprintln!("EBB_TEST_KEEP: kept {dir} and the databases ebb_t_{id}_*");
            return;
        }
        let (dump, remove_dir) = if failed {
            eprintln!(
                "\nthe failed test's directory is kept: {dir}\n  (ebb.toml, ebb-*.out/.err, worker-*.log, state-*.csv, queue.txt)"
            );
            (self.dump_script(), String::new())
        } else {
            (String::new(), format!("rm -rf '{dir}'"))
        };
        // Best effort: leave no databases or Redis keys behind.
        let script = format!(
            "{dump}sleep 0.5; for r in state wh app; do psql -q '{ADMIN_URL}' -c \"DROP DATABASE IF EXISTS ebb_t_{id}_$r WITH (FORCE)\" >/dev/null 2>&1; done; \
             redis-cli -h 127.0.0.1 --scan --pattern '{{{prefix}:*' | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1; {remove_dir}"
        );
        let mut cleanup = std::process::Command::new("sh");
        cleanup
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if failed {
            // The dump must be written before the test process exits.
            let _ = cleanup.status();
        } else {
            let _ = cleanup.spawn();
        }
    }
}

/// Polls `check` every 200 ms until it returns Some, or panics after `limit`
/// naming `what` it waited for.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(limit, Duration::from_millis(200), what, check).await
}

/// [`eventually`], polling every `every`.
pub async fn eventually_every<T, F, Fut>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// What a source streams for `sync`'s model, sorted by key, read through
/// the source as the planner reads it (described, mapped, streamed).
pub async fn source_rows(
    config: &ebb_shared::config::Config,
    sync: &str,
) -> Result<Vec<ebb_shared::sources::SourceRow>, String> {
    use futures::TryStreamExt;
    let sync = config.sync(sync).map_err(|e| e.to_string())?;
    let source = config
        .source(&sync.source)
        .ok_or_else(|| format!("no source `{}`", sync.source))?
        .connect(&sync.source)
        .await
        .map_err(|e| e.to_string())?;
    let mapping = ebb_shared::sources::source::resolve_mapping(source.as_ref(), sync)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows: Vec<ebb_shared::sources::SourceRow> = source
        .stream(sync, &mapping)
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(rows)
}

/// What every source proves with the 1,000 customers of `seed_customers`
/// synced by sync `customers` into the replica: the first run delivers
/// them all (their lifetime values summing to 750,750.00), a re-run with
/// nothing changed sends nothing, and after `change` (which must change
/// the plan of 100 rows, and may do more) exactly those 100 go out as
/// updates. Returns that last run for the caller's own checks.
pub async fn assert_syncs_then_sends_only_changes<F, Fut>(
    env: &TestEnv,
    change: F,
) -> serde_json::Value
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let first = env.run_sync("customers", &[]).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["delivered"], 1000, "{first}");
    let sum: String = sqlx::query_scalar("SELECT sum(lifetime_value)::text FROM customers_synced")
        .fetch_one(&env.app)
        .await
        .expect("the replica's sum");
    assert_eq!(sum, "750750.00");

    let unchanged = env.run_sync("customers", &[]).await;
    assert_eq!(unchanged["to_send"], 0, "{unchanged}");
    assert_eq!(unchanged["unchanged"], 1000, "{unchanged}");
    assert_eq!(unchanged["delivered"], 0, "{unchanged}");

    change().await;
    let changed = env.run_sync("customers", &[]).await;
    assert_eq!(changed["state"], "succeeded", "{changed}");
    assert_eq!(changed["planned_changed"], 100, "{changed}");
    assert_eq!(changed["delivered"], changed["to_send"], "{changed}");
    let enterprise = TestEnv::scalar_i64(
        &env.app,
        "SELECT count(*) FROM customers_synced WHERE plan = 'enterprise'",
    )
    .await;
    assert_eq!(enterprise, 100);
    changed
}

/// Asserts that two sources streamed the same records, byte for byte.
pub fn assert_same_rows(
    left: &[ebb_shared::sources::SourceRow],
    right: &[ebb_shared::sources::SourceRow],
    what: &str,
) {
    assert_eq!(left.len(), right.len(), "{what}: row counts");
    for (l, r) in left.iter().zip(right) {
        assert_eq!(l.key, r.key, "{what}: keys");
        assert_eq!(
            String::from_utf8_lossy(&l.payload),
            String::from_utf8_lossy(&r.payload),
            "{what}"
        );
    }
}

/// The peak resident memory (VmHWM) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A server a test can take down and bring back.
pub trait Outage {
    /// Takes the server down the hard way (crash, SIGKILL).
    fn stop(&mut self);
    fn start(&mut self);
    fn is_stopped(&self) -> bool;
}

impl Outage for PrivateRedis {
    fn stop(&mut self) {
        self.kill();
    }
    fn start(&mut self) {
        self.start_again();
    }
    fn is_stopped(&self) -> bool {
        self.server.is_none()
    }
}

impl Outage for PrivatePostgres {
    fn stop(&mut self) {
        self.crash();
    }
    fn start(&mut self) {
        self.start_again();
    }
    fn is_stopped(&self) -> bool {
        self.server.is_none()
    }
}

/// A Redis of a test's own on a random port, without persistence, that the
/// test can kill and start again (as a crash or a restart without
/// persistence would).
pub struct PrivateRedis {
    pub port: u16,
    server: Option<std::process::Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = free_port();
        let mut redis = PrivateRedis { port, server: None };
        redis.start_again();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port, empty, and waits for it.
    pub fn start_again(&mut self) {
        let server = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (scripts/ensure-services.sh installs it)");
        self.server = Some(server);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private redis did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the server: its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Postgres server of a test's own (initdb in a temp dir, random port)
/// that the test can crash (immediate shutdown, as a failover or an OOM kill
/// would) and start again on the same data.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// The user the server runs as (postgres refuses root).
    uid: Option<u32>,
    server: Option<std::process::Child>,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql (scripts/ensure-services.sh installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("ebb-pg-{port}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let uid_of = |args: &[&str]| -> u32 {
            let out = std::process::Command::new("id")
                .args(args)
                .output()
                .expect("run id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric uid")
        };
        let uid = if uid_of(&["-u"]) == 0 {
            let uid = uid_of(&["-u", "postgres"]);
            let status = std::process::Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success());
            Some(uid)
        } else {
            None
        };
        let mut initdb = std::process::Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(uid) = uid {
            std::os::unix::process::CommandExt::uid(&mut initdb, uid);
        }
        assert!(
            initdb.status().expect("run initdb").success(),
            "initdb failed"
        );
        let mut pg = PrivatePostgres {
            port,
            dir,
            bin,
            uid,
            server: None,
        };
        pg.start_again();
        pg
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on its data directory and waits until it accepts
    /// connections.
    pub fn start_again(&mut self) {
        let mut postgres = std::process::Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(uid) = self.uid {
            std::os::unix::process::CommandExt::uid(&mut postgres, uid);
        }
        self.server = Some(postgres.spawn().expect("spawn postgres"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = std::process::Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "private postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Immediate shutdown (SIGQUIT): connections drop at once, nothing is
    /// flushed; the next start recovers from the WAL.
    pub fn crash(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = std::process::Command::new("kill")
                .arg("-QUIT")
                .arg(server.id().to_string())
                .status();
            let _ = server.wait();
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An emulator whose next writes are applied and their answers lost (the
/// `drop_after_apply_left` knob).
pub trait LosesAnswers {
    /// The writes whose answers are still to be lost.
    fn answers_to_lose(&mut self) -> &mut u32;
}

/// Called after a write was applied: when an answer is due to be lost,
/// unwinds out of the handler, which makes hyper drop the connection
/// without a response (`resume_unwind` skips the panic hook's noise).
pub fn drop_answer_if_due<S: LosesAnswers>(state: &std::sync::Arc<std::sync::Mutex<S>>) {
    let mut s = state.lock().expect("emulator lock");
    let left = s.answers_to_lose();
    if *left > 0 {
        *left -= 1;
        drop(s);
        std::panic::resume_unwind(Box::new("emulated dropped connection"));
    }
}

/// Runs one SQL statement, panicking with it if it fails.
pub async fn exec(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.expect(sql);
}

/// The reason of the DLQ entry for record `key` in `ebb dlq list --json`.
pub fn dlq_reason(dlq: &serde_json::Value, key: &str) -> String {
    dlq.as_array()
        .expect("dlq list")
        .iter()
        .find(|e| e["record_key"] == key)
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_else(|| panic!("no DLQ entry for {key}: {dlq}"))
        .to_owned()
}

/// `extra` placeholders with `placeholder` set to `value`; panics when
/// `placeholder` is not among them, so a test cannot change nothing.
pub fn replacing(
    extra: &[(&'static str, String)],
    placeholder: &str,
    value: &str,
) -> Vec<(&'static str, String)> {
    assert!(
        extra.iter().any(|(name, _)| *name == placeholder),
        "no placeholder {placeholder}"
    );
    extra
        .iter()
        .map(|(name, old)| {
            let new = if *name == placeholder {
                value.to_owned()
            } else {
                old.clone()
            };
            (*name, new)
        })
        .collect()
}

/// Waits until `url` answers 2xx (a server or a driver coming up).
pub async fn wait_until_up(url: &str, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        reqwest::get(url)
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
}

/// Serves an emulator's routes on `addr` (`127.0.0.1:0`: a free port) in
/// the background; returns the address it listens on.
pub async fn serve_emulator(app: axum::Router, addr: &str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    let addr = listener.local_addr().expect("emulator address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Creates `analytics.customers` in the warehouse with `n` valid rows.
pub async fn seed_customers(warehouse: &PgPool, n: i64) {
    sqlx::query("CREATE SCHEMA IF NOT EXISTS analytics")
        .execute(warehouse)
        .await
        .expect("schema");
    sqlx::query(
        "CREATE TABLE analytics.customers (id BIGINT, email TEXT, first_name TEXT, plan TEXT, ltv NUMERIC(12,2))",
    )
    .execute(warehouse)
    .await
    .expect("table");
    sqlx::query(
        "INSERT INTO analytics.customers SELECT g, 'user' || g || '@example.com', 'Name' || g, \
         (ARRAY['free','pro'])[1 + g % 2], g * 1.5 FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(warehouse)
    .await
    .expect("seed");
}

/// The replica table used by postgres-destination tests.
pub async fn create_replica(app: &PgPool) {
    sqlx::query(
        "CREATE TABLE public.customers_synced (customer_id BIGINT PRIMARY KEY, \
         email TEXT NOT NULL CHECK (email LIKE '%@%'), first_name TEXT NOT NULL, plan TEXT, lifetime_value NUMERIC(12,2))",
    )
    .execute(app)
    .await
    .expect("replica table");
}
