//! The destinations of the conformance table (`tests/tests/conformance.rs`):
//! each one's emulator (or database), its config for the common sync, and
//! how to read back what it holds. The scenarios themselves are written
//! once, over [`Target`].
//!
//! The common sync is `contacts`, in mirror mode, over
//! `SELECT id, email, first_name, plan FROM analytics.customers` (see
//! [`crate::seed_customers`]); each destination maps it as its API needs.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::braze::{self, Braze};
use crate::customerio::{self, CustomerIo};
use crate::hubspot::{self, HubSpot};
use crate::intercom::{self, Intercom};
use crate::mailchimp::{self, Mailchimp};
use crate::receiver::Receiver;
use crate::salesforce::{self, Salesforce};
use crate::zendesk::{self, Zendesk};
use crate::{TestEnv, create_replica};

/// `{HEADER}`, the worker settings every scenario uses, and the sync's
/// source; a target adds its `[destinations.dest]` and the sync's
/// destination and mapping.
const COMMON: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, first_name, plan FROM analytics.customers"
primary_key = "id"
destination = "dest"
mode = "mirror"
"#;

/// A destination as the conformance scenarios see it.
pub trait Target: Sized {
    /// Starts its emulator.
    fn start() -> impl Future<Output = Self>;

    /// `[destinations.dest]` and `[syncs.contacts.mapping]`.
    fn destination_config(&self) -> String;

    /// Creates what the destination needs before the first run.
    fn prepare(&self, _env: &TestEnv) -> impl Future<Output = ()> {
        async {}
    }

    /// The records the destination holds, as (email, first name), one per
    /// record it holds (a duplicate shows twice).
    fn contents(&self, env: &TestEnv) -> impl Future<Output = Vec<(String, String)>>;

    /// Requests that change data, so far.
    fn writes(&self, env: &TestEnv) -> impl Future<Output = i64>;

    /// The next `n` write requests are applied, and their answers lost
    /// (the connection drops).
    fn lose_answers(&self, n: u32);

    /// A test environment with this destination's config, `rows` customers
    /// seeded and the destination prepared.
    fn env(&self, rows: i64) -> impl Future<Output = TestEnv> {
        async move {
            let config = format!("{COMMON}{}", self.destination_config());
            let env = TestEnv::new(&config, &[]).await;
            crate::seed_customers(&env.warehouse, rows).await;
            self.prepare(&env).await;
            env
        }
    }
}

/// The generic `http` destination, against the receiver emulator.
pub struct Http(pub Receiver);

impl Target for Http {
    async fn start() -> Self {
        Http(Receiver::start().await)
    }

    fn destination_config(&self) -> String {
        format!(
            r#"
[destinations.dest]
type = "http"
url = "{}"
batch_size = 25
max_retries = 3
"#,
            self.0.url()
        )
    }

    async fn contents(&self, _env: &TestEnv) -> Vec<(String, String)> {
        self.0.with(|s| {
            s.records
                .values()
                .map(|fields| (text(&fields["email"]), text(&fields["first_name"])))
                .collect()
        })
    }

    async fn writes(&self, _env: &TestEnv) -> i64 {
        self.0.with(|s| i64::from(s.requests))
    }

    fn lose_answers(&self, n: u32) {
        self.0.with(|s| s.drop_after_apply_left = n);
    }
}

/// The `postgres` destination: a table in another database.
pub struct Postgres;

impl Target for Postgres {
    async fn start() -> Self {
        Postgres
    }

    fn destination_config(&self) -> String {
        r#"
[destinations.dest]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 25
max_retries = 3

[syncs.contacts.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
"#
        .to_owned()
    }

    /// The replica table, and a statement-level trigger counting the
    /// statements that change it.
    async fn prepare(&self, env: &TestEnv) {
        create_replica(&env.app).await;
        for sql in [
            "CREATE TABLE public.writes (n BIGINT NOT NULL)",
            "INSERT INTO public.writes VALUES (0)",
            "CREATE FUNCTION public.count_write() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN UPDATE public.writes SET n = n + 1; RETURN NULL; END $$",
            "CREATE TRIGGER count_writes AFTER INSERT OR UPDATE OR DELETE ON public.customers_synced \
             FOR EACH STATEMENT EXECUTE FUNCTION public.count_write()",
        ] {
            sqlx::query(sql).execute(&env.app).await.expect(sql);
        }
    }

    async fn contents(&self, env: &TestEnv) -> Vec<(String, String)> {
        sqlx::query_as("SELECT email, first_name FROM public.customers_synced")
            .fetch_all(&env.app)
            .await
            .expect("reading the replica")
    }

    async fn writes(&self, env: &TestEnv) -> i64 {
        TestEnv::scalar_i64(&env.app, "SELECT n FROM public.writes").await
    }

    /// A Postgres transaction commits or not; the case where the commit's
    /// answer is lost is a worker crash after the send, which `faults.rs`
    /// covers. Not a scenario of this table.
    fn lose_answers(&self, _n: u32) {
        unreachable!("the postgres destination has no lost-answer scenario")
    }
}

/// The `hubspot` destination (contacts upserted by email), against the
/// HubSpot emulator.
pub struct HubSpotContacts(pub HubSpot);

impl Target for HubSpotContacts {
    async fn start() -> Self {
        HubSpotContacts(HubSpot::start().await)
    }

