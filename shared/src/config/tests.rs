use super::*;
use crate::config::test_support::{VALID, parse};
use crate::destinations::http::HttpConfig;

#[test]
fn parses_the_documented_example() {
    let config = parse(VALID).unwrap();
    let sync = config.sync("customers_to_replica").unwrap();
    assert_eq!(sync.mode, SyncMode::Mirror);
    assert_eq!(sync.mapping.len(), 2);
    assert_eq!(sync.schedule.as_ref().unwrap().expression, "*/15 * * * *");
    let Some(http) = config
        .destination("crm_webhook")
        .and_then(|d| d.downcast_ref::<HttpConfig>())
    else {
        panic!("crm_webhook should be http");
    };
    assert_eq!(http.headers["Authorization"].expose(), "Bearer tok-123");
    assert_eq!(config.state.queue_prefix, "ebb");
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let config = parse(VALID).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(!debug.contains("tok-123"), "{debug}");
}

#[test]
fn missing_env_var_names_variable_key_and_line() {
    let text = VALID.replace("${CRM_TOKEN}", "${CRM_TOKEN_MISSING}");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("CRM_TOKEN_MISSING"), "{msg}");
    assert!(
        msg.contains("destinations.crm_webhook.headers.Authorization"),
        "{msg}"
    );
    assert!(msg.starts_with("ebb.toml:13:"), "{msg}");
}

#[test]
fn unknown_destination_field_points_at_its_line() {
    let text = VALID.replace("batch_size = 100", "batchsize = 100");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("unknown field `batchsize`"), "{msg}");
    assert!(msg.starts_with("ebb.toml:14:"), "{msg}");
}

#[test]
fn unknown_sync_field_and_bad_mode_are_syntax_errors_with_position() {
    let text = VALID.replace("mode = \"mirror\"", "mode = \"mirrror\"");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.starts_with("ebb.toml:26:"), "{msg}");
    assert!(msg.contains("mirrror"), "{msg}");

    let text = VALID.replace(
        "primary_key = \"id\"",
        "primary_key = \"id\"\nprimary_keys = \"x\"",
    );
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("unknown field `primary_keys`"), "{msg}");
}

#[test]
fn unknown_references_list_what_exists() {
    let text = VALID.replace("destination = \"replica\"", "destination = \"replika\"");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("unknown destination `replika`"), "{msg}");
    assert!(msg.contains("crm_webhook, replica"), "{msg}");
    assert!(msg.starts_with("ebb.toml:25:"), "{msg}");
}

#[test]
fn unknown_destination_type_is_rejected() {
    let text = VALID.replace("type = \"http\"", "type = \"smtp\"");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("unknown type `smtp`"), "{msg}");
    assert!(msg.contains("http, postgres"), "{msg}");
}

#[test]
fn bad_schedule_is_rejected() {
    let text = VALID.replace("*/15 * * * *", "every 15 minutes");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("syncs.customers_to_replica.schedule"), "{msg}");
}

