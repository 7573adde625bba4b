//! Logging in to the UI with an API token. The login form opens a session
//! kept in the state database (`ebb_ui_sessions`, so every replica of
//! `ebb serve` knows it); the browser holds only a random id in an
//! HttpOnly, SameSite=Lax cookie. Lax rather than Strict so that a link to
//! a run, shared in chat, opens logged in; no cross-site POST carries the
//! cookie, and every form that changes state also carries the session's
//! CSRF token, checked in constant time. The login form itself is guarded
//! by a double-submit token. The session's role is the token's role in
//! the config *now*: removing or changing a token ends its sessions.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use ebb_shared::config::Role;
use ebb_shared::hex;
use ebb_shared::state::ui_sessions;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::form::FormFields;
use super::{UiError, UiState, layout};
use crate::api::auth::Caller;
use crate::api::problem::Problem;

const SESSION_COOKIE: &str = "ebb_session";
const LOGIN_COOKIE: &str = "ebb_login";
const SESSION_HOURS: i64 = 12;

/// A logged-in browser: who it is, and the token its forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
}

impl Session {
    /// How runs and DLQ entries record this caller: `ui:<token name>`.
    pub fn label(&self) -> String {
        format!("ui:{}", self.caller.name)
    }

    pub fn is_operator(&self) -> bool {
        self.caller.role == Role::Operator
    }

    /// The form, once its CSRF token is the session's.
    pub fn form(&self, body: &Bytes) -> Result<FormFields, UiError> {
        let form = FormFields::parse(body);
        let sent = form.get("csrf").unwrap_or_default();
        if !bool::from(sent.as_bytes().ct_eq(self.csrf.as_bytes())) {
            return Err(Problem::forbidden(
                "the form's CSRF token is missing or out of date: reload the page and try again",
            )
            .into());
        }
        Ok(form)
    }

    /// The form, once its CSRF token is the session's and the caller may
    /// change things.
    pub fn operator_form(&self, body: &Bytes) -> Result<FormFields, UiError> {
        let form = self.form(body)?;
        self.caller.require_operator()?;
        Ok(form)
    }
}

/// A page asked for without a session: off to the login form, and back
/// here after.
pub struct LoginFirst(Response);

impl IntoResponse for LoginFirst {
    fn into_response(self) -> Response {
        self.0
    }
}

impl FromRequestParts<Arc<UiState>> for Session {
    type Rejection = LoginFirst;

    async fn from_request_parts(
        parts: &mut Parts,
        ui: &Arc<UiState>,
    ) -> Result<Self, Self::Rejection> {
        if matches!(ui.auth.as_ref(), crate::api::Auth::Off) {
            return Err(LoginFirst(UiError::not_found(UI_OFF).into_response()));
        }
        // Back to the page after login; a form posted without a session
        // (it expired) goes back to the overview, not to its action.
        let back = match parts.method {
            axum::http::Method::GET => parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into()),
            _ => "/".into(),
        };
        let login =
            || LoginFirst(Redirect::to(&format!("/login?next={}", encode(&back))).into_response());
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(login());
        };
        let stored = match ui_sessions::find(&ui.api.ctx.pool, &digest(id)).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(login()),
            Err(e) => return Err(LoginFirst(UiError::from(e).into_response())),
        };
        let caller = ui
            .auth
            .session_caller(stored.token_digest.as_deref())
            .ok_or_else(login)?;
        Ok(Session {
            caller,
            csrf: stored.csrf,
        })
    }
}

const UI_OFF: &str = "the web UI is off: add an [api] section with tokens to ebb.toml (the UI logs in with the API's tokens)";

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_page(
    State(ui): State<Arc<UiState>>,
    Query(query): Query<LoginQuery>,
) -> Response {
    if matches!(ui.auth.as_ref(), crate::api::Auth::Off) {
        return UiError::not_found(UI_OFF).into_response();
    }
    login_form(&ui, StatusCode::OK, query.next.as_deref(), None)
}

fn login_form(
    ui: &UiState,
    status: StatusCode,
    next: Option<&str>,
    error: Option<&str>,
) -> Response {
    let guard = random_hex();
    let insecure = matches!(ui.auth.as_ref(), crate::api::Auth::Insecure);
    let mut response = (
        status,
        layout::login_page(&guard, &safe_next(next), error, insecure),
    )
        .into_response();
    set_cookie(&mut response, LOGIN_COOKIE, &guard, 600, false);
    response
}

pub async fn login(State(ui): State<Arc<UiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = FormFields::parse(&body);
    let next = form.get("next").map(str::to_owned);
    let guard_ok = match (cookie(&headers, LOGIN_COOKIE), form.get("guard")) {
        (Some(kept), Some(sent)) => bool::from(kept.as_bytes().ct_eq(sent.as_bytes())),
        _ => false,
    };
    if !guard_ok {
        return login_form(
            &ui,
            StatusCode::FORBIDDEN,
            next.as_deref(),
            Some("The login form expired or came from another site: log in again."),
        );
    }
    let token = form.get("token").unwrap_or_default();
    let (caller, token_digest) = match ui.auth.login(token) {
        Ok(found) => found,
        Err(problem) => {
            tracing::info!("a UI login was refused: {}", problem.detail);
            return login_form(
                &ui,
                StatusCode::UNAUTHORIZED,
                next.as_deref(),
                Some("That token is not one of the API tokens in ebb.toml."),
            );
        }
    };
    let id = random_hex();
    let csrf = random_hex();
    let expires_at = Utc::now() + chrono::Duration::hours(SESSION_HOURS);
    if let Err(e) = ui_sessions::open(
        &ui.api.ctx.pool,
        &digest(&id),
        &caller.name,
        token_digest.as_ref().map(|d| d.as_slice()),
        &csrf,
        expires_at,
    )
    .await
    {
        return UiError::from(e).into_response();
    }
    tracing::info!(token = %caller.name, "logged in to the web UI");
    let mut response = Redirect::to(&safe_next(next.as_deref())).into_response();
    // Behind a TLS-terminating ingress, the session cookie is marked
    // Secure: never sent over plain HTTP.
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    set_cookie(
        &mut response,
        SESSION_COOKIE,
        &id,
        SESSION_HOURS * 3600,
        secure,
    );
    set_cookie(&mut response, LOGIN_COOKIE, "", 0, false);
    response
}

pub async fn logout(
    State(ui): State<Arc<UiState>>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, UiError> {
    session.form(&body)?;
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        ui_sessions::close(&ui.api.ctx.pool, &digest(id)).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    set_cookie(&mut response, SESSION_COOKIE, "", 0, false);
    Ok(response)
}

/// Where to go after logging in: a path of this site only, never another
/// site (`//evil.example`, `/\evil.example`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.starts_with("/login") =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
}

fn set_cookie(response: &mut Response, name: &str, value: &str, max_age_secs: i64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(&bytes)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// `value` for a URL's query.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_login_only_paths_of_this_site() {
        assert_eq!(safe_next(Some("/runs/7?key=a")), "/runs/7?key=a");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "/login",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ebb_session=abc; b="),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
        assert_eq!(cookie(&headers, "c"), None);
    }
}
