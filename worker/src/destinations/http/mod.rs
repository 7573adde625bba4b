//! The generic `http` destination: JSON batches POSTed to a URL.
//!
//! - `request_builder.rs`: the documented request body.
//! - `service.rs`: sending it and classifying the answer.

mod request_builder;
mod service;

use std::time::Duration;

use ebb_shared::config::HttpDestinationConfig;
use futures::future::BoxFuture;

use crate::batch::{BatchContext, OutboundRecord};
use crate::destinations::Destination;
use crate::destinations::util::outcome::Attempt;
use crate::error::WorkerError;

pub use request_builder::{build_body, request_idempotency_key};

/// One pooled client per worker process.
/// The HTTP client every destination shares. It never follows redirects:
/// following one turns a `POST` into a `GET` (301, 302, 303) whose 200
/// would count as delivered, and sends the request, custom credential
/// headers included, to another host. A 3xx is a configuration error that
/// names the new location (see `service::classify`).
pub fn client() -> Result<reqwest::Client, WorkerError> {
    reqwest::Client::builder()
        .user_agent(concat!("ebb/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| WorkerError::DestinationSetup {
            destination: "http".into(),
            message: e.to_string(),
        })
}

pub struct HttpDestination {
    client: reqwest::Client,
    config: HttpDestinationConfig,
}

impl HttpDestination {
    pub fn new(client: reqwest::Client, config: &HttpDestinationConfig) -> Self {
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
