//! Who is calling: `Authorization: Bearer <token>` against `[api].tokens`.
//! No token or an unknown one is 401, a viewer calling an operator route
//! 403. Tokens are kept as SHA-256 digests and compared in constant time;
//! neither tokens nor digests are ever logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ebb_shared::config::{ApiConfig, Role};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use crate::error::PlannerError;

/// How `ebb serve` authenticates API calls.
pub enum Auth {
    /// No `[api]` in the config: the API is off.
    Off,
    /// `[api].tokens`.
    Tokens {
        tokens: Vec<KnownToken>,
        protect_metrics: bool,
    },
    /// `--insecure-no-auth`: every call is an operator's.
    Insecure,
}

pub struct KnownToken {
    name: String,
    digest: [u8; 32],
    role: Role,
}

/// The caller of a request, as the auth layer found it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// How runs record this caller as their trigger: `api:<token name>`.
    pub fn label(&self) -> String {
        format!("api:{}", self.name)
    }

    pub fn require_operator(&self) -> Result<(), Problem> {
        match self.role {
            Role::Operator => Ok(()),
            Role::Viewer => Err(Problem::forbidden(format!(
                "token `{}` is a viewer's; this operation needs an operator token",
                self.name
            ))),
        }
    }
}

impl Auth {
    /// From `[api]`. An `[api]` without tokens is refused unless
    /// `insecure_no_auth`, which is logged loudly.
    pub fn from_config(
        api: Option<&ApiConfig>,
        insecure_no_auth: bool,
    ) -> Result<Auth, PlannerError> {
        if insecure_no_auth {
            tracing::warn!(
                "--insecure-no-auth: the API at /api/v1 accepts every request as an operator's, without a token; never do this outside a test"
            );
            return Ok(Auth::Insecure);
        }
        match api {
            None => Ok(Auth::Off),
            Some(api) if api.tokens.is_empty() => Err(PlannerError::Usage(
                "[api] has no tokens, so nobody could call the API: add `tokens = [{ name = \"…\", token = \"${VAR}\", role = \"operator\" }]`, or pass --insecure-no-auth for a local test"
                    .into(),
            )),
            Some(api) => Ok(Auth::Tokens {
                tokens: api
                    .tokens
                    .iter()
                    .map(|t| KnownToken {
                        name: t.name.clone(),
                        digest: digest(t.token.expose().as_bytes()),
                        role: t.role,
                    })
                    .collect(),
                protect_metrics: api.protect_metrics,
            }),
        }
    }

    pub fn protects_metrics(&self) -> bool {
        matches!(
            self,
            Auth::Tokens {
                protect_metrics: true,
                ..
            }
        )
    }

