//! Throughput benchmark (not a test): syncs a generated model of N rows
//! (default 1,000,000) through the real planner, Redis queue and worker
//! processes into the `postgres` destination and into a local HTTP receiver,
//! and prints a Markdown report: rows/s for the first sync, a no-change
//! re-sync and a 1%-changed re-sync, peak memory of the planner and the
//! workers, and each time as a ratio of a plain `COPY (model) TO STDOUT` of the
//! same query measured in the same run.
//!
//! Run it with `scripts/bench.sh` (release build); see docs/benchmarks.md.
//! Arguments: `--rows N`, `--workers N`, `--concurrency N`, `--batch N`,
//! `--repeat N` (every phase N times, each on fresh databases with its own
//! COPY baseline; the report gives medians), `--postgres-only` (skips the
//! http receiver's phases), `--peer sling` (also runs Sling on the same
//! model, in the same run: its binary from `SLING_BIN`, which
//! `scripts/bench.sh --peer sling` installs from PyPI).

use std::time::{Duration, Instant};

use ebb_tests::receiver::Receiver;
use ebb_tests::{TestEnv, create_replica, seed_customers};
use sqlx::PgPool;

const MODEL: &str = "SELECT id, email, first_name, plan, ltv FROM analytics.customers";

const CONFIG: &str = r#"
{HEADER}

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = {BATCH}

[destinations.receiver]
type = "http"
url = "{RECEIVER_URL}"
batch_size = {BATCH}

[syncs.to_postgres]
source = "warehouse"
model = "{MODEL}"
primary_key = "id"
destination = "replica"
mode = "upsert"

[syncs.to_postgres.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"

[syncs.to_http]
source = "warehouse"
model = "{MODEL}"
primary_key = "id"
destination = "receiver"
mode = "upsert"
"#;

struct Args {
    rows: i64,
    workers: usize,
    concurrency: usize,
    batch: usize,
    /// Each phase is measured this many times, each time on fresh
    /// databases; the report gives medians.
    repeat: usize,
    /// The http receiver's phases are skipped (long runs).
    postgres_only: bool,
    /// The Sling binary, to run it side by side.
    sling: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        rows: 1_000_000,
        workers: 2,
        concurrency: 4,
        batch: 1000,
        repeat: 1,
        postgres_only: false,
        sling: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--peer" {
            match it.next().as_deref() {
                Some("sling") => {
                    args.sling = Some(std::env::var("SLING_BIN").unwrap_or_else(|_| {
                        panic!(
                            "--peer sling needs SLING_BIN (scripts/bench.sh --peer sling sets it)"
                        )
                    }))
                }
                other => panic!("--peer takes `sling`, not {other:?}"),
            }
            continue;
        }
        if flag == "--postgres-only" {
            args.postgres_only = true;
            continue;
        }
        let mut value = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a positive number"))
        };
        match flag.as_str() {
            "--rows" => args.rows = value("--rows") as i64,
            "--workers" => args.workers = value("--workers"),
            "--concurrency" => args.concurrency = value("--concurrency"),
            "--batch" => args.batch = value("--batch"),
            "--repeat" => args.repeat = value("--repeat").max(1),
            // cargo bench passes `--bench` to harness-less benchmarks.
            "--bench" => {}
            other => {
                panic!(
                    "unknown argument {other:?}; use --rows, --workers, --concurrency, --batch, --repeat, --postgres-only, --peer sling"
                )
            }
        }
    }
    args
}

/// Peak resident memory (VmHWM) of a live process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct Phase {
    name: String,
    seconds: f64,
    plan_seconds: f64,
    sent: i64,
    planner_peak_kib: u64,
}

