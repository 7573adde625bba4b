//! RS256 JSON Web Tokens signed with an RSA private key from PEM, as the
//! warehouses' key-based sign-ins take them (Snowflake's key-pair auth,
//! Google's self-signed service-account JWTs).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub struct RsaSigner {
    key: KeyPair,
}

impl RsaSigner {
    /// From an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`); the
    /// error says how to convert other forms.
    pub fn from_pem(pem: &str) -> Result<RsaSigner, String> {
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
        let der = STANDARD
            .decode(body)
            .map_err(|e| format!("the private key is not PEM ({e})"))?;
        let key = KeyPair::from_pkcs8(&der).map_err(|e| {
            format!("the private key is not an unencrypted PKCS#8 RSA key ({e}); convert it with `openssl pkcs8 -topk8 -nocrypt`")
        })?;
        Ok(RsaSigner { key })
    }

    /// `SHA256:` and the base64 SHA-256 of the public key's DER
    /// (SubjectPublicKeyInfo), as Snowflake shows `RSA_PUBLIC_KEY_FP`.
    pub fn public_key_fingerprint(&self) -> Result<String, String> {
        let public = self
            .key
            .public_key()
            .as_der()
            .map_err(|_| "cannot encode the public key".to_owned())?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public.as_ref());
        Ok(format!("SHA256:{}", STANDARD.encode(digest.as_ref())))
    }

    /// `header.claims.signature`, base64url without padding.
    pub fn sign(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> Result<String, String> {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "cannot sign the JWT".to_owned())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}
