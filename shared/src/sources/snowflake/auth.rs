//! Signing in to Snowflake: a key-pair JWT (RS256, `iss` naming the public
//! key's SHA-256 fingerprint) or an OAuth access token, as the SQL API's
//! `Authorization` and `X-Snowflake-Authorization-Token-Type` headers.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::config::SnowflakeAuth;
use crate::secret::Secret;

/// A JWT lives at most an hour; Ebb asks for this much and makes a new one
/// per request.
const JWT_LIFETIME_SECS: i64 = 3540;

pub(super) enum Credentials {
    KeyPair {
        /// `ACCOUNT.USER`, upper case, without any region part.
        qualified_user: String,
        /// `SHA256:<base64 of the public key's DER>`.
        fingerprint: String,
        key: KeyPair,
    },
    OAuth(Secret),
}

impl Credentials {
    pub(super) fn new(account: &str, user: &str, auth: &SnowflakeAuth) -> Result<Self, String> {
        match auth {
            SnowflakeAuth::OAuth { token } => Ok(Credentials::OAuth(token.clone())),
            SnowflakeAuth::KeyPair { private_key } => {
                let der = pem_to_der(private_key.expose())?;
                let key = KeyPair::from_pkcs8(&der).map_err(|e| {
                    format!("the private key is not an unencrypted PKCS#8 RSA key ({e}); convert it with `openssl pkcs8 -topk8 -nocrypt`")
                })?;
                let public = key
                    .public_key()
                    .as_der()
                    .map_err(|_| "cannot encode the public key".to_owned())?;
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public.as_ref());
                // The account part before the first dot: a locator's region
                // is not part of the JWT's names.
                let account = account.split('.').next().unwrap_or(account);
                Ok(Credentials::KeyPair {
                    qualified_user: format!(
                        "{}.{}",
                        account.to_ascii_uppercase(),
                        user.to_ascii_uppercase()
                    ),
                    fingerprint: format!("SHA256:{}", STANDARD.encode(digest.as_ref())),
                    key,
                })
            }
        }
    }

    /// The bearer token and its type, for a request made now.
    pub(super) fn token(&self, now: i64) -> Result<(String, &'static str), String> {
        match self {
            Credentials::OAuth(token) => Ok((token.expose().to_owned(), "OAUTH")),
            Credentials::KeyPair {
                qualified_user,
                fingerprint,
                key,
            } => {
                let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
                let claims = serde_json::json!({
                    "iss": format!("{qualified_user}.{fingerprint}"),
                    "sub": qualified_user,
                    "iat": now,
                    "exp": now + JWT_LIFETIME_SECS,
                });
                let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
                let signing_input = format!("{header}.{claims}");
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    signing_input.as_bytes(),
                    &mut signature,
                )
                .map_err(|_| "cannot sign the JWT".to_owned())?;
                Ok((
                    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)),
                    "KEYPAIR_JWT",
                ))
            }
        }
    }
}

/// The DER inside a PEM `PRIVATE KEY` block.
fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    if pem.contains("ENCRYPTED PRIVATE KEY") {
        return Err("the private key is encrypted; Ebb reads unencrypted PKCS#8 keys (`openssl pkcs8 -topk8 -nocrypt`), kept in a secret".to_owned());
    }
    if pem.contains("BEGIN RSA PRIVATE KEY") {
        return Err(
            "the private key is in PKCS#1 form; convert it with `openssl pkcs8 -topk8 -nocrypt`"
                .to_owned(),
        );
    }
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| format!("the private key is not PEM ({e})"))
}
