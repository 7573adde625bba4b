//! Traces: a run across two worker processes is one trace, exported over
//! OTLP/HTTP to a receiver on loopback: the planner's spans, both workers'
//! batch spans, each destination request as a child of its batch, and a
//! request sent again after a transient failure as a span of its own; and
//! the planner's metrics, over OTLP to the same receiver.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ebb_tests::otlp::{Collector, Span};
use ebb_tests::receiver::Receiver;
use ebb_tests::{TestEnv, eventually, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
requeue_after_secs = 20

[telemetry]
otlp_endpoint = "{OTLP_URL}"
otlp_protocol = "http/json"

[destinations.crm]
type = "http"
url = "{RECEIVER_URL}"
batch_size = 10
max_concurrency = 2
adaptive_concurrency = false

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "crm"
"#;

#[tokio::test]
async fn a_run_across_two_workers_is_one_trace() {
    let collector = Collector::start().await;
    let receiver = Receiver::start().await;
    // The first request fails (503, retry after 1 s); each takes 150 ms, so
    // both workers get batches.
    receiver.with(|s| {
        s.unavailable_left = 1;
        s.latency = Duration::from_millis(150);
    });
    let mut env = TestEnv::new(
        CONFIG,
        &[
            ("{OTLP_URL}", collector.url()),
            ("{RECEIVER_URL}", receiver.url()),
        ],
    )
    .await;
    seed_customers(&env.warehouse, 80).await;
    env.start_worker(1);
    env.start_worker(1);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let traceparent = run["traceparent"]
        .as_str()
        .expect("the run's traceparent")
        .to_owned();
    let trace_id = traceparent
        .split('-')
        .nth(1)
        .expect("a W3C traceparent")
        .to_owned();

    // Workers export in the background, every few seconds.
    let spans: Vec<Span> = eventually(Duration::from_secs(60), "every batch's spans", || async {
        let spans: Vec<Span> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        let batches = spans.iter().filter(|s| s.name == "ebb.batch").count();
        (batches == 8 && spans.iter().any(|s| s.name == "ebb.run")).then_some(spans)
    })
    .await;
    let by_name = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };

    // The planner's part: the run, its planning steps and the enqueue.
    let [run_span] = by_name("ebb.run")[..] else {
        panic!("one root span: {spans:#?}");
    };
    assert_eq!(run_span.parent_span_id, "", "the run is the trace's root");
    assert_eq!(run_span.service, "ebb-planner");
    let plan = by_name("ebb.plan");
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].parent_span_id, run_span.span_id);
    // A Postgres model is diffed by one merge with the ledger (other
    // sources: `ebb.plan.snapshot`, then `ebb.plan.diff`).
    for step in ["ebb.plan.merge", "ebb.plan.commit"] {
        let step_spans = by_name(step);
        assert_eq!(step_spans.len(), 1, "{step}");
        assert_eq!(
            step_spans[0].parent_span_id, plan[0].span_id,
            "{step} is a planning step"
        );
    }
    let enqueue = by_name("ebb.enqueue");
    assert_eq!(enqueue.len(), 1);
    assert_eq!(enqueue[0].parent_span_id, run_span.span_id);
    assert_eq!(
        enqueue[0].attributes.get("batches").map(String::as_str),
        Some("8")
    );

    // The workers' part: every batch a child of the run, from both workers.
    let batches = by_name("ebb.batch");
    assert!(
        batches
            .iter()
            .all(|b| b.parent_span_id == run_span.span_id && b.service == "ebb-worker")
    );
    let workers: BTreeSet<&str> = batches
        .iter()
        .filter_map(|b| b.attributes.get("worker").map(String::as_str))
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "both workers' batches join the trace: {workers:?}"
    );
    let batch_ids: BTreeSet<&str> = batches.iter().map(|b| b.span_id.as_str()).collect();
    for step in ["ebb.batch.load", "ebb.batch.settle"] {
        let step_spans = by_name(step);
        assert_eq!(step_spans.len(), 8, "{step}");
        assert!(
            step_spans
                .iter()
                .all(|s| batch_ids.contains(s.parent_span_id.as_str()))
        );
    }

    // Each destination request is a child of its batch, with what it carried
    // and how it was answered; the failed one was sent again.
    let requests = by_name("ebb.destination.request");
    assert!(
        requests
            .iter()
            .all(|r| batch_ids.contains(r.parent_span_id.as_str()))
    );
    let mut by_batch: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for request in &requests {
        by_batch
            .entry(request.parent_span_id.as_str())
            .or_default()
            .push(request);
    }
    let answer = |r: &Span| r.attributes.get("answer").cloned().unwrap_or_default();
    let failed: Vec<&&Span> = requests
        .iter()
        .filter(|r| answer(r) == "transient")
        .collect();
    assert_eq!(failed.len(), 1, "the one 503: {requests:#?}");
    let retried_batch = &by_batch[failed[0].parent_span_id.as_str()];
    assert_eq!(retried_batch.len(), 2, "the retry is a span of its own");
    assert!(
        retried_batch.iter().any(|r| answer(r) == "applied"
            && r.attributes.get("resend").map(String::as_str) == Some("1")),
        "{retried_batch:#?}"
    );
    assert_eq!(
        requests.iter().filter(|r| answer(r) == "applied").count(),
        8,
        "one applied request per batch"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.attributes.get("records").map(String::as_str) == Some("10"))
    );

    // Metrics go to the same collector; the planner flushed its own as it
    // exited (workers export every minute, longer than this test).
    let planning: Vec<_> = collector
        .metric_points()
        .into_iter()
        .filter(|p| p.name == "ebb_planning_duration" && p.service == "ebb-planner")
        .collect();
    assert_eq!(planning.len(), 1, "{planning:#?}");
    assert_eq!(planning[0].value, 1.0, "one plan, one observation");
    assert_eq!(
        planning[0].attributes.get("sync").map(String::as_str),
        Some("contacts")
    );

    // Log lines inside a traced span start with its trace and span ids,
    // and the span is one the collector received.
    let logs = env.worker_log(0) + &env.worker_log(1);
    let prefix = format!("trace_id={trace_id} span_id=");
    let logged: Vec<&str> = logs
        .lines()
        .filter_map(|line| line.split_once(&prefix))
        .filter_map(|(_, rest)| rest.get(..16))
        .collect();
    assert!(
        !logged.is_empty(),
        "no worker log line names the trace:\n{logs}"
    );
    for span_id in logged {
        assert!(
            spans
                .iter()
                .any(|s| s.span_id == span_id && s.service == "ebb-worker"),
            "logged span {span_id} is not a worker span of the trace"
        );
    }
}
