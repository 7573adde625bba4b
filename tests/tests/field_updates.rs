//! Minimal field updates and `on_create_only`: an update by the
//! destination's id sends only the fields whose values changed since the
//! version delivered (checked on the HubSpot emulator's received bodies),
//! never the fields a sync sets only on create, so edits made in the
//! destination survive; a record created again is written whole.

use ebb_tests::hubspot::{HubSpot, TOKEN};
use ebb_tests::{TestEnv, create_replica, exec, seed_customers};
use serde_json::{Value, json};

const CONFIG: &str = r#"
{HEADER}

[destinations.hubspot_contacts]
type = "hubspot"
access_token = "{TOKEN}"
object = "contacts"
match_on = "email"
base_url = "{HUBSPOT_URL}"

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "hubspot_contacts"
on_create_only = ["firstname"]

[syncs.contacts.mapping]
email = "email"
firstname = "first_name"
plan = "plan"
lifetime_value = "ltv"

[syncs.customers]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "replica"
on_create_only = ["first_name"]

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"
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
    seed_customers(&env.warehouse, 100).await;
    create_replica(&env.app).await;
    env.start_worker(2);
    env
}

/// The HubSpot contact of customer `id`: its id and properties.
fn contact(hubspot: &HubSpot, id: i64) -> (u64, std::collections::BTreeMap<String, String>) {
    hubspot.with(|s| {
        let email = format!("user{id}@example.com");
        let found = s.find("contacts", "email", &email);
        let (object_id, object) = found.first().expect("the contact");
        (*object_id, object.properties.clone())
    })
}

#[tokio::test]
async fn hubspot_updates_send_only_changed_fields_and_keep_fields_set_on_create() {
    let hubspot = HubSpot::start().await;
    let env = env(&hubspot).await;
    let first = env.run_sync("contacts", &[]).await;
    assert_eq!(first["delivered"], 100, "{first}");
    let created = hubspot.with(|s| s.inputs_of("batch/upsert"));
    assert_eq!(created.len(), 100);
    assert!(
        created
            .iter()
            .all(|i| i["properties"]["firstname"].is_string()),
        "a create sets on_create_only fields"
    );

    // A sales rep edits a first name in HubSpot; the model renames every
    // customer and changes every plan.
    let (edited_id, _) = contact(&hubspot, 5);
    hubspot.with(|s| {
        let object = s
            .objects
            .get_mut("contacts")
            .and_then(|o| o.get_mut(&edited_id))
            .expect("contact");
        object
            .properties
            .insert("firstname".into(), "Edited by sales".into());
    });
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'enterprise', first_name = 'Renamed' || id",
    )
    .await;
    let second = env.run_sync("contacts", &[]).await;
    assert_eq!(second["delivered"], 100, "{second}");
    let updates = hubspot.with(|s| s.inputs_of("batch/update"));
    assert_eq!(updates.len(), 100);
    for input in &updates {
        assert_eq!(
            input["properties"],
            json!({"plan": "enterprise"}),
            "only the changed field, never firstname: {input}"
        );
    }
    let (_, edited) = contact(&hubspot, 5);
    assert_eq!(edited["firstname"], "Edited by sales");
    assert_eq!(edited["plan"], "enterprise");
    let (_, other) = contact(&hubspot, 6);
    assert_eq!(other["firstname"], "Name6", "set on create, never updated");

    // Only on_create_only fields change: nothing to write, no request; the
    // records are delivered as they are and the next plan finds no change.
    let requests_before = hubspot.with(|s| s.writes());
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Again' || id",
    )
    .await;
    let third = env.run_sync("contacts", &[]).await;
    assert_eq!(third["delivered"], 100, "{third}");
    assert_eq!(hubspot.with(|s| s.writes()), requests_before);
    let plan = env.ebb_json(&["plan", "contacts"]).await;
    assert_eq!(plan["changed"], 0, "{plan}");

    // A contact deleted in HubSpot, then changed in the model: its update
    // finds the id gone and it is created again whole.
    let (gone_id, _) = contact(&hubspot, 9);
    hubspot.with(|s| s.delete("contacts", gone_id));
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET ltv = 999 WHERE id = 9",
    )
    .await;
    let fourth = env.run_sync("contacts", &[]).await;
    assert_eq!(fourth["delivered"], 1, "{fourth}");
    let last_update = hubspot.with(|s| s.inputs_of("batch/update")).pop();
    assert_eq!(
        last_update.map(|i| i["properties"].clone()),
        Some(json!({"lifetime_value": "999.0"})),
        "the update sent only the changed field"
    );
    let (_, recreated) = contact(&hubspot, 9);
    assert_eq!(recreated["firstname"], "Again9", "created again whole");
    assert_eq!(recreated["plan"], "enterprise");
    assert_eq!(recreated["lifetime_value"], "999.0");
}

