//! The generic `http` destination: JSON batches POSTed to a URL.
//!
//! - `config.rs`: the URL and headers.
//! - `request_builder.rs`: the documented request body.
//! - `service.rs`: sending it and classifying the answer.

pub mod config;
mod request_builder;
mod service;

use futures::future::BoxFuture;

use crate::destinations::Destination;
use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::outcome::Attempt;

pub use config::HttpConfig;
pub use request_builder::{build_body, request_idempotency_key};

pub struct HttpDestination {
    client: reqwest::Client,
    config: HttpConfig,
}

impl HttpDestination {
    pub fn new(client: reqwest::Client, config: &HttpConfig) -> Self {
        Self {
            client,
            config: config.clone(),
        }
    }
}

impl Destination for HttpDestination {
    fn send<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match build_body(ctx, records) {
                Ok(body) => {
                    let key = request_idempotency_key(&ctx.sync, records);
                    service::post(&self.client, &self.config, body, &key).await
                }
                Err(e) => Attempt::Fatal(format!("cannot encode the request body: {e}")),
            }
        })
    }
}
