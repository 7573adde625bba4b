//! `ebb-worker`: drains Ebb's queue until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ebb_shared::config::Config;
use ebb_worker::pool::{self, PoolOptions};

#[derive(Parser)]
#[command(
    name = "ebb-worker",
    version,
    about = "Ebb worker: delivers queued batches to destinations"
)]
struct Cli {
    /// Path to ebb.toml (the same file the planner uses).
    #[arg(long, env = "EBB_CONFIG", default_value = "ebb.toml")]
    config: PathBuf,
    /// Batches processed at once by this process, per destination.
    #[arg(long, env = "EBB_WORKER_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    /// Name prefix in Redis; defaults to $HOSTNAME (the pod name on Kubernetes).
    #[arg(long, env = "HOSTNAME", default_value = "ebb-worker")]
    name: String,
    /// Serve /healthz (process alive) and /readyz (state database and Redis
    /// reachable) on this address, for Kubernetes probes.
    #[arg(long, env = "EBB_WORKER_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// On SIGTERM, how long in-flight batches may take before the worker
    /// exits; overrides `[worker].shutdown_timeout_secs` (the Helm chart
    /// sets it with the pod's grace period, which must be longer).
    #[arg(long, env = "EBB_WORKER_SHUTDOWN_TIMEOUT_SECS")]
    shutdown_timeout_secs: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(secs) = cli.shutdown_timeout_secs {
        config.worker.shutdown_timeout_secs = secs;
    }
    let _telemetry =
        ebb_shared::telemetry::init("warn,ebb_worker=info", "ebb-worker", &config.telemetry);
    match pool::run(
        config,
        PoolOptions {
            concurrency: cli.concurrency,
            name: cli.name,
            listen: cli.listen,
        },
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
