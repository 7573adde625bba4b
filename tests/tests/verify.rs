//! `ebb verify`: records changed, deleted and added behind Ebb's back in the
//! postgres destination and in HubSpot (the emulator) are found, field by
//! field, stored, and repaired by `--resend`; records changed in the model
//! since delivery are pending, not drift. `ebb serve` verifies on a
//! schedule, and its API starts verifications and sends drift again.

use ebb_tests::hubspot::{HubSpot, TOKEN};
use ebb_tests::{TestEnv, create_replica, exec, seed_customers};
use serde_json::{Value, json};

const CONFIG: &str = r#"
{HEADER}

[api]
tokens = [
  { name = "ops", token = "ops-token-0123456789abcdef", role = "operator" },
  { name = "grafana", token = "viewer-token-0123456789abcdef", role = "viewer" },
]

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 50

[destinations.hubspot_contacts]
type = "hubspot"
access_token = "{TOKEN}"
object = "contacts"
match_on = "email"
base_url = "{HUBSPOT_URL}"

[syncs.customers]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "replica"
mode = "mirror"

[syncs.customers.verify]
schedule = "*/2 * * * * *"
sample = 20

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, first_name, plan FROM analytics.customers WHERE id <= 50"
primary_key = "id"
destination = "hubspot_contacts"
mode = "mirror"

[syncs.contacts.mapping]
email = "email"
firstname = "first_name"
plan = "plan"
"#;

async fn env(hubspot: &HubSpot) -> TestEnv {
    let mut env = TestEnv::new(
        CONFIG,
        &[
            ("{HUBSPOT_URL}", hubspot.url()),
            ("{TOKEN}", TOKEN.to_owned()),
        ],
    )
    .await;
    seed_customers(&env.warehouse, 200).await;
    create_replica(&env.app).await;
    env.start_worker(2);
    env
}

/// `ebb verify` with `args`, its exit code and JSON answer.
async fn verify(env: &TestEnv, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = env.ebb(&all).await;
    let answer = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ebb verify --json: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), answer)
}

fn totals(v: &Value) -> [i64; 5] {
    let v = &v["verification"];
    ["checked", "missing", "different", "extra", "pending"].map(|k| v[k].as_i64().unwrap_or(-1))
}

fn drift_of<'a>(answer: &'a Value, key: &str) -> &'a Value {
    answer["drift"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["record_key"] == key))
        .unwrap_or_else(|| panic!("no drift for `{key}`: {answer}"))
}

