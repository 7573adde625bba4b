//! Reading delivered records back for `ebb verify`: sObject Collections
//! retrieve (`POST /composite/sobjects/{object}` with `ids` and `fields`,
//! 2,000 ids a request). Salesforce answers one entry per id, `null` for a
//! record it no longer has (deleted, merged) or cannot show.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Map, Value};

use super::SalesforceDestination;
use super::service::Payload;
use crate::destinations::destination::ReadBack;
use crate::destinations::record::OutboundRecord;
use crate::destinations::util::vendor::RequestBudget;
use crate::destinations::util::verify::{
    by_destination_id, delivered_field_names, destination_ids,
};

/// Ids one retrieve takes.
const RETRIEVE_MAX: usize = 2_000;

impl SalesforceDestination {
    pub(super) async fn read_records(&self, records: &[OutboundRecord]) -> ReadBack {
        let budget = RequestBudget::new(&self.limiter);
        let fields = delivered_field_names(records);
        let ids = destination_ids(records);
        let path = format!("/composite/sobjects/{}", self.config.object);
        let mut found: HashMap<String, Map<String, Value>> = HashMap::new();
        for chunk in ids.chunks(RETRIEVE_MAX) {
            let body = serde_json::json!({ "ids": chunk, "fields": fields });
            let answer: Vec<Option<Map<String, Value>>> = self
                .json(&budget, Method::POST, &path, Payload::Json(&body))
                .await
                .map_err(|failure| {
                    let problem = failure.connection_problem(&self.config.login_url, &path);
                    format!(
                        "Salesforce retrieve of {} records failed ({}): {}",
                        self.config.object, problem.kind, problem.message
                    )
                })?;
            if answer.len() != chunk.len() {
                return Err(format!(
                    "Salesforce answered {} records for {} ids",
                    answer.len(),
                    chunk.len()
                ));
            }
            for (id, record) in chunk.iter().zip(answer) {
                if let Some(record) = record {
                    found.insert((*id).to_owned(), record);
                }
            }
        }
        Ok(by_destination_id(records, found))
    }
}