/// Unix cron's meaning, against a table of expressions and their next
/// fire times after Tuesday 2026-12-01 00:00 UTC (worked out by hand from
/// crontab(5)).
#[test]
fn schedules_follow_unix_cron_exactly() {
    use chrono::{TimeZone, Utc};
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let table: &[(&str, &[&str])] = &[
        (
            "*/15 * * * *",
            &["2026-12-01T00:15:00Z", "2026-12-01T00:30:00Z"],
        ),
        // 0 and 7 are both Sunday.
        (
            "0 9 * * 0",
            &["2026-12-06T09:00:00Z", "2026-12-13T09:00:00Z"],
        ),
        (
            "0 9 * * 7",
            &["2026-12-06T09:00:00Z", "2026-12-13T09:00:00Z"],
        ),
        // 0-7 is every day, 1-7 Monday to Sunday, 5-7 Friday to Sunday.
        (
            "0 9 * * 0-7",
            &["2026-12-01T09:00:00Z", "2026-12-02T09:00:00Z"],
        ),
        (
            "0 9 * * 1-7",
            &["2026-12-01T09:00:00Z", "2026-12-02T09:00:00Z"],
        ),
        (
            "0 9 * * 5-7",
            &[
                "2026-12-04T09:00:00Z",
                "2026-12-05T09:00:00Z",
                "2026-12-06T09:00:00Z",
                "2026-12-11T09:00:00Z",
            ],
        ),
        (
            "30 8 * * 1-5",
            &["2026-12-01T08:30:00Z", "2026-12-02T08:30:00Z"],
        ),
        (
            "0 0 * * SAT,SUN",
            &["2026-12-05T00:00:00Z", "2026-12-06T00:00:00Z"],
        ),
        // Day of month and day of week both set: either one fires.
        (
            "0 9 1 * 1",
            &[
                "2026-12-01T09:00:00Z",
                "2026-12-07T09:00:00Z",
                "2026-12-14T09:00:00Z",
            ],
        ),
        (
            "0 12 15 * 5",
            &[
                "2026-12-04T12:00:00Z",
                "2026-12-11T12:00:00Z",
                "2026-12-15T12:00:00Z",
            ],
        ),
        // Only one restricted: that one alone.
        (
            "0 9 13 * *",
            &["2026-12-13T09:00:00Z", "2027-01-13T09:00:00Z"],
        ),
        ("0 0 29 2 *", &["2028-02-29T00:00:00Z"]),
        // Six fields: seconds first, the rest read the same way.
        ("30 0 9 * * 0", &["2026-12-06T09:00:30Z"]),
        ("0 0 9 * * 7", &["2026-12-06T09:00:00Z"]),
    ];
    for (expression, expected) in table {
        let schedule = SyncSchedule::parse(expression, None).unwrap();
        let mut at = start;
        for want in *expected {
            at = schedule.next_after(at).unwrap();
            assert_eq!(
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                *want,
                "{expression}"
            );
        }
    }
}

#[test]
fn schedules_run_in_the_syncs_time_zone() {
    use chrono::{TimeZone, Utc};
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    // 09:00 in Berlin is 08:00 UTC in winter.
    let berlin = SyncSchedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        berlin.next_after(start).unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap()
    );
    // ... and 07:00 UTC in summer.
    let summer = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
    assert_eq!(
        berlin.next_after(summer).unwrap(),
        Utc.with_ymd_and_hms(2026, 7, 1, 7, 0, 0).unwrap()
    );
    let err = SyncSchedule::parse("0 9 * * *", Some("Mars/Olympus")).unwrap_err();
    assert!(err.contains("not a time zone"), "{err}");
}

#[test]
fn a_bad_timezone_names_its_key() {
    let text = VALID.replace(
        "schedule = \"*/15 * * * *\"",
        "schedule = \"*/15 * * * *\"\ntimezone = \"Europe/Berlln\"",
    );
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("syncs.customers_to_replica.timezone"), "{msg}");
    assert!(msg.contains("Europe/Berlln"), "{msg}");
}

#[test]
fn postgres_destination_needs_primary_key_mapped() {
    let text = VALID.replace("customer_id = \"id\"\n", "");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("must map a column to `id`"), "{msg}");
}

#[test]
fn syntax_errors_report_line_and_column() {
    let text = VALID.replace("batch_size = 100", "batch_size = = 100");
    match parse(&text).unwrap_err() {
        ConfigError::Syntax { line, column, .. } => {
            assert_eq!(line, 14);
            assert!(column > 1);
        }
        other => panic!("expected a syntax error, got {other}"),
    }
}

#[test]
fn model_errors_are_located_in_the_model_file_or_config() {
    let model = Model {
        sql: "SELECT id,\n  emial\nFROM t;".into(),
        origin: ModelOrigin::File {
            path: "models/c.sql".into(),
        },
    };
    assert_eq!(model.as_subquery(), "SELECT id,\n  emial\nFROM t");
    assert_eq!(model.locate(14), "models/c.sql:2:3");
    let inline = Model {
        sql: "SELECT emial FROM t".into(),
        origin: ModelOrigin::Inline {
            config_path: "ebb.toml".into(),
            line: 7,
        },
    };
    assert!(inline.locate(8).starts_with("ebb.toml:7"));
}

