//! A record as a Customer Match member: the fields Google matches on,
//! normalised by Google's rules and hashed with SHA-256 (email, phone,
//! names), or sent in clear where Google asks for it (country and postal
//! code). Google's rules: remove surrounding whitespace, lower case;
//! emails without any whitespace; phone numbers in E.164 (`+` and the
//! country code); an address counts only with all four of first name,
//! last name, country code and postal code.

use serde_json::{Map, Value};

use crate::destinations::util::audience::{Member, sha256_hex, text};

/// The fields a sync may map.
pub const FIELDS: &[&str] = &[
    "email",
    "phone",
    "first_name",
    "last_name",
    "country_code",
    "postal_code",
];

/// The fields of an address: all or none.
pub const ADDRESS: &[&str] = &["first_name", "last_name", "country_code", "postal_code"];

pub fn email(raw: &str) -> Result<String, String> {
    let email: String = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    if !crate::destinations::util::email::is_email(&email) {
        return Err(format!(
            "`email` ({raw}) is not an email address; Google could not match it"
        ));
    }
    Ok(email)
}

/// E.164: `+`, the country code and the number, digits only (`00` taken
/// as the international prefix).
pub fn phone(raw: &str) -> Result<String, String> {
    let compact: String = raw
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    let digits = match (compact.strip_prefix('+'), compact.strip_prefix("00")) {
        (Some(rest), _) => rest.to_owned(),
        (None, Some(rest)) => rest.to_owned(),
        (None, None) => {
            return Err(format!(
                "`phone` ({} digits) has no country code; Google takes E.164 numbers, e.g. +1 800 555 0101",
                compact.len()
            ));
        }
    };
    if digits.contains('+') || !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(
            "`phone` is not an E.164 number (a + and 8 to 15 digits, the country code first), e.g. +1 800 555 0101"
                .to_owned(),
        );
    }
    Ok(format!("+{digits}"))
}

pub fn name(raw: &str) -> String {
    raw.trim().to_lowercase()
}

pub fn country_code(raw: &str) -> Result<String, String> {
    let code = raw.trim().to_uppercase();
    if code.len() != 2 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(format!(
            "`country_code` ({raw}) is not a 2-letter ISO 3166-1 code (e.g. US, GB, DE)"
        ));
    }
    Ok(code)
}

/// The record as a member: `hashedEmail`, `hashedPhoneNumber`, and the
/// address (`hashedFirstName`, `hashedLastName`, `countryCode`,
/// `postalCode`) when it is whole.
pub fn member(fields: &Map<String, Value>) -> Result<Member, String> {
    if let Some(other) = fields.keys().find(|f| !FIELDS.contains(&f.as_str())) {
        return Err(format!(
            "`{other}` is not a field Customer Match takes; map identifiers only"
        ));
    }
    let mut member = Member::default();
    if let Some(raw) = text(fields.get("email")) {
        member
            .0
            .insert("hashedEmail".into(), sha256_hex(&email(&raw)?));
    }
    if let Some(raw) = text(fields.get("phone")) {
        member
            .0
            .insert("hashedPhoneNumber".into(), sha256_hex(&phone(&raw)?));
    }
    let address: Vec<Option<String>> = ADDRESS.iter().map(|f| text(fields.get(*f))).collect();
    let missing: Vec<&str> = ADDRESS
        .iter()
        .zip(&address)
        .filter(|(_, v)| v.is_none())
        .map(|(f, _)| *f)
        .collect();
    if let [Some(first), Some(last), Some(country), Some(postal)] = address.as_slice() {
        member
            .0
            .insert("hashedFirstName".into(), sha256_hex(&name(first)));
        member
            .0
            .insert("hashedLastName".into(), sha256_hex(&name(last)));
        member
            .0
            .insert("countryCode".into(), country_code(country)?);
        member.0.insert("postalCode".into(), postal.clone());
    }
    if member.0.is_empty() {
        let address_note = if missing.len() < ADDRESS.len() {
            format!(
                "; an address needs first_name, last_name, country_code and postal_code (missing: {})",
                missing.join(", ")
            )
        } else {
            String::new()
        };
        return Err(format!(
            "no identifier Google can match on: email and phone are empty{address_note}"
        ));
    }
    Ok(member)
}

/// The member as Customer Match `userIdentifiers`: one per identifier.
pub fn user_identifiers(member: &Member) -> Vec<Value> {
    let mut identifiers = Vec::new();
    for key in ["hashedEmail", "hashedPhoneNumber"] {
        if let Some(value) = member.get(key) {
            identifiers.push(serde_json::json!({ key: value }));
        }
    }
    if let (Some(first), Some(last), Some(country), Some(postal)) = (
        member.get("hashedFirstName"),
        member.get("hashedLastName"),
        member.get("countryCode"),
        member.get("postalCode"),
    ) {
        identifiers.push(serde_json::json!({ "addressInfo": {
            "hashedFirstName": first,
            "hashedLastName": last,
            "countryCode": country,
            "postalCode": postal,
        }}));
    }
    identifiers
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalisation_follows_googles_published_example() {
        // Google Ads API example add_customer_match_user_list: the raw
        // records and what Google's normalize_and_hash makes of them.
        assert_eq!(email("dana@example.com").unwrap(), "dana@example.com");
        assert_eq!(email("alex.2@example.com").unwrap(), "alex.2@example.com");
        assert_eq!(phone("+1 800 5550101").unwrap(), "+18005550101");
        assert_eq!(phone("+1 800 5550102").unwrap(), "+18005550102");
        assert_eq!(name("Alex"), "alex");
        assert_eq!(name("Quinn"), "quinn");
        // Google's formatting guidelines: trim, lower case, E.164.
        assert_eq!(email(" Dana@Example.COM ").unwrap(), "dana@example.com");
        assert_eq!(phone("(+44) 20 7946-0958").unwrap(), "+442079460958");
        assert_eq!(phone("0044 20 7946 0958").unwrap(), "+442079460958");
        assert!(
            phone("800 555 0101")
                .unwrap_err()
                .contains("no country code")
        );
        assert!(email("nope").is_err());
        assert!(country_code("United States").is_err());
    }

    #[test]
    fn a_member_carries_hashes_and_a_whole_address_only() {
        let fields = json!({"email": "Alex.2@example.com", "phone": "+1 800 5550102",
            "first_name": "Alex", "last_name": "Quinn", "country_code": "us", "postal_code": "94045"});
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        let member = member(&fields).unwrap();
        assert_eq!(
            member.get("hashedEmail"),
            Some(sha256_hex("alex.2@example.com").as_str())
        );
        assert_eq!(
            member.get("hashedPhoneNumber"),
            Some(sha256_hex("+18005550102").as_str())
        );
        assert_eq!(
            member.get("hashedFirstName"),
            Some(sha256_hex("alex").as_str())
        );
        assert_eq!(member.get("countryCode"), Some("US"));
        assert_eq!(member.get("postalCode"), Some("94045"));
        let identifiers = serde_json::to_string(&user_identifiers(&member)).unwrap();
        for raw in ["alex", "Alex", "Quinn", "quinn", "@", "5550102"] {
            assert!(!identifiers.contains(raw), "{raw} in {identifiers}");
        }

        let partial = json!({"first_name": "Alex", "country_code": "US"});
        let Value::Object(partial) = partial else {
            unreachable!()
        };
        assert_eq!(
            super::member(&partial).unwrap_err(),
            "no identifier Google can match on: email and phone are empty; an address needs first_name, last_name, country_code and postal_code (missing: last_name, postal_code)"
        );
    }
}
