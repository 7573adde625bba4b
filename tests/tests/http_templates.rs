//! The `http` destination with request templates, against a REST API of
//! users that answers as Slack's Web API does (`ebb_tests::rest_api`: 200
//! with `{"ok": false, "error": …}` for a refused request): a request per
//! record (PUT and DELETE by key, the body rendered from the record, the
//! refusal found through `error_path`), a request per batch, and template
//! errors found by `ebb check` with the part and the field.

use ebb_tests::rest_api::{RestApi, TOKEN};
use ebb_tests::{TestEnv, exec, seed_customers};

const PER_RECORD: &str = r#"
{HEADER}

[destinations.users]
type = "http"
method = "{% if op == 'delete' %}DELETE{% else %}PUT{% endif %}"
url = "{API}/users/{{ key | urlencode }}"
headers = { Authorization = "Bearer {TOKEN}", X-Ebb-Sync = "{{ sync }}" }
body = '''{% if op == "upsert" %}{"email": {{ fields.email | tojson }}, "plan": {{ fields.plan | tojson }}}{% endif %}'''
error_path = "$.error"
batch_size = 10

[syncs.people]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "users"
mode = "mirror"
"#;

const PER_BATCH: &str = r#"
{HEADER}

[destinations.users]
type = "http"
url = "{API}/users.batch"
request_per = "batch"
headers = { Authorization = "Bearer {TOKEN}" }
body = '''{"users": {{ records | map(attribute="fields") | list | tojson }}}'''
error_path = "$.error"
batch_size = 25

[syncs.people]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "users"
"#;

async fn env(config: &str, api: &RestApi) -> TestEnv {
    let env = TestEnv::new(
        config,
        &[("{API}", api.base()), ("{TOKEN}", TOKEN.to_owned())],
    )
    .await;
    seed_customers(&env.warehouse, 30).await;
    env
}

#[tokio::test]
async fn each_record_is_its_own_rendered_request_and_refusals_in_200_answers_are_rejections() {
    let api = RestApi::start().await;
    let mut env = env(PER_RECORD, &api).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'nope-' || id WHERE id IN (4, 19)",
    )
    .await;
    env.start_worker(2);

    let run = env.run_sync("people", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        (run["delivered"].as_i64(), run["rejected"].as_i64()),
        (Some(28), Some(2)),
        "{run}"
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let reasons: Vec<&str> = dlq
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 2, "{dlq}");
    assert!(
        reasons.iter().all(|r| r.contains("HTTP 200")
            && r.contains("$.error")
            && r.contains("invalid_email")),
        "{reasons:?}"
    );
    api.with(|s| {
        assert_eq!(s.users.len(), 28);
        assert_eq!(
            s.users["7"],
            serde_json::json!({"email": "user7@example.com", "plan": "pro"})
        );
        assert_eq!(s.requests.len(), 30, "one request per record");
        for request in &s.requests {
            assert_eq!(request.method, "PUT");
            assert_eq!(
                request.headers.get("x-ebb-sync").map(String::as_str),
                Some("people")
            );
            assert_eq!(
                request.headers.get("content-type").map(String::as_str),
                Some("application/json")
            );
            let key = request
                .headers
                .get("idempotency-key")
                .expect("an Idempotency-Key per record");
            assert!(
                key.starts_with(&format!(
                    "people:{}:",
                    request.path.trim_start_matches("/users/")
                )),
                "{key}"
            );
        }
    });

    // Two removed, one changed: two DELETEs without a body, one PUT.
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id IN (1, 2)",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'enterprise' WHERE id = 3",
    )
    .await;
    exec(&env.warehouse, "UPDATE analytics.customers SET email = 'fixed' || id || '@example.com' WHERE id IN (4, 19)").await;
    api.with(|s| s.requests.clear());
    let run = env.run_sync("people", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 5, "{run}");
    api.with(|s| {
        let mut seen: Vec<(String, String, String)> = s
            .requests
            .iter()
            .map(|r| (r.method.clone(), r.path.clone(), r.body.clone()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("DELETE".into(), "/users/1".into(), String::new()),
                ("DELETE".into(), "/users/2".into(), String::new()),
                (
                    "PUT".into(),
                    "/users/19".into(),
                    r#"{"email": "fixed19@example.com", "plan": "pro"}"#.into()
                ),
                (
                    "PUT".into(),
                    "/users/3".into(),
                    r#"{"email": "user3@example.com", "plan": "enterprise"}"#.into()
                ),
                (
                    "PUT".into(),
                    "/users/4".into(),
                    r#"{"email": "fixed4@example.com", "plan": "free"}"#.into()
                ),
            ]
        );
        assert!(!s.users.contains_key("1") && !s.users.contains_key("2"));
        assert_eq!(s.users.len(), 28);
    });
}

#[tokio::test]
async fn a_batch_is_one_rendered_request_and_a_refused_batch_is_split_to_its_record() {
    let api = RestApi::start().await;
    let mut env = env(PER_BATCH, &api).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'nope' WHERE id = 12",
    )
    .await;
    env.start_worker(1);
    let run = env.run_sync("people", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        (run["delivered"].as_i64(), run["rejected"].as_i64()),
        (Some(29), Some(1)),
        "{run}"
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert_eq!(dlq[0]["record_key"], "12", "{dlq}");
    api.with(|s| {
        assert_eq!(s.users.len(), 29);
        assert_eq!(
            s.users["5"],
            serde_json::json!({"id": 5, "email": "user5@example.com", "plan": "pro"})
        );
        // The two batches (25 and 5 records) go in either order; each is
        // first sent whole, in one request.
        let mut sizes = Vec::new();
        for request in &s.requests {
            assert_eq!(
                (request.method.as_str(), request.path.as_str()),
                ("POST", "/users.batch")
            );
            let body: serde_json::Value = serde_json::from_str(&request.body).expect("a JSON body");
            sizes.push(body["users"].as_array().map_or(0, Vec::len));
        }
        assert!(
            sizes.contains(&25) && sizes.contains(&5),
            "each batch in one request: {sizes:?}"
        );
        assert_eq!(sizes.iter().max(), Some(&25), "{sizes:?}");
    });
}

#[tokio::test]
async fn template_errors_are_found_by_ebb_check_with_their_part_and_field() {
    let api = RestApi::start().await;
    let env = env(PER_RECORD, &api).await;
    let output = env.ebb(&["check"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    env.replace_in_config("fields.plan | tojson", "fields.plann | tojson");
    let output = env.ebb(&["check"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sync `people`") && stderr.contains("`body` template"),
        "{stderr}"
    );
    assert!(
        stderr.contains("undefined") && stderr.contains("(id, email, plan)"),
        "{stderr}"
    );

    env.replace_in_config("fields.plann | tojson", "fields.plan | tojson }");
    let output = env.ebb(&["check"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("destinations.users.body") && stderr.contains("syntax error"),
        "{stderr}"
    );

    // A delete has no fields: a body that reads them unconditionally fails
    // for mirror syncs, at check time.
    env.replace_in_config("fields.plan | tojson }", "fields.plan | tojson");
    env.replace_in_config(r#"{% if op == "upsert" %}"#, "");
    env.replace_in_config("{% endif %}'''", "'''");
    let output = env.ebb(&["check"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("for a delete") && stderr.contains("branch on `op`"),
        "{stderr}"
    );
}