#[tokio::test]
async fn a_postgres_destination_inserts_on_create_only_columns_and_never_updates_them() {
    let hubspot = HubSpot::start().await;
    let env = env(&hubspot).await;
    let first = env.run_sync("customers", &[]).await;
    assert_eq!(first["delivered"], 100, "{first}");
    exec(
        &env.app,
        "UPDATE customers_synced SET first_name = 'Edited' WHERE customer_id = 3",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'enterprise', first_name = 'Renamed' || id WHERE id <= 10",
    )
    .await;
    exec(
        &env.warehouse,
        "INSERT INTO analytics.customers VALUES (101, 'user101@example.com', 'New101', 'free', 1)",
    )
    .await;
    let second = env.run_sync("customers", &[]).await;
    assert_eq!(second["delivered"], 11, "{second}");
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT customer_id, first_name, plan FROM customers_synced \
         WHERE customer_id IN (3, 4, 101) ORDER BY customer_id",
    )
    .fetch_all(&env.app)
    .await
    .expect("rows");
    assert_eq!(
        rows,
        vec![
            (3, "Edited".to_owned(), Some("enterprise".to_owned())),
            (4, "Name4".to_owned(), Some("enterprise".to_owned())),
            (101, "New101".to_owned(), Some("free".to_owned())),
        ]
    );
}

#[tokio::test]
async fn on_create_only_needs_a_mapped_field_on_a_destination_that_keeps_it() {
    let hubspot = HubSpot::start().await;
    let env = env(&hubspot).await;
    env.replace_in_config(
        "on_create_only = [\"firstname\"]",
        "on_create_only = [\"lead_source\"]",
    );
    let check = env.ebb(&["check"]).await;
    let stderr = String::from_utf8_lossy(&check.stderr).into_owned();
    assert!(
        !check.status.success()
            && stderr.contains("syncs.contacts.on_create_only")
            && stderr.contains("`lead_source` is not a mapped field"),
        "{stderr}"
    );
}

const SALESFORCE: &str = r#"
{HEADER}

[destinations.crm]
type = "salesforce"
login_url = "{SF_URL}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
refresh_token = "{REFRESH_TOKEN}"
api_version = "62.0"
api = "{API}"
object = "Contact"
external_id = "Warehouse_Id__c"

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers WHERE id <= 30"
primary_key = "id"
destination = "crm"
on_create_only = ["LastName"]

[syncs.contacts.mapping]
Warehouse_Id__c = "id"
Email = "email"
LastName = "first_name"
Plan__c = "plan"
Lifetime_Value__c = "ltv"
"#;

#[tokio::test]
async fn salesforce_updates_by_id_carry_only_changed_fields_in_collections_and_bulk_jobs() {
    use ebb_tests::salesforce::{CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, Salesforce};
    for api in ["collections", "bulk"] {
        let salesforce = Salesforce::start().await;
        let mut env = TestEnv::new(
            SALESFORCE,
            &[
                ("{SF_URL}", salesforce.url()),
                ("{CLIENT_ID}", CLIENT_ID.to_owned()),
                ("{CLIENT_SECRET}", CLIENT_SECRET.to_owned()),
                ("{REFRESH_TOKEN}", REFRESH_TOKEN.to_owned()),
                ("{API}", api.to_owned()),
            ],
        )
        .await;
        seed_customers(&env.warehouse, 30).await;
        env.start_worker(1);
        let first = env.run_sync("contacts", &[]).await;
        assert_eq!(first["delivered"], 30, "{api}: {first}");
        exec(
            &env.warehouse,
            "UPDATE analytics.customers SET plan = 'enterprise', first_name = 'Renamed' || id",
        )
        .await;
        let second = env.run_sync("contacts", &[]).await;
        assert_eq!(second["delivered"], 30, "{api}: {second}");
        let updates = salesforce.with(|s| s.updates.clone());
        assert_eq!(updates.len(), 30, "{api}");
        for update in &updates {
            let mut fields: Vec<&str> = update
                .keys()
                .map(String::as_str)
                .filter(|k| !k.eq_ignore_ascii_case("id") && *k != "attributes")
                .collect();
            fields.sort();
            assert_eq!(
                fields,
                vec!["Plan__c"],
                "{api}: only the changed field, never LastName: {update:?}"
            );
        }
        let kept = salesforce.with(|s| {
            s.live()
                .iter()
                .filter(|(_, r)| {
                    r.fields
                        .get("LastName")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.starts_with("Name"))
                })
                .count()
        });
        assert_eq!(kept, 30, "{api}: LastName set on create and kept");
    }
}