/// Runs `ebb run SYNC --json`, sampling the planner's peak memory every 20 ms
/// (VmHWM only grows, so the last sample before exit is the peak within one
/// sampling interval).
async fn timed_run(env: &TestEnv, sync: &str, phase: &str, extra: &[&str]) -> Phase {
    let mut args = vec!["run", sync, "--json"];
    args.extend_from_slice(extra);
    let mut cmd = env.ebb_command(&args);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn ebb run");
    let pid = child.id().expect("planner pid");
    let output = child.wait_with_output();
    tokio::pin!(output);
    let mut peak = 0;
    let output = loop {
        tokio::select! {
            out = &mut output => break out.expect("wait for ebb run"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "`ebb run {sync}` printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let run = &summary["run"];
    assert_eq!(run["state"], "succeeded", "{phase}: {run}");
    assert_eq!(run["rejected"], 0, "{phase}: {run}");
    let at = |field: &str| {
        run[field]
            .as_str()
            .and_then(chrono_seconds)
            .unwrap_or_else(|| panic!("run has no {field}: {run}"))
    };
    Phase {
        name: phase.to_owned(),
        seconds,
        plan_seconds: at("planned_at") - at("created_at"),
        sent: run["delivered"].as_i64().unwrap_or(-1),
        planner_peak_kib: peak,
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp as serialized by chrono.
fn chrono_seconds(text: &str) -> Option<f64> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(parsed.timestamp_micros() as f64 / 1e6)
}

/// Streams `COPY (model) TO STDOUT` to the end, discarding the bytes.
async fn copy_out_seconds(env: &TestEnv) -> (f64, u64) {
    use futures::TryStreamExt;
    let mut conn = env.warehouse.acquire().await.expect("warehouse connection");
    let started = Instant::now();
    let mut stream = conn
        .copy_out_raw(&format!("COPY ({MODEL}) TO STDOUT"))
        .await
        .expect("COPY TO STDOUT");
    let mut bytes = 0u64;
    while let Some(chunk) = stream.try_next().await.expect("COPY chunk") {
        bytes += chunk.len() as u64;
    }
    (started.elapsed().as_secs_f64(), bytes)
}

/// `url` with TLS turned off (the server is local).
fn without_tls(url: &str) -> String {
    if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    }
}

/// One Sling run of the same model into the destination database, in its
/// incremental mode (primary key `id`, cursor `updated_at`: it reads only
/// rows newer than the target's newest, and never sees deletes), timed and
/// with its peak memory sampled as the planner's is. Returns the phase and
/// the rows Sling says it wrote.
async fn sling_run(sling: &str, env: &TestEnv, phase: &str) -> (Phase, i64) {
    let mut cmd = tokio::process::Command::new(sling);
    cmd.args([
        "run",
        "--src-conn",
        "EBB_BENCH_WAREHOUSE",
        "--src-stream",
        "analytics.customers",
        "--tgt-conn",
        "EBB_BENCH_DESTINATION",
        "--tgt-object",
        "public.customers_sling",
        "--mode",
        "incremental",
        "--primary-key",
        "id",
        "--update-key",
        "updated_at",
    ])
    .env("EBB_BENCH_WAREHOUSE", &env.urls.warehouse)
    .env("EBB_BENCH_DESTINATION", &env.urls.app)
    .env("SLING_HOME_DIR", env.dir.join("sling-home"))
    .env("SLING_DISABLE_TELEMETRY", "true")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn sling");
    let pid = child.id().expect("sling pid");
    let output = child.wait_with_output();
    tokio::pin!(output);
    let mut peak = 0;
    let output = loop {
        tokio::select! {
            out = &mut output => break out.expect("wait for sling"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{phase}: sling failed:\n{log}");
    // "inserted 1000000 rows into …"; nothing when there was nothing new.
    let written = log
        .split("inserted ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',')
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse::<i64>().ok()
        })
        .sum();
    let phase = Phase {
        name: phase.to_owned(),
        seconds,
        plan_seconds: f64::NAN,
        sent: written,
        planner_peak_kib: peak,
    };
    (phase, written)
}

/// One repetition: fresh databases, the COPY baseline, then every phase.
struct Measured {
    copy_seconds: f64,
    copy_bytes: u64,
    phases: Vec<Phase>,
    worker_peaks_kib: Vec<u64>,
}

async fn measure(args: &Args) -> Measured {
    let receiver = Receiver::start().await;
    receiver.with(|s| s.count_only = true);
    let config = CONFIG.replace("{MODEL}", MODEL);
    let extra = [
        ("{RECEIVER_URL}", receiver.url()),
        ("{BATCH}", args.batch.to_string()),
    ];
    let mut env = TestEnv::new(&config, &extra).await;
    // Every client of the local server goes without TLS, as Sling does:
    // the same terms for Ebb, its peer and the COPY baseline. (With TLS,
    // Ebb's no-change re-sync took a quarter longer, the COPY a tenth.)
    for url in [
        &mut env.urls.state,
        &mut env.urls.warehouse,
        &mut env.urls.app,
    ] {
        *url = without_tls(url);
    }
    env.write_config(&config, &extra);
    env.warehouse = PgPool::connect(&env.urls.warehouse)
        .await
        .expect("warehouse without TLS");
    eprintln!("seeding {} rows…", args.rows);
    seed_customers(&env.warehouse, args.rows).await;
    sqlx::query("ANALYZE analytics.customers")
        .execute(&env.warehouse)
        .await
        .expect("analyze");
    create_replica(&env.app).await;

    // The baseline: best of three, so a cold cache does not flatter Ebb.
    let mut copy_seconds = f64::MAX;
    let mut copy_bytes = 0;
    for _ in 0..3 {
        let (s, b) = copy_out_seconds(&env).await;
        copy_seconds = copy_seconds.min(s);
        copy_bytes = b;
    }
    eprintln!("COPY baseline: {copy_seconds:.2} s, {copy_bytes} bytes");

    for _ in 0..args.workers {
        env.start_worker(args.concurrency);
    }
    let one_percent = "UPDATE analytics.customers SET plan = plan || '+' WHERE id % 100 = 0";

    let mut rows = Vec::new();
    let syncs: &[(&str, &str)] = if args.postgres_only {
        &[("to_postgres", "postgres")]
    } else {
        &[("to_postgres", "postgres"), ("to_http", "http")]
    };
    for &(sync, label) in syncs {
        let first = timed_run(&env, sync, &format!("{label}: first sync"), &[]).await;
        assert_eq!(first.sent, args.rows, "first sync sends every row");
        let unchanged = timed_run(&env, sync, &format!("{label}: no-change re-sync"), &[]).await;
        assert_eq!(unchanged.sent, 0, "no-change re-sync sends nothing");
        sqlx::query(one_percent)
            .execute(&env.warehouse)
            .await
            .expect("change 1%");
        let changed = timed_run(&env, sync, &format!("{label}: 1%-changed re-sync"), &[]).await;
        assert_eq!(changed.sent, args.rows / 100, "1% re-sync sends the 1%");
        rows.extend([first, unchanged, changed]);
    }

    if let Some(sling) = &args.sling {
        // Sling needs an update cursor, which Ebb's model does not read.
        sqlx::query(
            "ALTER TABLE analytics.customers ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()",
        )
        .execute(&env.warehouse)
        .await
        .expect("add updated_at");
        let (first, written) = sling_run(sling, &env, "sling 1.4.11: first sync").await;
        assert_eq!(written, args.rows, "sling's first sync writes every row");
        let (unchanged, _) = sling_run(sling, &env, "sling 1.4.11: no-change re-sync").await;
        sqlx::query(
            "UPDATE analytics.customers SET plan = plan || '+', updated_at = clock_timestamp() WHERE id % 100 = 0",
        )
        .execute(&env.warehouse)
        .await
        .expect("change 1% for sling");
        let (changed, written) = sling_run(sling, &env, "sling 1.4.11: 1%-changed re-sync").await;
        assert_eq!(written, args.rows / 100, "sling's 1% re-sync writes the 1%");
        let sling_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM public.customers_sling")
            .fetch_one(&env.app)
            .await
            .expect("count sling's table");
        assert_eq!(sling_rows, args.rows, "sling's table holds every row");
        rows.extend([first, unchanged, changed]);
    }

    let replica_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM public.customers_synced")
        .fetch_one(&env.app)
        .await
        .expect("count replica");
    assert_eq!(replica_rows, args.rows, "replica holds every row");
    if !args.postgres_only {
        let http_applied = receiver.with(|s| s.applied_total);
        assert_eq!(
            http_applied,
            (args.rows + args.rows / 100) as u64,
            "receiver got every row once plus the changed 1%"
        );
    }
    let worker_peaks_kib: Vec<u64> = env
        .worker_pids()
        .into_iter()
        .map(|pid| pid.and_then(peak_rss_kib).unwrap_or(0))
        .collect();

    for i in 0..args.workers {
        env.terminate_worker(i).await;
    }
    Measured {
        copy_seconds,
        copy_bytes,
        phases: rows,
        worker_peaks_kib,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let mut runs = Vec::with_capacity(args.repeat);
    for repetition in 1..=args.repeat {
        eprintln!("repetition {repetition} of {}", args.repeat);
        runs.push(measure(&args).await);
    }
    let copy_seconds = median(runs.iter().map(|m| m.copy_seconds).collect());
    let copy_bytes = runs[0].copy_bytes;
    // A phase's figures across repetitions; ratios are taken within each
    // repetition (against its own COPY), then their median.
    let across = |i: usize, f: &dyn Fn(&Measured, &Phase) -> f64| {
        median(runs.iter().map(|m| f(m, &m.phases[i])).collect())
    };
    let phase_count = runs[0].phases.len();
    println!(
        "model: {} rows ({:.1} MB as COPY text); {} worker process(es) × concurrency {}; batch size {}\n",
        args.rows,
        copy_bytes as f64 / 1e6,
        args.workers,
        args.concurrency,
        args.batch
    );
    if args.repeat > 1 {
        println!(
            "{} repetitions, each on fresh databases: medians (wall time: min–max in brackets)\n",
            args.repeat
        );
    }
    println!(
        "| phase | records sent | wall time (s) | of which planning (s) | model rows/s | × COPY time | planner (or peer) peak RSS (MiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| `COPY (model) TO STDOUT` (baseline) | – | {copy_seconds:.2} | – | {:.0} | 1.0 | – |",
        args.rows as f64 / copy_seconds
    );
    for i in 0..phase_count {
        let p = &runs[0].phases[i];
        let seconds = across(i, &|_, p| p.seconds);
        let plan_seconds = across(i, &|_, p| p.plan_seconds);
        let planning = if plan_seconds.is_nan() {
            "–".to_owned()
        } else {
            format!("{plan_seconds:.2}")
        };
        let spread = if args.repeat > 1 {
            let all: Vec<f64> = runs.iter().map(|m| m.phases[i].seconds).collect();
            format!(
                " [{:.2}–{:.2}]",
                all.iter().copied().fold(f64::MAX, f64::min),
                all.iter().copied().fold(0.0, f64::max)
            )
        } else {
            String::new()
        };
        let peak_kib = runs
            .iter()
            .map(|m| m.phases[i].planner_peak_kib)
            .max()
            .unwrap_or(0);
        println!(
            "| {} | {} | {seconds:.2}{spread} | {planning} | {:.0} | {:.1} | {:.0} |",
            p.name,
            p.sent,
            args.rows as f64 / seconds,
            across(i, &|m, p| p.seconds / m.copy_seconds),
            peak_kib as f64 / 1024.0
        );
    }
    if args.sling.is_some() {
        // Within each repetition, then the median.
        let ratio = |phase: &str| {
            median(
                runs.iter()
                    .map(|m| {
                        let seconds = |name: &str| {
                            m.phases
                                .iter()
                                .find(|p| p.name == name)
                                .map_or(f64::NAN, |p| p.seconds)
                        };
                        seconds(&format!("postgres: {phase}"))
                            / seconds(&format!("sling 1.4.11: {phase}"))
                    })
                    .collect(),
            )
        };
        println!("\nEbb (postgres destination) ÷ Sling, wall time:");
        for phase in ["first sync", "no-change re-sync", "1%-changed re-sync"] {
            println!("- {phase}: {:.1}×", ratio(phase));
        }
    }
    let peaks: Vec<String> = runs
        .iter()
        .flat_map(|m| m.worker_peaks_kib.iter())
        .map(|k| format!("{:.0}", *k as f64 / 1024.0))
        .collect();
    println!(
        "\nworker peak RSS (MiB, per process and repetition, over all phases): {}",
        peaks.join(", ")
    );
}