    fn destination_config(&self) -> String {
        format!(
            r#"
[destinations.dest]
type = "hubspot"
access_token = "{}"
object = "contacts"
match_on = "email"
base_url = "{}"
batch_size = 25
max_retries = 3

[syncs.contacts.mapping]
email = "email"
firstname = "first_name"
plan = "plan"
"#,
            hubspot::TOKEN,
            self.0.url()
        )
    }

    async fn contents(&self, _env: &TestEnv) -> Vec<(String, String)> {
        self.0.with(|s| {
            s.live("contacts")
                .into_iter()
                .map(|(_, o)| {
                    (
                        property(&o.properties, "email"),
                        property(&o.properties, "firstname"),
                    )
                })
                .collect()
        })
    }

    async fn writes(&self, _env: &TestEnv) -> i64 {
        self.0.with(|s| s.writes() as i64)
    }

    fn lose_answers(&self, n: u32) {
        self.0.with(|s| s.drop_after_apply_left = n);
    }
}

/// The `mailchimp` destination (audience members), against the Mailchimp
/// emulator.
pub struct MailchimpMembers(pub Mailchimp);

impl Target for MailchimpMembers {
    async fn start() -> Self {
        MailchimpMembers(Mailchimp::start().await)
    }

    fn destination_config(&self) -> String {
        format!(
            r#"
[destinations.dest]
type = "mailchimp"
api_key = "{}"
list_id = "{}"
base_url = "{}"
batch_size = 25
max_retries = 3

[syncs.contacts.mapping]
email_address = "email"
FNAME = "first_name"
PLAN = "plan"
"#,
            mailchimp::API_KEY,
            mailchimp::LIST_ID,
            self.0.url()
        )
    }

    async fn contents(&self, _env: &TestEnv) -> Vec<(String, String)> {
        self.0.with(|s| {
            s.members
                .values()
                .filter(|m| m.status != "archived")
                .map(|m| (m.email.clone(), property(&m.merge_fields, "FNAME")))
                .collect()
        })
    }

    async fn writes(&self, _env: &TestEnv) -> i64 {
        self.0.with(|s| s.writes() as i64)
    }

    fn lose_answers(&self, n: u32) {
        self.0.with(|s| s.drop_after_apply_left = n);
    }
}

/// The `salesforce` destination (Contacts upserted by an External ID,
/// through sObject Collections), against the Salesforce emulator.
pub struct SalesforceContacts(pub Salesforce);

impl Target for SalesforceContacts {
    async fn start() -> Self {
        SalesforceContacts(Salesforce::start().await)
    }

    fn destination_config(&self) -> String {
        format!(
            r#"
[destinations.dest]
type = "salesforce"
login_url = "{}"
client_id = "{}"
client_secret = "{}"
refresh_token = "{}"
object = "Contact"
external_id = "Warehouse_Id__c"
batch_size = 25
max_retries = 3

[syncs.contacts.mapping]
Warehouse_Id__c = "id"
Email = "email"
LastName = "first_name"
Plan__c = "plan"
"#,
            self.0.url(),
            salesforce::CLIENT_ID,
            salesforce::CLIENT_SECRET,
            salesforce::REFRESH_TOKEN,
        )
    }

    async fn contents(&self, _env: &TestEnv) -> Vec<(String, String)> {
        self.0.with(|s| {
            s.live()
                .into_iter()
                .map(|(_, r)| (text(&r.fields["Email"]), text(&r.fields["LastName"])))
                .collect()
        })
    }

    async fn writes(&self, _env: &TestEnv) -> i64 {
        self.0.with(|s| s.writes() as i64)
    }

    fn lose_answers(&self, n: u32) {
        self.0.with(|s| s.drop_after_apply_left = n);
    }
}

/// The `braze` destination (profiles by `external_id`), against the Braze
/// emulator.
pub struct BrazeProfiles(pub Braze);

impl Target for BrazeProfiles {
    async fn start() -> Self {
        BrazeProfiles(Braze::start().await)
    }

