//! What an alert message says: a JSON document for a webhook, or a line of
//! text for Slack's incoming webhooks (`{"text": …}`).

use ebb_shared::state::alerts::Delivery;
use serde_json::{Value, json};

/// The document a `webhook_url` receives.
pub fn webhook(delivery: &Delivery) -> Value {
    let incident = &delivery.incident;
    json!({
        "alert": delivery.alert,
        "status": delivery.status,
        "kind": incident.kind,
        "sync": incident.sync_name,
        "detail": incident.detail,
        "run_id": incident.run_id,
        "incident_id": incident.id,
        "opened_at": incident.opened_at,
        "resolved_at": incident.resolved_at,
        "resolution": incident.resolution,
    })
}

/// The message a `slack_webhook_url` receives.
pub fn slack(delivery: &Delivery) -> Value {
    let incident = &delivery.incident;
    let text = if delivery.status == "resolved" {
        format!(
            ":white_check_mark: Ebb: sync `{}` recovered ({}): {}",
            incident.sync_name,
            incident.kind.as_str().replace('_', " "),
            incident.resolution.as_deref().unwrap_or("resolved")
        )
    } else {
        format!(
            ":rotating_light: Ebb: sync `{}` ({}): {}",
            incident.sync_name,
            incident.kind.as_str().replace('_', " "),
            incident.detail
        )
    };
    json!({ "text": text })
}
