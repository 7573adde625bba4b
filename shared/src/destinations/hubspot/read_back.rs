//! Reading delivered objects back for `ebb verify`: `batch/read` by HubSpot
//! id, 100 inputs a request, asking for the mapped properties. An object
//! HubSpot no longer has (archived, deleted, merged away) is not in the
//! answer: HubSpot says so in the errors of a 207.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::HubSpotDestination;
use super::config::MAX_BATCH;
use crate::destinations::destination::ReadBack;
use crate::destinations::record::OutboundRecord;
use crate::destinations::util::api::Failure;
use crate::destinations::util::vendor::RequestBudget;
use crate::destinations::util::verify::{
    by_destination_id, delivered_field_names, destination_ids,
};

#[derive(Deserialize)]
struct ReadAnswer {
    #[serde(default)]
    results: Vec<ReadObject>,
}

#[derive(Deserialize)]
struct ReadObject {
    id: String,
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(default)]
    archived: bool,
}

impl HubSpotDestination {
    pub(super) async fn read_objects(&self, records: &[OutboundRecord]) -> ReadBack {
        let budget = RequestBudget::new(&self.limiter);
        let properties = delivered_field_names(records);
        let ids = destination_ids(records);
        let mut found: HashMap<String, Map<String, Value>> = HashMap::new();
        for chunk in ids.chunks(MAX_BATCH) {
            let body = serde_json::json!({
                "properties": properties,
                "propertiesWithHistory": [],
                "inputs": chunk.iter().map(|id| serde_json::json!({ "id": id })).collect::<Vec<_>>(),
            });
            let answer = self.read_with_retries(&budget, &body).await?;
            for object in answer.results.into_iter().filter(|o| !o.archived) {
                found.insert(object.id, object.properties);
            }
        }
        Ok(by_destination_id(records, found))
    }

    /// A `batch/read`, waited out on 429 and retried on transient
    /// failures, a few times.
    async fn read_with_retries(
        &self,
        budget: &RequestBudget<'_>,
        body: &Value,
    ) -> Result<ReadAnswer, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.call::<ReadAnswer>(budget, "batch/read", body).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let wait = match &failure {
                Failure::Throttled { retry_after } => retry_after.unwrap_or(Duration::from_secs(1)),
                Failure::Transient(_, retry_after) => retry_after.unwrap_or(Duration::from_secs(1)),
                _ => Duration::ZERO,
            };
            if wait.is_zero() || attempt >= READ_ATTEMPTS {
                let problem = failure.connection_problem(&self.config.base_url, "batch/read");
                return Err(format!(
                    "HubSpot batch/read failed ({}): {}",
                    problem.kind, problem.message
                ));
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Attempts of one `batch/read` before the verification fails.
const READ_ATTEMPTS: u32 = 5;