#[tokio::test]
async fn drift_in_a_postgres_table_is_found_field_by_field_and_resent() {
    let hubspot = HubSpot::start().await;
    let env = env(&hubspot).await;
    let first = env.run_sync("customers", &[]).await;
    assert_eq!(first["delivered"], 200, "{first}");
    let (code, clean) = verify(&env, &["customers", "--all"]).await;
    assert_eq!(code, Some(0), "{clean}");
    assert_eq!(totals(&clean), [200, 0, 0, 0, 0], "{clean}");
    assert_eq!(clean["verification"]["matching"], 200);
    assert_eq!(clean["verification"]["run_id"], first["id"]);

    // Behind Ebb's back: values edited, rows deleted, a row added. And one
    // record changed in the model, which the next run sends anyway.
    exec(
        &env.app,
        "UPDATE customers_synced SET plan = 'hacked' WHERE customer_id IN (3, 4, 5)",
    )
    .await;
    exec(
        &env.app,
        "DELETE FROM customers_synced WHERE customer_id IN (10, 11)",
    )
    .await;
    exec(
        &env.app,
        "INSERT INTO customers_synced VALUES (9999, 'ghost@example.com', 'Ghost', 'free', 0)",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'team' WHERE id = 20",
    )
    .await;

    let (code, found) = verify(&env, &["customers", "--all"]).await;
    assert_eq!(code, Some(4), "drift exits 4: {found}");
    assert_eq!(totals(&found), [199, 2, 3, 1, 1], "{found}");
    assert_eq!(drift_of(&found, "10")["kind"], "missing");
    assert_eq!(drift_of(&found, "9999")["kind"], "extra");
    let edited = drift_of(&found, "4");
    assert_eq!(edited["kind"], "different");
    assert_eq!(
        edited["fields"],
        json!([{"field": "plan", "delivered": "free", "found": "hacked"}]),
        "only the edited field, with both values: {edited}"
    );
    let text = String::from_utf8_lossy(&env.ebb(&["verify", "customers", "--all"]).await.stdout)
        .into_owned();
    assert!(
        text.contains("plan: delivered \"free\", found \"hacked\"") && text.contains("--resend"),
        "{text}"
    );

    let (code, sample) = verify(&env, &["customers", "--sample", "20"]).await;
    assert!(matches!(code, Some(0) | Some(4)), "{sample}");
    assert_eq!(sample["verification"]["checked"], 20, "{sample}");
    assert_eq!(sample["verification"]["scope"], "sample");

    // One command marks the drift and runs the sync: edited rows written
    // again, deleted ones back, the extra one removed (mirror mode).
    let resend = env.ebb(&["verify", "customers", "--all", "--resend"]).await;
    assert_eq!(
        resend.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&resend.stdout),
        String::from_utf8_lossy(&resend.stderr)
    );
    let hacked = TestEnv::scalar_i64(
        &env.app,
        "SELECT count(*) FROM customers_synced WHERE plan = 'hacked' OR customer_id = 9999",
    )
    .await;
    assert_eq!(hacked, 0);
    let rows = TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM customers_synced").await;
    assert_eq!(rows, 200);
    let (code, repaired) = verify(&env, &["customers", "--all"]).await;
    assert_eq!(code, Some(0), "{repaired}");
    assert_eq!(totals(&repaired), [200, 0, 0, 0, 0], "{repaired}");

    let list = env
        .ebb_json(&["verifications", "--sync", "customers"])
        .await;
    let list = list.as_array().expect("list");
    assert_eq!(list.len(), 6, "{list:?}");
    let resent = list
        .iter()
        .find(|v| v["resent"].as_i64() == Some(6))
        .expect("the verification that resent");
    assert!(resent["resend_run_id"].as_i64().is_some(), "{resent}");
}

#[tokio::test]
async fn drift_in_hubspot_is_read_back_in_batches_and_resent() {
    let hubspot = HubSpot::start().await;
    let env = env(&hubspot).await;
    let first = env.run_sync("contacts", &[]).await;
    assert_eq!(first["delivered"], 50, "{first}");

    let ids: Vec<u64> = hubspot.with(|s| s.live("contacts").iter().map(|(id, _)| *id).collect());
    assert_eq!(ids.len(), 50);
    hubspot.with(|s| {
        let contacts = s.objects.get_mut("contacts").expect("contacts");
        for id in &ids[..2] {
            let object = contacts.get_mut(id).expect("object");
            object.properties.insert("plan".into(), "churned".into());
        }
        s.delete("contacts", ids[2]);
    });

    let (code, found) = verify(&env, &["contacts", "--all"]).await;
    assert_eq!(code, Some(4), "{found}");
    let v = &found["verification"];
    assert_eq!(
        (&v["checked"], &v["missing"], &v["different"], &v["extra"]),
        (&json!(50), &json!(1), &json!(2), &Value::Null),
        "HubSpot cannot list records, so extras are not looked for: {found}"
    );
    assert_eq!(
        hubspot.with(|s| s.calls("batch/read")),
        1,
        "50 ids in one batch/read"
    );
    let different: Vec<&Value> = found["drift"]
        .as_array()
        .expect("drift")
        .iter()
        .filter(|d| d["kind"] == "different")
        .collect();
    assert!(
        different
            .iter()
            .all(|d| d["fields"][0]["field"] == "plan" && d["fields"][0]["found"] == "churned"),
        "{different:?}"
    );

    let resend = env.ebb(&["verify", "contacts", "--all", "--resend"]).await;
    assert_eq!(
        resend.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resend.stderr)
    );
    let (code, repaired) = verify(&env, &["contacts", "--all"]).await;
    assert_eq!(code, Some(0), "{repaired}");
    assert_eq!(repaired["verification"]["matching"], 50, "{repaired}");
    assert_eq!(
        hubspot.with(|s| s.live("contacts").len()),
        50,
        "the deleted contact is back"
    );
}

