//! RSA key pairs for the emulators of warehouses that sign in with keys
//! (Snowflake's key-pair auth, Google service accounts).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A key pair as a warehouse user makes one: the private key in unencrypted
/// PKCS#8 PEM (for Ebb's config), the public key registered with the user.
pub struct TestKey {
    pub private_pem: String,
    /// PKCS#1 DER, to verify signatures.
    pub public_der: Vec<u8>,
    /// `SHA256:<base64 of the public key's SubjectPublicKeyInfo DER>`.
    pub fingerprint: String,
}

impl TestKey {
    pub fn generate() -> TestKey {
        let key = KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key).expect("PKCS#8");
        let body = STANDARD.encode(pkcs8.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).expect("base64"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let spki = key.public_key().as_der().expect("SPKI");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
        TestKey {
            private_pem: pem,
            public_der: key.public_key().as_ref().to_vec(),
            fingerprint: format!("SHA256:{}", STANDARD.encode(digest.as_ref())),
        }
    }
}
