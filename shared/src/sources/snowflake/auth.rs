//! Signing in to Snowflake: a key-pair JWT (RS256, `iss` naming the public
//! key's SHA-256 fingerprint) or an OAuth access token, as the SQL API's
//! `Authorization` and `X-Snowflake-Authorization-Token-Type` headers.

use super::config::SnowflakeAuth;
use crate::secret::Secret;
use crate::sources::jwt::RsaSigner;

/// A JWT lives at most an hour; Ebb asks for a little less and makes a new
/// one per request.
const JWT_LIFETIME_SECS: i64 = 3540;

pub(super) enum Credentials {
    KeyPair {
        /// `ACCOUNT.USER`, upper case, without any region part.
        qualified_user: String,
        /// `SHA256:<base64 of the public key's DER>`.
        fingerprint: String,
        signer: RsaSigner,
    },
    OAuth(Secret),
}

impl Credentials {
    pub(super) fn new(account: &str, user: &str, auth: &SnowflakeAuth) -> Result<Self, String> {
        match auth {
            SnowflakeAuth::OAuth { token } => Ok(Credentials::OAuth(token.clone())),
            SnowflakeAuth::KeyPair { private_key } => {
                let signer = RsaSigner::from_pem(private_key.expose())?;
                // The account part before the first dot: a locator's region
                // is not part of the JWT's names.
                let account = account.split('.').next().unwrap_or(account);
                Ok(Credentials::KeyPair {
                    qualified_user: format!(
                        "{}.{}",
                        account.to_ascii_uppercase(),
                        user.to_ascii_uppercase()
                    ),
                    fingerprint: signer.public_key_fingerprint()?,
                    signer,
                })
            }
        }
    }

    /// The bearer token and its type, for a request made at `now`.
    pub(super) fn token(&self, now: i64) -> Result<(String, &'static str), String> {
        match self {
            Credentials::OAuth(token) => Ok((token.expose().to_owned(), "OAUTH")),
            Credentials::KeyPair {
                qualified_user,
                fingerprint,
                signer,
            } => {
                let jwt = signer.sign(
                    &serde_json::json!({ "alg": "RS256", "typ": "JWT" }),
                    &serde_json::json!({
                        "iss": format!("{qualified_user}.{fingerprint}"),
                        "sub": qualified_user,
                        "iat": now,
                        "exp": now + JWT_LIFETIME_SECS,
                    }),
                )?;
                Ok((jwt, "KEYPAIR_JWT"))
            }
        }
    }
}