#[tokio::test]
async fn serve_verifies_on_schedule_and_the_api_verifies_and_resends() {
    const OPS: &str = "ops-token-0123456789abcdef";
    const VIEWER: &str = "viewer-token-0123456789abcdef";
    let hubspot = HubSpot::start().await;
    let env = env(&hubspot).await;
    let first = env.run_sync("customers", &[]).await;
    assert_eq!(first["delivered"], 200, "{first}");
    let port = ebb_tests::free_port();
    let _serve = env.serve(port, &[]);
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let answer = client.get(path).bearer_auth(VIEWER).send().await.ok()?;
            answer.status().is_success().then_some(())?;
            answer.json::<Value>().await.ok()
        }
    };

    // On its schedule (every 2 s, a sample of 20), with no one asking.
    let scheduled = ebb_tests::eventually(
        std::time::Duration::from_secs(30),
        "a scheduled verification",
        || async {
            let page = get(format!("{base}/verifications?sync=customers")).await?;
            page["items"]
                .as_array()?
                .iter()
                .find(|v| v["trigger"] == "schedule" && v["state"] == "succeeded")
                .cloned()
        },
    )
    .await;
    assert_eq!(scheduled["checked"], 20, "{scheduled}");
    assert_eq!(scheduled["scope"], "sample");

    exec(
        &env.app,
        "UPDATE customers_synced SET first_name = 'Edited' WHERE customer_id IN (7, 8)",
    )
    .await;
    let start = |token: &'static str, body: Value| {
        client
            .post(format!("{base}/syncs/customers/verifications"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let refused = start(VIEWER, json!({"all": true})).await.expect("POST");
    assert_eq!(refused.status().as_u16(), 403);
    let bad = start(OPS, json!({"sample": 0})).await.expect("POST");
    assert_eq!(bad.status().as_u16(), 400);
    let started = start(OPS, json!({"all": true})).await.expect("POST");
    assert_eq!(started.status().as_u16(), 202);
    let location = started
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("Location")
        .to_owned();
    let detail = ebb_tests::eventually(
        std::time::Duration::from_secs(30),
        "the verification to finish",
        || async {
            let detail = get(format!("http://127.0.0.1:{port}{location}")).await?;
            (detail["verification"]["state"] == "succeeded").then_some(detail)
        },
    )
    .await;
    assert_eq!(detail["verification"]["different"], 2, "{detail}");
    assert_eq!(detail["verification"]["checked"], 200, "{detail}");
    assert_eq!(
        detail["drift"][0]["fields"],
        json!([{"field": "first_name", "delivered": "Name7", "found": "Edited"}]),
        "{detail}"
    );

    let id = detail["verification"]["id"].as_i64().expect("id");
    let resend = client
        .post(format!("{base}/verifications/{id}/resend"))
        .bearer_auth(OPS)
        .send()
        .await
        .expect("POST");
    assert_eq!(resend.status().as_u16(), 202);
    let run: Value = resend.json().await.expect("run");
    let run_id = run["id"].as_i64().expect("run id");
    let finished = ebb_tests::eventually(
        std::time::Duration::from_secs(30),
        "the resend run",
        || async {
            let run = get(format!("{base}/runs/{run_id}")).await?;
            (run["state"] == "succeeded").then_some(run)
        },
    )
    .await;
    assert_eq!(
        finished["delivered"], 2,
        "only the drift is sent: {finished}"
    );
    let edited = TestEnv::scalar_i64(
        &env.app,
        "SELECT count(*) FROM customers_synced WHERE first_name = 'Edited'",
    )
    .await;
    assert_eq!(edited, 0);
    let after = get(format!("{base}/verifications/{id}"))
        .await
        .expect("GET");
    assert_eq!(after["verification"]["resend_run_id"], run_id, "{after}");
}

const VENDORS: &str = r#"
{HEADER}

[destinations.crm]
type = "salesforce"
login_url = "{SF_URL}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
refresh_token = "{REFRESH_TOKEN}"
api_version = "62.0"
object = "Contact"
external_id = "Warehouse_Id__c"

[destinations.newsletter]
type = "mailchimp"
api_key = "{API_KEY}"
list_id = "{LIST_ID}"
base_url = "{MAILCHIMP_URL}"

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers WHERE id <= 40"
primary_key = "id"
destination = "crm"

[syncs.contacts.mapping]
Warehouse_Id__c = "id"
Email = "email"
LastName = "first_name"
Plan__c = "plan"
Lifetime_Value__c = "ltv"

[syncs.subscribers]
source = "warehouse"
model = "SELECT id, email, first_name, ltv, CASE WHEN id % 10 = 0 THEN 'vip, beta' END AS tags FROM analytics.customers WHERE id <= 40"
primary_key = "id"
destination = "newsletter"

[syncs.subscribers.mapping]
email_address = "email"
FNAME = "first_name"
LTV = "ltv"
tags = "tags"
"#;

#[tokio::test]
async fn drift_in_salesforce_and_mailchimp_is_read_back_and_resent() {
    use ebb_tests::mailchimp::{API_KEY, LIST_ID, Mailchimp, hash};
    use ebb_tests::salesforce::{CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, Salesforce};
    let salesforce = Salesforce::start().await;
    let mailchimp = Mailchimp::start().await;
    let mut env = TestEnv::new(
        VENDORS,
        &[
            ("{SF_URL}", salesforce.url()),
            ("{CLIENT_ID}", CLIENT_ID.to_owned()),
            ("{CLIENT_SECRET}", CLIENT_SECRET.to_owned()),
            ("{REFRESH_TOKEN}", REFRESH_TOKEN.to_owned()),
            ("{MAILCHIMP_URL}", mailchimp.url()),
            ("{API_KEY}", API_KEY.to_owned()),
            ("{LIST_ID}", LIST_ID.to_owned()),
        ],
    )
    .await;
    seed_customers(&env.warehouse, 40).await;
    env.start_worker(2);
    for sync in ["contacts", "subscribers"] {
        let run = env.run_sync(sync, &[]).await;
        assert_eq!(run["delivered"], 40, "{run}");
        let (code, clean) = verify(&env, &[sync, "--all"]).await;
        assert_eq!(code, Some(0), "{clean}");
        assert_eq!(clean["verification"]["matching"], 40, "{clean}");
    }

    // Salesforce: a plan edited, a contact deleted. Mailchimp: a merge
    // field edited, a tag removed, a member gone.
    salesforce.with(|s| {
        let ids: Vec<String> = s.live().iter().map(|(id, _)| (*id).clone()).collect();
        let first = s.contacts.get_mut(&ids[0]).expect("contact");
        first.fields.insert("Plan__c".into(), json!("enterprise"));
        s.contacts.get_mut(&ids[1]).expect("contact").deleted = true;
    });
    mailchimp.with(|s| {
        let member = s
            .members
            .get_mut(&hash("user3@example.com"))
            .expect("member");
        member.merge_fields.insert("FNAME".into(), "Edited".into());
        let vip = s
            .members
            .get_mut(&hash("user10@example.com"))
            .expect("member");
        vip.tags.remove("vip");
        s.members.remove(&hash("user4@example.com"));
    });

    let (code, crm) = verify(&env, &["contacts", "--all"]).await;
    assert_eq!(code, Some(4), "{crm}");
    assert_eq!(
        (
            &crm["verification"]["missing"],
            &crm["verification"]["different"]
        ),
        (&json!(1), &json!(1)),
        "{crm}"
    );
    assert_eq!(
        salesforce.with(|s| s.calls("POST retrieve")),
        2,
        "one retrieve per verification of 40"
    );
    let (code, news) = verify(&env, &["subscribers", "--all"]).await;
    assert_eq!(code, Some(4), "{news}");
    assert_eq!(
        (
            &news["verification"]["missing"],
            &news["verification"]["different"]
        ),
        (&json!(1), &json!(2)),
        "{news}"
    );
    let tagged = drift_of(&news, "10");
    assert_eq!(tagged["fields"][0]["field"], "tags", "{tagged}");

    for sync in ["contacts", "subscribers"] {
        let resend = env.ebb(&["verify", sync, "--all", "--resend"]).await;
        assert_eq!(
            resend.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&resend.stderr)
        );
        let (code, repaired) = verify(&env, &[sync, "--all"]).await;
        assert_eq!(code, Some(0), "{sync}: {repaired}");
        assert_eq!(repaired["verification"]["matching"], 40, "{repaired}");
    }
}
