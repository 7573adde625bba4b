//! The OAuth 2.0 refresh-token grant, for the vendors whose access tokens
//! expire (Salesforce, Google): `POST {token_url}` with the client's id and
//! secret and the refresh token, and what a refusal means.

use std::time::Duration;

use serde_json::Value;

use crate::destinations::util::api::{self, Failure};

/// The client and refresh token of one destination.
pub struct RefreshGrant<'a> {
    /// Who answers, in messages: `Salesforce`, `Google`.
    pub vendor: &'a str,
    pub token_url: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub refresh_token: &'a str,
    pub timeout: Duration,
}

/// Exchanges the refresh token; returns the token endpoint's JSON answer
/// (`access_token`, and what else the vendor adds).
pub async fn refresh(client: &reqwest::Client, grant: &RefreshGrant<'_>) -> Result<Value, Failure> {
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("client_id", grant.client_id),
        ("client_secret", grant.client_secret),
        ("refresh_token", grant.refresh_token),
    ]);
    let request = client
        .post(grant.token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let answer = api::send(request, grant.vendor, grant.timeout).await?;
    if answer.is_success() {
        return api::parse_answer(grant.vendor, "a token refresh", &answer.body);
    }
    // `{"error":"invalid_grant","error_description":"expired access/refresh token"}`
    let parsed: Option<Value> = serde_json::from_str(&answer.body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (error, description) = (field("error"), field("error_description"));
    let message = format!(
        "{} OAuth {}: {error}: {description}",
        grant.vendor, answer.status
    );
    Err(match (answer.status, error.as_str()) {
        (
            400 | 401,
            "invalid_grant" | "invalid_client_id" | "invalid_client" | "unauthorized_client",
        ) => Failure::Unauthorized(format!(
            "{message} (check the destination's client_id, client_secret and refresh_token)"
        )),
        (429, _) => Failure::Throttled {
            retry_after: answer.retry_after,
        },
        (500..=599, _) => Failure::Transient(message, answer.retry_after),
        _ => Failure::Unauthorized(message),
    })
}

/// `application/x-www-form-urlencoded`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(byte as char)
                }
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(
            super::form(&[("refresh_token", "5Aep861.a+b/c=="), ("x", "ä b")]),
            "refresh_token=5Aep861.a%2Bb%2Fc%3D%3D&x=%C3%A4%20b"
        );
    }
}
