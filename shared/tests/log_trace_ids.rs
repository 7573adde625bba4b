//! Log lines inside a traced span start with its trace and span ids, in
//! both log formats. Each case runs in a child process, because the ids are
//! read through the process's global subscriber, which can be set once.

use std::process::Command;

const CHILD: &str = "EBB_LOG_IDS_CHILD";
const TEST: &str = "log_lines_in_a_traced_span_carry_its_trace_and_span_ids";

#[test]
fn log_lines_in_a_traced_span_carry_its_trace_and_span_ids() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    for text in [false, true] {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .env("RUST_LOG", "info")
            // Traces on; nothing listens there, which must not matter.
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
        if text {
            command.env("EBB_LOG_TEXT", "1");
        } else {
            command.env_remove("EBB_LOG_TEXT");
        }
        let output = command.output().expect("run the child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed: {stdout}\n{stderr}");
        let traceparent = stdout
            .lines()
            .find_map(|l| l.split_once("traceparent=").map(|(_, value)| value.trim()))
            .expect("the child prints its span's traceparent");
        let parts: Vec<&str> = traceparent.split('-').collect();
        let (trace_id, span_id) = (parts[1], parts[2]);
        let outside = stderr
            .lines()
            .find(|l| l.contains("outside any span"))
            .expect("the line outside any span");
        let inside = stderr
            .lines()
            .find(|l| l.contains("inside the batch"))
            .expect("the line inside the span");
        assert!(
            !outside.contains("trace_id=") && !outside.contains("\"trace_id\""),
            "{outside}"
        );
        if text {
            assert!(
                inside.starts_with(&format!("trace_id={trace_id} span_id={span_id} ")),
                "{inside}"
            );
        } else {
            let line: serde_json::Value = serde_json::from_str(inside).expect("a JSON line");
            assert_eq!(line["trace_id"], trace_id, "{inside}");
            assert_eq!(line["span_id"], span_id, "{inside}");
            assert_eq!(line["fields"]["records"], 3, "{inside}");
            assert_eq!(line["span"]["name"], "ebb.batch", "{inside}");
            let outside: serde_json::Value = serde_json::from_str(outside).expect("a JSON line");
            assert!(outside.get("trace_id").is_none());
        }
    }
}

fn child() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    let telemetry = ebb_shared::telemetry::init(
        "info",
        "log-ids-test",
        &ebb_shared::config::TelemetryConfig::default(),
    );
    tracing::info!("outside any span");
    // Ebb's own targets are traced whatever RUST_LOG says.
    let span = tracing::info_span!(target: "ebb_shared", "ebb.batch", batch = 7);
    {
        let _entered = span.enter();
        tracing::info!(records = 3, "inside the batch");
    }
    let traceparent = ebb_shared::telemetry::traceparent(&span).expect("traces are on");
    println!("traceparent={traceparent}");
    drop(span);
    drop(telemetry);
}