    /// The caller a request's headers name.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        match self {
            Auth::Off => {
                return Err(Problem::not_found(
                    "the API is off: add an [api] section with tokens to ebb.toml",
                ));
            }
            Auth::Insecure => {
                return Ok(Caller {
                    name: "anonymous".into(),
                    role: Role::Operator,
                });
            }
            Auth::Tokens { .. } => {}
        }
        let Some(presented) = bearer(headers) else {
            return Err(Problem::unauthorized(
                "send `Authorization: Bearer <token>` with a token from [api].tokens",
            ));
        };
        self.by_digest(&digest(presented.as_bytes()))
            .ok_or_else(|| Problem::unauthorized("the token is not one of [api].tokens"))
    }

    /// Who logs in to the web UI with `token`, and the token's digest to
    /// keep with the session (none when serve runs without auth, where any
    /// token, or none, logs in as `anonymous`).
    pub fn login(&self, token: &str) -> Result<(Caller, Option<[u8; 32]>), Problem> {
        match self {
            Auth::Off => Err(Problem::not_found(
                "the web UI is off: add an [api] section with tokens to ebb.toml",
            )),
            Auth::Insecure => Ok((
                Caller {
                    name: "anonymous".into(),
                    role: Role::Operator,
                },
                None,
            )),
            Auth::Tokens { .. } => {
                let presented = digest(token.trim().as_bytes());
                let caller = self.by_digest(&presented).ok_or_else(|| {
                    Problem::unauthorized("that token is not one of [api].tokens in ebb.toml")
                })?;
                Ok((caller, Some(presented)))
            }
        }
    }

    /// The caller of a UI session opened with a token of this digest:
    /// `None` once the token is no longer in the config.
    pub fn session_caller(&self, token_digest: Option<&[u8]>) -> Option<Caller> {
        match (self, token_digest) {
            (Auth::Insecure, None) => Some(Caller {
                name: "anonymous".into(),
                role: Role::Operator,
            }),
            (Auth::Tokens { .. }, Some(presented)) => self.by_digest(presented),
            _ => None,
        }
    }

    fn by_digest(&self, presented: &[u8]) -> Option<Caller> {
        let Auth::Tokens { tokens, .. } = self else {
            return None;
        };
        // Every token is compared, so the time taken says nothing about
        // which one matched.
        let mut found: Option<&KnownToken> = None;
        for token in tokens {
            if bool::from(token.digest.as_slice().ct_eq(presented)) {
                found = Some(token);
            }
        }
        found.map(|t| Caller {
            name: t.name.clone(),
            role: t.role,
        })
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The auth layer of `/api/v1`: puts the [`Caller`] into the request.
pub async fn authenticate(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth.caller(request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(problem) => problem.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use ebb_shared::config::ApiToken;
    use ebb_shared::secret::Secret;

    fn auth() -> Auth {
        let api = ApiConfig {
            tokens: vec![
                ApiToken {
                    name: "ops".into(),
                    token: Secret::new("operator-token-0123456789"),
                    role: Role::Operator,
                },
                ApiToken {
                    name: "grafana".into(),
                    token: Secret::new("viewer-token-0123456789"),
                    role: Role::Viewer,
                },
            ],
            protect_metrics: false,
        };
        Auth::from_config(Some(&api), false).unwrap()
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_tokens_name_their_caller_and_role() {
        let auth = auth();
        let ops = auth
            .caller(&headers("Bearer operator-token-0123456789"))
            .unwrap();
        assert_eq!((ops.name.as_str(), ops.role), ("ops", Role::Operator));
        let viewer = auth
            .caller(&headers("bearer viewer-token-0123456789"))
            .unwrap();
        assert_eq!(viewer.role, Role::Viewer);
        assert!(viewer.require_operator().is_err());
        for bad in [
            "Bearer operator-token-012345678",
            "Basic b3BzOg==",
            "Bearer ",
            "operator-token-0123456789",
        ] {
            let problem = auth.caller(&headers(bad)).unwrap_err();
            assert_eq!(problem.status, 401, "{bad}");
        }
        assert_eq!(auth.caller(&HeaderMap::new()).unwrap_err().status, 401);
    }

    #[test]
    fn ui_sessions_last_as_long_as_their_token() {
        let auth = auth();
        let (viewer, digest) = auth.login(" viewer-token-0123456789 ").unwrap();
        assert_eq!(
            (viewer.name.as_str(), viewer.role),
            ("grafana", Role::Viewer)
        );
        let digest = digest.expect("a token's digest is kept with the session");
        assert_eq!(
            auth.session_caller(Some(&digest)).map(|c| c.name),
            Some("grafana".into())
        );
        assert_eq!(auth.login("nope").unwrap_err().status, 401);
        assert!(
            auth.session_caller(None).is_none(),
            "no anonymous sessions when tokens are set"
        );
        // The token rotated in the config: the old session's digest is unknown.
        let rotated = Auth::from_config(
            Some(&ApiConfig {
                tokens: vec![ApiToken {
                    name: "grafana".into(),
                    token: Secret::new("viewer-token-rotated"),
                    role: Role::Viewer,
                }],
                protect_metrics: false,
            }),
            false,
        )
        .unwrap();
        assert!(rotated.session_caller(Some(&digest)).is_none());
        let insecure = Auth::from_config(None, true).unwrap();
        assert_eq!(
            insecure.session_caller(None).map(|c| c.role),
            Some(Role::Operator)
        );
        assert!(insecure.session_caller(Some(&digest)).is_none());
        assert!(Auth::Off.login("viewer-token-0123456789").is_err());
    }

    #[test]
    fn an_api_section_without_tokens_is_refused_unless_insecure() {
        let empty = ApiConfig {
            tokens: Vec::new(),
            protect_metrics: false,
        };
        assert!(Auth::from_config(Some(&empty), false).is_err());
        assert!(matches!(
            Auth::from_config(Some(&empty), true),
            Ok(Auth::Insecure)
        ));
        assert!(matches!(Auth::from_config(None, false), Ok(Auth::Off)));
    }
}
