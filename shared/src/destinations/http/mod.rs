//! The generic `http` destination: JSON batches POSTed to a URL in Ebb's
//! documented format, or requests rendered from templates, one per record
//! or per batch, so that any REST API can be a destination.
//!
//! - `config.rs`: the URL, headers and templates.
//! - `request_builder.rs`: the documented request body.
//! - `template.rs`: request templates, and what they see of a record.
//! - `service.rs`: sending a request and classifying the answer.

pub mod config;
mod request_builder;
mod service;
pub mod template;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::destinations::Destination;
use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::outcome::{Attempt, RecordAnswer};
use crate::destinations::util::vendor::{OneByOne, RequestBudget, finish, finish_after};

pub use config::{HttpConfig, RequestPer, Templated};
pub use request_builder::{build_body, request_idempotency_key};
use template::{RecordScope, batch_scope, record_scope};

pub struct HttpDestination {
    client: reqwest::Client,
    config: HttpConfig,
    limiter: Arc<Limiter>,
}

impl HttpDestination {
    pub fn new(client: reqwest::Client, config: &HttpConfig, limiter: Arc<Limiter>) -> Self {
        Self {
            client,
            config: config.clone(),
            limiter,
        }
    }

    /// Ebb's documented batch format, in one POST.
    async fn send_documented(&self, ctx: &BatchContext, records: &[OutboundRecord]) -> Attempt {
        match build_body(ctx, records) {
            Ok(body) => {
                let key = request_idempotency_key(&ctx.sync, records);
                service::post(&self.client, &self.config, body, &key).await
            }
            Err(e) => Attempt::Fatal(format!("cannot encode the request body: {e}")),
        }
    }

    /// One templated request for the whole batch. A template that cannot
    /// be rendered for some record rejects the request, which is split to
    /// find the record.
    async fn send_batch(
        &self,
        ctx: &BatchContext,
        records: &[OutboundRecord],
        templated: &Templated,
    ) -> Attempt {
        let scopes: Result<Vec<RecordScope<'_>>, String> =
            records.iter().map(|r| RecordScope::of(ctx, r)).collect();
        let scopes = match scopes {
            Ok(scopes) => scopes,
            Err(message) => return Attempt::Rejected(message),
        };
        let documented = match build_body(ctx, records) {
            Ok(body) => String::from_utf8(body).ok(),
            Err(e) => return Attempt::Fatal(format!("cannot encode the request body: {e}")),
        };
        let request = match templated
            .templates
            .render(&batch_scope(ctx, &scopes), documented)
        {
            Ok(request) => request,
            Err(e) => return Attempt::Rejected(e.to_string()),
        };
        let key = request_idempotency_key(&ctx.sync, records);
        match service::send_rendered(
            &self.client,
            &self.config,
            request,
            &key,
            templated.error_path.as_ref(),
        )
        .await
        {
            Ok(()) => Attempt::Delivered,
            Err(failure) => failure.into(),
        }
    }

    /// One templated request per record, each answered on its own; after a
    /// 429 or repeated transient failures the rest wait for another send.
    async fn send_each(
        &self,
        ctx: &BatchContext,
        records: &[OutboundRecord],
        templated: &Templated,
    ) -> Attempt {
        let budget = RequestBudget::new(&self.limiter);
        let mut calls = OneByOne::default();
        let mut answers: Vec<Option<RecordAnswer>> = vec![None; records.len()];
        for (index, record) in records.iter().enumerate() {
            if calls.held_back() {
                answers[index] = Some(OneByOne::not_sent());
                continue;
            }
            let rendered = RecordScope::of(ctx, record).and_then(|scope| {
                let fields = record.fields.as_ref().map(|f| f.get().to_owned());
                templated
                    .templates
                    .render(&record_scope(ctx, &scope), fields)
                    .map_err(|e| e.to_string())
            });
            let request = match rendered {
                Ok(request) => request,
                Err(message) => {
                    answers[index] = Some(RecordAnswer::Rejected(message));
                    continue;
                }
            };
            budget.spend().await;
            let key = record.idempotency_key(&ctx.sync);
            let result = service::send_rendered(
                &self.client,
                &self.config,
                request,
                &key,
                templated.error_path.as_ref(),
            )
            .await
            .map(|()| RecordAnswer::Applied {
                destination_id: None,
                looked_up: false,
            });
            match calls.answer(result) {
                Ok(answer) => answers[index] = Some(answer),
                Err(failure) => {
                    return match finish_after(answers, failure) {
                        Ok(answers) => Attempt::Answered(answers),
                        Err(failure) => failure.into(),
                    };
                }
            }
        }
        Attempt::Answered(finish(answers))
    }
}

impl Destination for HttpDestination {
    fn send<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match self.config.templated.as_deref() {
                None => self.send_documented(ctx, records).await,
                Some(templated) if templated.per == RequestPer::Batch => {
                    self.send_batch(ctx, records, templated).await
                }
                Some(templated) => self.send_each(ctx, records, templated).await,
            }
        })
    }
}