    fn destination_config(&self) -> String {
        format!(
            r#"
[destinations.dest]
type = "braze"
api_key = "{}"
rest_endpoint = "{}"
batch_size = 25
max_retries = 3

[syncs.contacts.mapping]
external_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
"#,
            braze::API_KEY,
            self.0.url()
        )
    }

    async fn contents(&self, _env: &TestEnv) -> Vec<(String, String)> {
        self.0.with(|s| {
            s.profiles
                .iter()
                .map(|p| (p.text("email"), p.text("first_name")))
                .collect()
        })
    }

    async fn writes(&self, _env: &TestEnv) -> i64 {
        self.0.with(|s| s.writes() as i64)
    }

    fn lose_answers(&self, n: u32) {
        self.0.with(|s| s.drop_after_apply_left = n);
    }
}

/// The `customerio` destination (people by `id`), against the Customer.io
/// Track API emulator.
pub struct CustomerIoPeople(pub CustomerIo);

impl Target for CustomerIoPeople {
    async fn start() -> Self {
        CustomerIoPeople(CustomerIo::start().await)
    }

    fn destination_config(&self) -> String {
        format!(
            r#"
[destinations.dest]
type = "customerio"
site_id = "{}"
api_key = "{}"
base_url = "{}"
batch_size = 25
max_retries = 3

[syncs.contacts.mapping]
id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
"#,
            customerio::SITE_ID,
            customerio::API_KEY,
            self.0.url()
        )
    }

    async fn contents(&self, _env: &TestEnv) -> Vec<(String, String)> {
        self.0.with(|s| {
            s.people
                .iter()
                .map(|p| (p.text("email"), p.text("first_name")))
                .collect()
        })
    }

    async fn writes(&self, _env: &TestEnv) -> i64 {
        self.0.with(|s| s.writes() as i64)
    }

    fn lose_answers(&self, n: u32) {
        self.0.with(|s| s.drop_after_apply_left = n);
    }
}

/// The `intercom` destination (contacts matched on `external_id`), against
/// the Intercom emulator.
pub struct IntercomContacts(pub Intercom);

impl Target for IntercomContacts {
    async fn start() -> Self {
        IntercomContacts(Intercom::start().await)
    }

    fn destination_config(&self) -> String {
        format!(
            r#"
[destinations.dest]
type = "intercom"
access_token = "{}"
base_url = "{}"
batch_size = 25
max_retries = 3

[syncs.contacts.mapping]
external_id = "id"
email = "email"
name = "first_name"
plan = "plan"
"#,
            intercom::TOKEN,
            self.0.url()
        )
    }

    async fn contents(&self, _env: &TestEnv) -> Vec<(String, String)> {
        self.0.with(|s| {
            s.contacts
                .iter()
                .map(|c| (c.text("email"), c.text("name")))
                .collect()
        })
    }

    async fn writes(&self, _env: &TestEnv) -> i64 {
        self.0.with(|s| s.writes() as i64)
    }

    fn lose_answers(&self, n: u32) {
        self.0.with(|s| s.drop_after_apply_left = n);
    }
}

/// The `zendesk` destination (users matched on `external_id`), against
/// the Zendesk emulator.
pub struct ZendeskUsers(pub Zendesk);

impl Target for ZendeskUsers {
    async fn start() -> Self {
        ZendeskUsers(Zendesk::start().await)
    }

    fn destination_config(&self) -> String {
        format!(
            r#"
[destinations.dest]
type = "zendesk"
base_url = "{}"
email = "{}"
api_token = "{}"
batch_size = 25
max_retries = 3

[syncs.contacts.mapping]
external_id = "id"
email = "email"
name = "first_name"
plan = "plan"
"#,
            self.0.url(),
            zendesk::EMAIL,
            zendesk::API_TOKEN,
        )
    }

    async fn contents(&self, _env: &TestEnv) -> Vec<(String, String)> {
        self.0.with(|s| {
            s.active_users()
                .map(|u| (u.text("email"), u.text("name")))
                .collect()
        })
    }

    async fn writes(&self, _env: &TestEnv) -> i64 {
        self.0.with(|s| s.writes() as i64)
    }

    fn lose_answers(&self, n: u32) {
        self.0.with(|s| s.drop_after_apply_left = n);
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn property(properties: &BTreeMap<String, String>, name: &str) -> String {
    properties.get(name).cloned().unwrap_or_default()
}
