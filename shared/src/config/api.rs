//! `[api]`: who may call `ebb serve`'s API, with which role.
//!
//! ```toml
//! [api]
//! tokens = [
//!   { name = "ops", token = "${EBB_OPS_TOKEN}", role = "operator" },
//!   { name = "grafana", token = "${EBB_VIEW_TOKEN}", role = "viewer" },
//! ]
//! protect_metrics = true
//! ```

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::table::SourceText;
use crate::secret::Secret;

/// A token shorter than this is refused: it could be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub tokens: Vec<ApiToken>,
    /// `/metrics` needs a token too (any role).
    pub protect_metrics: bool,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Who calls: recorded as a run's trigger (`api:<name>`) and in logs;
    /// the token itself never is.
    pub name: String,
    pub token: Secret,
    pub role: Role,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read syncs, runs, the DLQ and destinations.
    Viewer,
    /// Also trigger, cancel, pause and resume runs, and replay or close DLQ
    /// entries.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    #[serde(default)]
    tokens: Vec<Spanned<RawToken>>,
    #[serde(default)]
    protect_metrics: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    token: String,
    role: Role,
}

pub(crate) fn resolve_api(
    src: &SourceText<'_>,
    raw: Spanned<RawApi>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ApiConfig, ConfigError> {
    let raw = raw.into_inner();
    let mut tokens: Vec<ApiToken> = Vec::with_capacity(raw.tokens.len());
    for (index, spanned) in raw.tokens.into_iter().enumerate() {
        let at = spanned.span().start;
        let token = spanned.into_inner();
        let key = format!("api.tokens[{index}]");
        let name = token.name.trim().to_owned();
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !name_ok {
            return Err(src.invalid(
                Some(at),
                format!("{key}.name"),
                "must be a name of letters, digits, `_`, `-` or `.` (it is recorded as who triggered a run)",
            ));
        }
        if tokens.iter().any(|t| t.name == name) {
            return Err(src.invalid(
                Some(at),
                format!("{key}.name"),
                format!("`{name}` names two tokens; each token needs its own name"),
            ));
        }
        let secret = src.secret_at(&token.token, &format!("{key}.token"), at, lookup)?;
        if secret.expose().chars().count() < MIN_TOKEN_CHARS {
            return Err(src.invalid(
                Some(at),
                format!("{key}.token"),
                format!(
                    "is shorter than {MIN_TOKEN_CHARS} characters; use a long random value, e.g. `openssl rand -hex 32`"
                ),
            ));
        }
        if tokens.iter().any(|t| t.token == secret) {
            return Err(src.invalid(
                Some(at),
                format!("{key}.token"),
                "is the same as another token's; give each caller its own",
            ));
        }
        tokens.push(ApiToken {
            name,
            token: secret,
            role: token.role,
        });
    }
    Ok(ApiConfig {
        tokens,
        protect_metrics: raw.protect_metrics,
    })
}
