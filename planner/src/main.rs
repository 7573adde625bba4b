//! `ebb`: the Ebb command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use ebb_planner::PlannerError;
use ebb_planner::commands::{self, print_json};
use ebb_planner::context::Context;
use ebb_planner::control;
use ebb_planner::{plan, verify};
use ebb_shared::config::Config;
use ebb_shared::state::runs::RunState;
use ebb_shared::state::{dlq, records, runs, verifications};

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
        /// Only runs in this state (planning, held, running, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// A run's records and their outcomes (rejected and failed ones with their reason).
    Records {
        run: i64,
        /// The record with this primary key.
        #[arg(long)]
        key: Option<String>,
        /// Only records with this outcome (delivered, rejected, failed, superseded).
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Each sync: its schedule, whether it is paused, its last run and health.
    Syncs {
        #[arg(long)]
        json: bool,
    },
    /// Pause a sync's schedule (survives restarts; runs started by hand still run).
    Pause {
        sync: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Resume a sync's schedule.
    Resume {
        sync: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Cancel a planning, held or running run: its unsent batches are not sent.
    Cancel { run: i64 },
    /// Approve a run a guardrail held: its batches go on the queue.
    Approve { run: i64 },
    /// Read delivered records back from the destination and report drift:
    /// missing, different values per field, extra (mirror mode). Exits 4 when
    /// records drifted.
    Verify {
        sync: String,
        /// Records to read back, at random (default 100).
        #[arg(long, conflicts_with = "all")]
        sample: Option<u64>,
        /// Read back every delivered record.
        #[arg(long)]
        all: bool,
        /// Then mark drifted records to be sent again, and run the sync.
        #[arg(long)]
        resend: bool,
        #[arg(long)]
        json: bool,
    },
    /// Past verifications, newest first.
    Verifications {
        #[arg(long)]
        sync: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Incidents the configured alerts opened (add --all for resolved ones).
    Alerts {
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 50)]
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
    /// /metrics, and with [api] tokens the API at /api/v1 and the web UI at /. The probes
    /// need no authentication, so the default address is loopback only; in a pod, listen
    /// on 0.0.0.0 explicitly (the Helm chart does).
    Serve {
        #[arg(long, env = "EBB_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Serve the API and the web UI without authentication, every caller an
        /// operator. For a local test only; logged loudly.
        #[arg(long)]
        insecure_no_auth: bool,
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
    /// Close entries without sending them: not to be delivered.
    #[command(alias = "discard")]
    Dismiss {
        #[command(flatten)]
        selection: Selection,
        /// Why, recorded with the entries.
        #[arg(long)]
        note: Option<String>,
    },
    /// Close entries as dealt with another way (e.g. fixed in the destination by hand).
    Resolve {
        #[command(flatten)]
        selection: Selection,
        /// What was done, recorded with the entries.
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Args)]
struct Selection {
    /// Entry ids.
    #[arg(required_unless_present = "sync", conflicts_with = "sync")]
    ids: Vec<i64>,
    /// Every open entry of this sync.
    #[arg(long)]
    sync: Option<String>,
    /// With --sync: only the entries whose reason contains this (case-insensitive).
    #[arg(long, requires = "sync")]
    reason: Option<String>,
}

/// Exit codes: 0 success, 1 a run failed, 2 bad input or unreachable infrastructure.
const EXIT_RUN_FAILED: u8 = 1;
/// `ebb run`: a guardrail held the run for an operator.
const EXIT_RUN_HELD: u8 = 3;
/// `ebb verify`: records drifted at the destination.
const EXIT_DRIFT: u8 = 4;
/// Drifted records `ebb verify` lists.
const DRIFT_SHOWN: i64 = 20;
const EXIT_ERROR: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
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
    let _telemetry =
        ebb_shared::telemetry::init("warn,ebb_planner=info", "ebb-planner", &config.telemetry);
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
                if c.flapping > 0 {
                    eprintln!(
                        "run #{}: {} changed records went back to a version a recent run delivered (flapping): {}",
                        planned.run_id,
                        c.flapping,
                        planned.report.flapping_keys.join(", ")
                    );
                }
            }
            if let Some(held) = &planned.report.held {
                let run = runs::get(&ctx.pool, planned.run_id).await?;
                if json {
                    print_json(&serde_json::json!({ "run": run, "held": held }));
                } else {
                    eprintln!("run #{} of sync `{}` {held}", run.id, run.sync_name);
                }
                return Ok(ExitCode::from(EXIT_RUN_HELD));
            }
            let summary = commands::run::enqueue_and_wait(&ctx, planned, json).await?;
            finish_run(&summary, json)
        }
        Command::Runs {
            sync,
            state,
            limit,
            json,
        } => {
            let ctx = Context::open(config).await?;
            let state = state
                .map(|s| {
                    RunState::try_from(s.to_lowercase()).map_err(|e| {
                        PlannerError::Usage(format!(
                            "--state: {e}; use planning, held, running, succeeded, failed or cancelled"
                        ))
                    })
                })
                .transpose()?;
            let list = runs::query(
                &ctx.pool,
                &runs::RunFilter {
                    sync: sync.as_deref(),
                    state,
                    limit,
                    ..runs::RunFilter::default()
                },
            )
            .await?;
            if json {
                print_json(&list);
            } else {
                commands::runs::print_table(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Records {
            run,
            key,
            outcome,
            limit,
            json,
        } => {
            let ctx = Context::open(config).await?;
            let run = runs::get(&ctx.pool, run).await?;
            let outcome = outcome
                .map(|o| {
                    records::Outcome::parse(&o.to_lowercase())
                        .ok_or_else(|| PlannerError::Usage(format!(
                            "--outcome: `{o}` is not an outcome; use delivered, rejected, failed or superseded"
                        )))
                })
                .transpose()?;
            if run.records_purged {
                return Err(PlannerError::Conflict(format!(
                    "run #{}'s records were deleted after [state].run_records_retention_days; its totals remain (`ebb runs`)",
                    run.id
                )));
            }
            let list = records::of_run(
                &ctx.pool,
                run.id,
                &records::RecordFilter {
                    key: key.as_deref(),
                    outcome,
                    after_key: None,
                    limit,
                },
            )
            .await?;
            if json {
                print_json(&list);
            } else {
                commands::runs::print_records(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Syncs { json } => {
            let ctx = Context::open(config).await?;
            let list = control::syncs::overview(&ctx.config, &ctx.pool).await?;
            if json {
                print_json(&list);
            } else {
                commands::runs::print_syncs(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { sync, note } => set_paused(config, &sync, true, note).await,
        Command::Resume { sync, note } => set_paused(config, &sync, false, note).await,
        Command::Verify {
            sync,
            sample,
            all,
            resend,
            json,
        } => {
            let ctx = Context::open(config).await?;
            let sync = ctx.config.sync(&sync)?.clone();
            let scope = verify::Scope::asked(sample, all).map_err(PlannerError::Usage)?;
            let verification = verify::verify(&ctx.config, &ctx.pool, &sync, scope, "cli").await?;
            let drift = verifications::drift(&ctx.pool, verification.id, DRIFT_SHOWN).await?;
            if json {
                print_json(&serde_json::json!({ "verification": verification, "drift": drift }));
            } else {
                commands::verify::print(&verification, &drift);
            }
            if !resend || verification.drifted() == 0 {
                return Ok(if verification.drifted() == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_DRIFT)
                });
            }
            let marked =
                verifications::mark_for_resend(&ctx.pool, verification.id, &sync.name).await?;
            if !json {
                eprintln!(
                    "verification #{}: {marked} drifted records marked to be sent again; running sync `{}`",
                    verification.id, sync.name
                );
            }
            let planned = plan::plan_run(&ctx.config, &ctx.pool, &sync, false, "verify").await?;
            verifications::set_resend_run(&ctx.pool, verification.id, planned.run_id).await?;
            if let Some(held) = &planned.report.held {
                eprintln!("run #{} of sync `{}` {held}", planned.run_id, sync.name);
                return Ok(ExitCode::from(EXIT_RUN_HELD));
            }
            let summary = commands::run::enqueue_and_wait(&ctx, planned, json).await?;
            if !json {
                commands::run::print_summary(&summary);
            }
            Ok(if summary.run.state == RunState::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_RUN_FAILED)
            })
        }
        Command::Verifications { sync, limit, json } => {
            let ctx = Context::open(config).await?;
            let list = verifications::list(&ctx.pool, sync.as_deref(), limit).await?;
            if json {
                print_json(&list);
            } else {
                commands::verify::print_table(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve { run } => {
            let ctx = Context::open(config).await?;
            let approved = control::trigger::approve(&ctx, run, "cli").await?;
            println!(
                "run #{run} of sync `{}` approved: {} batches on the queue ({} records)",
                approved.sync_name, approved.batches_total, approved.to_send
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { run } => {
            let ctx = Context::open(config).await?;
            let found = runs::get(&ctx.pool, run).await?;
            if runs::cancel(&ctx.pool, run, "cli").await? {
                ebb_shared::telemetry::metrics::run_ended(
                    &found.sync_name,
                    "cancelled",
                    (chrono::Utc::now() - found.created_at).to_std().ok(),
                );
                println!(
                    "run #{run} of sync `{}` cancelled; its unsent batches will not be sent",
                    found.sync_name
                );
                Ok(ExitCode::SUCCESS)
            } else {
                Err(PlannerError::Conflict(format!(
                    "run #{run} has already ended ({})",
                    found.state
                )))
            }
        }
        Command::Alerts { all, limit, json } => {
            let ctx = Context::open(config).await?;
            let incidents = ebb_shared::state::alerts::incidents(&ctx.pool, all, limit).await?;
            if json {
                print_json(&incidents);
            } else if incidents.is_empty() {
                println!("no {}incidents", if all { "" } else { "open " });
            } else {
                for i in &incidents {
                    println!(
                        "#{:<5} {:<12} {:<24} {:<14} {}  {}",
                        i.id,
                        i.alert,
                        i.sync_name,
                        i.kind.as_str(),
                        i.resolved_at
                            .map_or("OPEN".to_owned(), |_| "resolved".to_owned()),
                        i.detail
                    );
                }
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
        Command::Serve {
            listen,
            insecure_no_auth,
        } => {
            let auth = ebb_planner::api::Auth::from_config(config.api.as_ref(), insecure_no_auth)?;
            let ctx = Arc::new(Context::open(config).await?);
            commands::serve::serve(ctx, listen, Arc::new(auth)).await?;
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
                    ..dlq::DlqFilter::default()
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
        DlqCommand::Dismiss { selection, note } => {
            close_entries(&ctx, selection, dlq::Closing::Dismiss, note, "dismissed").await
        }
        DlqCommand::Resolve { selection, note } => {
            close_entries(&ctx, selection, dlq::Closing::Resolve, note, "resolved").await
        }
        DlqCommand::Replay { selection, json } => {
            let targets = control::dlq::replay_targets(&ctx.pool, &selection.control()).await?;
            let mut code = ExitCode::SUCCESS;
            let mut summaries = Vec::new();
            for (sync_name, ids) in targets {
                let sync = ctx.config.sync(&sync_name)?.clone();
                let planned =
                    plan::replay::plan_replay(&ctx.config, &ctx.pool, &sync, ids.as_deref(), "cli")
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

impl Selection {
    fn control(&self) -> control::dlq::Selection {
        control::dlq::Selection {
            ids: self.ids.clone(),
            sync: self.sync.clone(),
            reason: self.reason.clone(),
        }
    }
}

async fn close_entries(
    ctx: &Context,
    selection: Selection,
    closing: dlq::Closing,
    note: Option<String>,
    verb: &str,
) -> Result<ExitCode, PlannerError> {
    let closed = control::dlq::close(
        &ctx.pool,
        &selection.control(),
        closing,
        "cli",
        note.as_deref(),
    )
    .await?;
    println!(
        "{verb} {} entr{}",
        closed.len(),
        if closed.len() == 1 { "y" } else { "ies" }
    );
    Ok(ExitCode::SUCCESS)
}

async fn set_paused(
    config: Config,
    sync: &str,
    paused: bool,
    note: Option<String>,
) -> Result<ExitCode, PlannerError> {
    let ctx = Context::open(config).await?;
    let setting =
        control::syncs::set_paused(&ctx.config, &ctx.pool, sync, paused, "cli", note.as_deref())
            .await?;
    println!(
        "sync `{}`: schedule {}",
        setting.sync_name,
        if setting.paused { "paused" } else { "resumed" }
    );
    Ok(ExitCode::SUCCESS)
}