#[test]
fn limits_default_per_destination_type() {
    let config = parse(VALID).unwrap();
    let http = config
        .destination("crm_webhook")
        .unwrap()
        .delivery()
        .limits
        .clone();
    assert_eq!(
        http,
        Limits {
            max_concurrency: 8,
            rate_limit: None,
            adaptive_concurrency: true,
        }
    );
    let postgres = config
        .destination("replica")
        .unwrap()
        .delivery()
        .limits
        .clone();
    assert!(!postgres.adaptive_concurrency);
    assert_eq!(postgres.max_concurrency, 8);
}

#[test]
fn limits_are_read_and_validated() {
    let with = |limits: &str| {
        VALID.replace(
            "batch_size = 100\n",
            &format!("batch_size = 100\n{limits}\n"),
        )
    };
    let config = parse(&with(
        "max_concurrency = 3\nrate_limit = { requests = 100, per_seconds = 10 }\nadaptive_concurrency = false",
    ))
    .unwrap();
    assert_eq!(
        config.destination("crm_webhook").unwrap().delivery().limits,
        Limits {
            max_concurrency: 3,
            rate_limit: Some(RateLimit {
                requests: 100,
                per: std::time::Duration::from_secs(10),
            }),
            adaptive_concurrency: false,
        }
    );

    let err = parse(&with("max_concurrency = 0")).unwrap_err().to_string();
    assert!(
        err.contains("destinations.crm_webhook.max_concurrency") && err.contains("at least 1"),
        "{err}"
    );
    let err = parse(&with("rate_limit = { requests = 0, per_seconds = 10 }"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("destinations.crm_webhook.rate_limit") && err.contains("requests >= 1"),
        "{err}"
    );
    let err = parse(&with("rate_limit = { requests = 5, per_second = 1 }"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `per_second`"), "{err}");
}

#[test]
fn delivery_settings_that_do_not_apply_or_make_no_sense_are_errors() {
    let replica = |setting: &str| {
        VALID.replace(
            "table = \"public.customers_synced\"\n",
            &format!("table = \"public.customers_synced\"\n{setting}\n"),
        )
    };
    let err = parse(&replica("timeout_secs = 10"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("ebb.toml:20: destinations.replica.timeout_secs: is not a setting of this destination type"),
        "{err}"
    );
    let crm = VALID.replace("batch_size = 100\n", "batch_size = 100\ntimeout_secs = 0\n");
    let err = parse(&crm).unwrap_err().to_string();
    assert!(
        err.contains("destinations.crm_webhook.timeout_secs: must be at least 1"),
        "{err}"
    );
    let typo = VALID.replace("batch_size = 100\n", "batch_size = 100\nmax_retry = 3\n");
    let err = parse(&typo).unwrap_err().to_string();
    assert!(
        err.contains("unknown field `max_retry`")
            && err.contains("or a delivery setting: `batch_size`")
            && err.contains("`max_retries`"),
        "the error lists the delivery settings too: {err}"
    );
}

#[test]
fn api_tokens_are_secrets_with_names_and_roles() {
    let with_api = |api: &str| format!("{VALID}\n[api]\n{api}\n");
    let config = parse(&with_api(
        r#"tokens = [
  { name = "ops", token = "${CRM_TOKEN}-and-more-characters", role = "operator" },
  { name = "grafana", token = "a-viewer-token-0123456789", role = "viewer" },
]
protect_metrics = true"#,
    ))
    .unwrap();
    let api = config.api.as_ref().expect("[api]");
    assert!(api.protect_metrics);
    assert_eq!(
        api.tokens
            .iter()
            .map(|t| (t.name.as_str(), t.role))
            .collect::<Vec<_>>(),
        [("ops", Role::Operator), ("grafana", Role::Viewer)]
    );
    assert_eq!(api.tokens[0].token.expose(), "tok-123-and-more-characters");
    assert!(
        !format!("{config:?}").contains("tok-123"),
        "tokens redacted"
    );
    assert!(
        parse(VALID).unwrap().api.is_none(),
        "no [api]: the API is off"
    );

    let cases = [
        (
            r#"tokens = [{ name = "ops", token = "short", role = "operator" }]"#,
            "api.tokens[0].token: is shorter than 16 characters",
        ),
        (
            r#"tokens = [
  { name = "ops", token = "a-long-enough-token-1", role = "operator" },
  { name = "ops", token = "a-long-enough-token-2", role = "viewer" },
]"#,
            "api.tokens[1].name: `ops` names two tokens",
        ),
        (
            r#"tokens = [{ name = "ops", token = "${NOT_SET_ANYWHERE}", role = "operator" }]"#,
            "environment variable `NOT_SET_ANYWHERE` is not set",
        ),
        (
            r#"tokens = [{ name = "ops", token = "a-long-enough-token-1", role = "admin" }]"#,
            "unknown variant `admin`",
        ),
    ];
    for (api, expected) in cases {
        let err = parse(&with_api(api)).unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

#[test]
fn after_names_syncs_and_a_cycle_is_named() {
    let chain = |a_after: &str| {
        format!(
            r#"{VALID}
[syncs.a]
source = "warehouse"
model = "SELECT id, email FROM analytics.customers"
primary_key = "id"
destination = "crm_webhook"
after = [{a_after}]

[syncs.b]
source = "warehouse"
model = "SELECT id, email FROM analytics.customers"
primary_key = "id"
destination = "crm_webhook"
after = ["a"]

[syncs.c]
source = "warehouse"
model = "SELECT id, email FROM analytics.customers"
primary_key = "id"
destination = "crm_webhook"
after = ["b"]
"#
        )
    };
    let config = parse(&chain("")).unwrap();
    assert_eq!(config.sync("c").unwrap().after, ["b"]);
    let err = parse(&chain("\"c\"")).unwrap_err().to_string();
    assert!(
        err.contains("`after` makes a cycle: a → b → c → a") && err.contains("syncs.b.after"),
        "{err}"
    );
    let err = parse(&chain("\"nope\"")).unwrap_err().to_string();
    assert!(err.contains("syncs.a.after: unknown sync `nope`"), "{err}");
    let err = parse(&chain("\"a\"")).unwrap_err().to_string();
    assert!(err.contains("cannot run after itself"), "{err}");
}

#[test]
fn a_dbt_model_needs_a_dbt_section_and_a_model_the_manifest_has() {
    let dir = std::env::temp_dir().join(format!("ebb-dbt-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("target")).unwrap();
    std::fs::write(
        dir.join("target/manifest.json"),
        r#"{"nodes": {
            "model.shop.customers": {"resource_type": "model", "name": "customers",
                "relation_name": "\"db\".\"marts\".\"customers\""},
            "model.shop.stg_orders": {"resource_type": "model", "name": "stg_orders",
                "relation_name": null, "compiled_code": "select 1 as id"}}}"#,
    )
    .unwrap();
    let text = |model: &str, dbt: &str| {
        VALID.replace(
            "model = \"SELECT id, email FROM analytics.customers\"",
            &format!("model = {model}"),
        ) + dbt
    };
    let dbt = "\n[dbt]\nmanifest = \"target/manifest.json\"\n";
    let env = crate::config::test_support::env();
    let parse_at = |text: &str| {
        Config::parse(&dir.join("ebb.toml"), text, &|k| {
            env.get(k).map(|v| v.to_string())
        })
    };
    let config = parse_at(&text("{ dbt = \"customers\" }", dbt)).unwrap();
    let model = &config.sync("customers_to_replica").unwrap().model;
    assert_eq!(model.sql, "SELECT * FROM \"db\".\"marts\".\"customers\"");
    assert_eq!(model.dbt_model(), Some("customers"));
    let ephemeral = parse_at(&text("{ dbt = \"stg_orders\" }", dbt)).unwrap();
    assert_eq!(
        ephemeral.sync("customers_to_replica").unwrap().model.sql,
        "select 1 as id"
    );
    let err = parse_at(&text("{ dbt = \"customer\" }", dbt))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no model `customer`; did you mean customers?"),
        "{err}"
    );
    let err = parse_at(&text("{ dbt = \"customers\" }", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("there is no [dbt] section"), "{err}");
    let err = parse_at(&text(
        "{ dbt = \"customers\" }",
        "\n[dbt]\nmanifest = \"nowhere/manifest.json\"\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("run `dbt compile`"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn alerts_need_one_target_and_something_to_alert_on() {
    let with = |alert: &str| format!("{VALID}\n[alerts.oncall]\n{alert}\n");
    let config = parse(&with(
        "slack_webhook_url = \"https://hooks.slack.com/services/T0/B0/${CRM_TOKEN}\"\nrejections_over_percent = 5.0\nnot_succeeded_for = \"6h\"\nsyncs = [\"customers_to_replica\"]",
    ))
    .unwrap();
    let alert = &config.alerts[0];
    assert_eq!(alert.name, "oncall");
    assert!(matches!(alert.target, AlertTarget::Slack(_)));
    assert!(alert.run_failed, "on by default");
    assert_eq!(
        alert.not_succeeded_for,
        Some(std::time::Duration::from_secs(6 * 3600))
    );
    assert!(alert.watches("customers_to_replica") && !alert.watches("other"));
    assert!(
        !format!("{config:?}").contains("tok-123"),
        "the Slack URL is a secret"
    );
    let cases = [
        ("", "set one of `webhook_url`"),
        (
            "webhook_url = \"https://a.example\"\nslack_webhook_url = \"https://b.example\"",
            "set one of `webhook_url`",
        ),
        ("webhook_url = \"ftp://a.example\"", "must start with http"),
        (
            "webhook_url = \"https://a.example\"\nnot_succeeded_for = \"six hours\"",
            "is not a duration",
        ),
        (
            "webhook_url = \"https://a.example\"\nsyncs = [\"nope\"]",
            "alerts.oncall.syncs: unknown sync `nope`",
        ),
        (
            "webhook_url = \"https://a.example\"\nrun_failed = false\nrun_held = false",
            "alerts on nothing",
        ),
        (
            "webhook_url = \"https://a.example\"\nrejections_over_percent = 150.0",
            "a percentage",
        ),
    ];
    for (alert, expected) in cases {
        let err = parse(&with(alert)).unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

#[test]
fn the_last_tick_at_or_before_a_time_is_the_one_a_new_leader_may_have_missed() {
    use chrono::{TimeZone, Utc};
    let every_five = SyncSchedule::parse("*/5 * * * *", None).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 7, 30).unwrap();
    assert_eq!(
        every_five.last_at_or_before(at).unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 5, 0).unwrap()
    );
    // A fire time itself is its own last tick.
    let on_tick = Utc.with_ymd_and_hms(2026, 12, 1, 10, 10, 0).unwrap();
    assert_eq!(every_five.last_at_or_before(on_tick).unwrap(), on_tick);
    // In the sync's zone: 09:00 Berlin is 08:00 UTC in winter.
    let berlin = SyncSchedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        berlin.last_at_or_before(at).unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap()
    );
}

#[test]
fn guardrails_are_read_and_checked() {
    let with = |block: &str| {
        VALID.replace(
            "schedule = \"*/15 * * * *\"",
            &format!("schedule = \"*/15 * * * *\"\nguardrails = {{ {block} }}"),
        )
    };
    let config = parse(&with("max_remove_pct = 20, min_rows = 1000")).unwrap();
    let sync = config.sync("customers_to_replica").unwrap();
    assert_eq!(sync.guardrails.max_remove_pct, Some(20.0));
    assert_eq!(sync.guardrails.min_rows, Some(1000));
    assert_eq!(sync.guardrails.max_change_pct, None);
    assert_eq!(
        sync.guardrails.flapping_versions, 5,
        "flapping is reported by default"
    );
    let config = parse(&with("max_row_drop_pct = 30, flapping_versions = 0")).unwrap();
    let guardrails = &config.sync("customers_to_replica").unwrap().guardrails;
    assert_eq!(
        (guardrails.max_row_drop_pct, guardrails.flapping_versions),
        (Some(30.0), 0)
    );
    let msg = parse(&with("max_row_drop_pct = -1"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("guardrails.max_row_drop_pct") && msg.contains("not a percentage"),
        "{msg}"
    );
    let msg = parse(&with("max_change_pct = 150"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("syncs.customers_to_replica.guardrails.max_change_pct"),
        "{msg}"
    );
    assert!(msg.contains("not a percentage"), "{msg}");
    let msg = parse(&with("max_removes = 3")).unwrap_err().to_string();
    assert!(msg.contains("max_removes"), "{msg}");
    // None unless configured.
    assert_eq!(
        parse(VALID)
            .unwrap()
            .sync("customers_to_replica")
            .unwrap()
            .guardrails,
        crate::config::Guardrails::default()
    );
}
