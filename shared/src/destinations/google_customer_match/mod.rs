//! The `google_customer_match` destination: the members of one Google Ads
//! Customer Match user list, following the model.
//!
//! - `config.rs`: the account, list, credentials and consent.
//! - `normalize.rs`: Google's normalisation, then SHA-256.
//! - `service.rs`: the access token, calls and Google's errors.
//!
//! How a send is written (membership follows the model; see
//! `util/audience.rs`): Google refuses to mix additions and removals in one
//! job, so a send makes up to two offline user data jobs, removals first,
//! each three requests: `offlineUserDataJobs:create` (type
//! `CUSTOMER_MATCH_USER_LIST`, the list and the consent),
//! `{job}:addOperations` (one `create` or `remove` per member, its
//! `userIdentifiers` hashed, with partial failure on: an operation Google
//! refuses is dead-lettered with its reason, the others go on), and
//! `{job}:run`. Google then processes the job on its own time (hours);
//! Ebb does not wait for it. A lost answer makes a new job: adding or
//! removing a member twice changes nothing.

pub mod config;
pub mod normalize;
mod service;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use config::GoogleCustomerMatchConfig;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::audience::{self, Change};
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::vendor::{RequestBudget, VendorDestination, conclude};
pub use service::Failure;
use service::GoogleAds;

pub struct GoogleCustomerMatchDestination {
    ads: GoogleAds,
    limiter: Arc<Limiter>,
}

type Answers = Vec<Option<RecordAnswer>>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedJob {
    resource_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddAnswer {
    #[serde(default)]
    partial_failure_error: Option<Value>,
}

impl GoogleCustomerMatchDestination {
    pub fn new(
        client: reqwest::Client,
        config: &GoogleCustomerMatchConfig,
        limiter: Arc<Limiter>,
    ) -> Self {
        Self {
            ads: GoogleAds::new(client, config),
            limiter,
        }
    }

    async fn try_send(
        &self,
        ctx: &BatchContext,
        records: &[OutboundRecord],
    ) -> Result<Vec<RecordAnswer>, Failure> {
        let budget = &RequestBudget::new(&self.limiter);
        let mut answers: Answers = vec![None; records.len()];
        let written = self.write(budget, ctx, records, &mut answers).await;
        conclude(answers, written)
    }

    async fn write(
        &self,
        budget: &RequestBudget<'_>,
        ctx: &BatchContext,
        records: &[OutboundRecord],
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let changes = audience::plan(
            ctx,
            records,
            answers,
            "the Customer Match list",
            normalize::member,
        )?;
        let mut refused = BTreeMap::new();
        for (add, positions) in audience::groups(&changes) {
            self.run_job(budget, &changes, &positions, add, &mut refused)
                .await?;
        }
        audience::answer(&changes, &refused, answers);
        Ok(())
    }

    /// One offline user data job of the changes at `positions` (all
    /// additions or all removals): create, add operations, run.
    async fn run_job(
        &self,
        budget: &RequestBudget<'_>,
        changes: &[Change],
        positions: &[usize],
        add: bool,
        refused: &mut BTreeMap<usize, String>,
    ) -> Result<(), Failure> {
        let config = &self.ads.config;
        let mut metadata = json!({ "userList": config.user_list() });
        let mut consent = serde_json::Map::new();
        if let Some(value) = &config.ad_user_data_consent {
            consent.insert("adUserData".into(), json!(value));
        }
        if let Some(value) = &config.ad_personalization_consent {
            consent.insert("adPersonalization".into(), json!(value));
        }
        if !consent.is_empty() {
            metadata["consent"] = Value::Object(consent);
        }
        let job = json!({ "job": {
            "type": "CUSTOMER_MATCH_USER_LIST",
            "customerMatchUserListMetadata": metadata,
        }});
        budget.spend().await;
        let text = self
            .ads
            .post(
                &format!(
                    "customers/{}/offlineUserDataJobs:create",
                    config.customer_id
                ),
                &job,
            )
            .await?;
        let created: CreatedJob = parse_answer("Google Ads", "a job create", &text)?;

        let verb = if add { "create" } else { "remove" };
        let operations: Vec<Value> = positions
            .iter()
            .map(|&i| json!({ verb: { "userIdentifiers": normalize::user_identifiers(&changes[i].member) } }))
            .collect();
        let body = json!({ "operations": operations, "enablePartialFailure": true });
        budget.spend().await;
        let text = self
            .ads
            .post(&format!("{}:addOperations", created.resource_name), &body)
            .await?;
        let added: AddAnswer = parse_answer("Google Ads", "an addOperations request", &text)?;
        if let Some(partial) = added.partial_failure_error.as_ref() {
            for failure in service::failures(partial) {
                let index = failure
                    .pointer("/location/fieldPathElements/0/index")
                    .and_then(Value::as_u64)
                    .map(|i| i as usize);
                match index.and_then(|i| positions.get(i)) {
                    Some(&position) => {
                        refused.insert(
                            position,
                            format!("Google Ads: {}", service::describe(failure)),
                        );
                    }
                    None => {
                        return Err(Failure::Unexpected(format!(
                            "Google Ads reported a partial failure Ebb cannot place on an operation: {failure}"
                        )));
                    }
                }
            }
        }
        budget.spend().await;
        self.ads
            .post(&format!("{}:run", created.resource_name), &json!({}))
            .await?;
        tracing::info!(
            job = %created.resource_name,
            operations = positions.len(),
            refused = refused.len(),
            "ran a Customer Match job; Google processes it within hours"
        );
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserList {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    membership_status: String,
}

/// `ebb check --connect`: reads the user list through `googleAds:search`;
/// a list that is not CRM-based (Customer Match) or is closed is named.
pub async fn list_problems(
    client: &reqwest::Client,
    config: &GoogleCustomerMatchConfig,
) -> Result<(Vec<String>, String), Failure> {
    let ads = GoogleAds::new(client.clone(), config);
    let query = format!(
        "SELECT user_list.name, user_list.type, user_list.membership_status FROM user_list WHERE user_list.id = {}",
        config.user_list_id
    );
    let text = ads
        .post(
            &format!("customers/{}/googleAds:search", config.customer_id),
            &json!({ "query": query }),
        )
        .await?;
    let found: Value = parse_answer("Google Ads", "a user list search", &text)?;
    let list = found
        .pointer("/results/0/userList")
        .cloned()
        .map(serde_json::from_value::<UserList>)
        .transpose()
        .map_err(|e| {
            Failure::Unexpected(format!(
                "Google Ads's user list answer is not what its API documents: {e}"
            ))
        })?;
    let Some(list) = list else {
        return Ok((
            vec![format!(
                "customer {} has no user list {}; create a Customer Match list (Tools → Audience manager) and give its id",
                config.customer_id, config.user_list_id
            )],
            String::new(),
        ));
    };
    let mut problems = Vec::new();
    if list.kind != "CRM_BASED" {
        problems.push(format!(
            "user list {} is a {} list; Customer Match members go only to a CRM_BASED (customer list) list",
            config.user_list_id, list.kind
        ));
    }
    if list.membership_status == "CLOSED" {
        problems.push(format!(
            "user list {} is closed: Google adds no members to it until it is opened",
            config.user_list_id
        ));
    }
    Ok((problems, list.name))
}

impl VendorDestination for GoogleCustomerMatchDestination {
    fn send_records<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Result<Vec<RecordAnswer>, Failure>> {
        Box::pin(self.try_send(ctx, records))
    }
}
