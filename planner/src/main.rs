//! `ebb`: the Ebb command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use ebb_planner::PlannerError;
use ebb_planner::commands::{self, print_json};
use ebb_planner::context::Context;
use ebb_planner::plan;
use ebb_shared::config::Config;
use ebb_shared::state::runs::RunState;
use ebb_shared::state::{dlq, runs};

#[derive(Parser)]
#[command(
    name = "ebb",
    version,
    about = "Ebb: reverse ETL from your warehouse into business tools"
)]
struct Cli {
    /// Path to ebb.toml.
    #[arg(long, global = true, env = "EBB_CONFIG", default_value = "ebb.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config, model SQL and mappings (against each source).
    Check {
        /// Also connect to each destination: check credentials and
        /// permissions, and the mapping against the destination's schema
        /// (e.g. HubSpot's properties).
        #[arg(long)]
        connect: bool,
    },
    /// Create or upgrade Ebb's schema in the state database.
    Migrate,
    /// Dry run: what a run would add, change, remove and reject. Sends nothing.
    Plan {
        sync: String,
        #[arg(long)]
        full_resync: bool,
        #[arg(long)]
        json: bool,
    },
    /// Plan, enqueue and wait until the workers finished the run.
    Run {
        sync: String,
        /// Send every record again, ignoring what was delivered before.
        #[arg(long)]
        full_resync: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run history.
    Runs {
        #[arg(long)]
        sync: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Inspect, replay and discard dead-lettered records.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Each destination's limits: configured, and in use right now across all workers.
    Limits {
        #[arg(long)]
        json: bool,
    },
    /// The planner daemon: runs syncs on their schedules, serves /healthz, /readyz and
    /// /metrics. These need no authentication, so the default address is loopback only;
    /// in a pod, listen on 0.0.0.0 explicitly (deploy/k8s does).
    Serve {
        #[arg(long, env = "EBB_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Open entries (add --all for resolved and discarded ones).
    List {
        #[arg(long)]
        sync: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One entry with its payload and reason.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send entries again; successes leave the DLQ.
    Replay {
        #[command(flatten)]
        selection: Selection,
        #[arg(long)]
        json: bool,
    },
    /// Close entries without sending them.
    Discard {
        #[command(flatten)]
        selection: Selection,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Selection {
    /// Entry ids.
    ids: Vec<i64>,
    /// Every open entry of this sync.
    #[arg(long)]
    sync: Option<String>,
}

/// Exit codes: 0 success, 1 a run failed, 2 bad input or unreachable infrastructure.
const EXIT_RUN_FAILED: u8 = 1;
const EXIT_ERROR: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    ebb_shared::telemetry::init("warn,ebb_planner=info");
    let cli = Cli::parse();
    match execute(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn execute(cli: Cli) -> Result<ExitCode, PlannerError> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Check { connect } => {
            let problems = commands::check::check(&config, connect).await;
            if problems > 0 {
                eprintln!("{problems} problem(s) found in {}", config.path.display());
                return Ok(ExitCode::from(EXIT_ERROR));
            }
            println!("{} is valid", config.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            Context::open(config).await?;
            println!("state database schema is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            sync,
            full_resync,
            json,
        } => {
            let ctx = Context::open(config).await?;
            let sync = ctx.config.sync(&sync)?;
            let report = plan::dry_run(&ctx.config, &ctx.pool, sync, full_resync).await?;
            if json {
                print_json(&report);
            } else {
                commands::plan::print_report(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            sync,
            full_resync,
            json,
        } => {
            let ctx = Context::open(config).await?;
            let sync = ctx.config.sync(&sync)?.clone();
            let planned = plan::plan_run(&ctx.config, &ctx.pool, &sync, full_resync, "cli").await?;
            if !json {
                let c = &planned.report.counts;
                eprintln!(
                    "run #{} planned: {} rows read, {} to send ({} added, {} changed, {} deletes), {} unchanged, {} rejected",
                    planned.run_id,
                    c.rows_read,
                    c.to_send,
                    c.added,
                    c.changed,
                    c.deletes,
                    c.unchanged,
                    c.rejected
                );
            }
            let summary = commands::run::enqueue_and_wait(&ctx, planned, json).await?;
            finish_run(&summary, json)
        }
        Command::Runs { sync, limit, json } => {
            let ctx = Context::open(config).await?;
            let list = runs::list(&ctx.pool, sync.as_deref(), limit).await?;
            if json {
                print_json(&list);
            } else {
                commands::runs::print_table(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(cmd) => dlq_command(config, cmd).await,
        Command::Limits { json } => {
            let rows = commands::limits::collect(&config).await?;
            if json {
                print_json(&rows);
            } else {
                commands::limits::print_table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { listen } => {
            let ctx = Arc::new(Context::open(config).await?);
            commands::serve::serve(ctx, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn finish_run(summary: &commands::run::RunSummary, json: bool) -> Result<ExitCode, PlannerError> {
    if json {
        print_json(summary);
    } else {
        commands::run::print_summary(summary);
    }
    Ok(if summary.run.state == RunState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUN_FAILED)
    })
}

async fn dlq_command(config: Config, cmd: DlqCommand) -> Result<ExitCode, PlannerError> {
    let ctx = Context::open(config).await?;
    match cmd {
        DlqCommand::List {
            sync,
            all,
            limit,
            json,
        } => {
            let entries = dlq::list(
                &ctx.pool,
                &dlq::DlqFilter {
                    sync: sync.as_deref(),
                    include_closed: all,
                    limit,
                },
            )
            .await?;
            if json {
                print_json(&entries);
            } else {
                commands::dlq::print_table(&entries);
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { id, json } => {
            let Some(entry) = dlq::get(&ctx.pool, id).await? else {
                return Err(PlannerError::Usage(format!(
                    "DLQ entry #{id} does not exist; see `ebb dlq list`"
                )));
            };
            if json {
                print_json(&entry);
            } else {
                commands::dlq::print_entry(&entry);
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Discard { selection } => {
            let discarded =
                dlq::discard(&ctx.pool, &selection.ids, selection.sync.as_deref()).await?;
            println!(
                "discarded {} entr{}",
                discarded.len(),
                if discarded.len() == 1 { "y" } else { "ies" }
            );
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay { selection, json } => {
            let targets = replay_targets(&ctx, &selection).await?;
            let mut code = ExitCode::SUCCESS;
            let mut summaries = Vec::new();
            for (sync_name, ids) in targets {
                let sync = ctx.config.sync(&sync_name)?.clone();
                let planned =
                    plan::replay::plan_replay(&ctx.config, &ctx.pool, &sync, ids.as_deref())
                        .await?;
                let summary = commands::run::enqueue_and_wait(&ctx, planned, json).await?;
                if summary.run.state != RunState::Succeeded {
                    code = ExitCode::from(EXIT_RUN_FAILED);
                }
                if !json {
                    commands::run::print_summary(&summary);
                }
                summaries.push(summary);
            }
            if json {
                print_json(&summaries);
            }
            Ok(code)
        }
    }
}

/// Groups the selected entries by sync. Planning-stage entries cannot be
/// replayed: their fix is in the model, and the next run re-checks them.
async fn replay_targets(
    ctx: &Context,
    selection: &Selection,
) -> Result<Vec<(String, Option<Vec<i64>>)>, PlannerError> {
    if let Some(sync) = &selection.sync {
        return Ok(vec![(sync.clone(), None)]);
    }
    let mut by_sync: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for &id in &selection.ids {
        let entry = dlq::get(&ctx.pool, id).await?.ok_or_else(|| {
            PlannerError::Usage(format!(
                "DLQ entry #{id} does not exist; see `ebb dlq list`"
            ))
        })?;
        if entry.status != "open" {
            return Err(PlannerError::Usage(format!(
                "DLQ entry #{id} is {}, not open; nothing to replay",
                entry.status
            )));
        }
        if entry.stage == "plan" {
            return Err(PlannerError::Usage(format!(
                "DLQ entry #{id} was rejected by the planner ({}); fix the model and run the sync again",
                entry.reason
            )));
        }
        by_sync.entry(entry.sync_name).or_default().push(id);
    }
    Ok(by_sync.into_iter().map(|(s, ids)| (s, Some(ids))).collect())
}
