//! Meta's customer-list keys and how each value is normalised before it is
//! hashed, following Meta's "Hashing and normalizing data" rules for Custom
//! Audiences and the normalizers of Meta's own Business SDK: trim, lower
//! case, and per key:
//!
//! | key | normalised as |
//! |---|---|
//! | `EMAIL` | surrounding whitespace and dots removed |
//! | `PHONE` | digits only, leading zeros removed; must include the country code |
//! | `FN`, `LN`, `CT` | letters only (accented letters kept) |
//! | `FI` | the first letter |
//! | `ST` | letters only; a US state's name becomes its 2-letter code |
//! | `ZIP` | no spaces; the part before a dash (US: 5 digits) |
//! | `COUNTRY` | a 2-letter ISO 3166-1 code |
//! | `DOBY`, `DOBM`, `DOBD` | `YYYY`, `MM`, `DD` |
//! | `GEN` | `m` or `f` |
//! | `MADID`, `EXTERN_ID` | lower case / as given: Meta takes them unhashed |

use chrono::Datelike;
use serde_json::Value;

use crate::destinations::util::audience::{sha256_hex, text};

/// The keys, as a sync's mapping names them (lower case) and as Meta's
/// `schema` does (upper case), in the order a request lists them.
pub const KEYS: &[&str] = &[
    "EMAIL",
    "PHONE",
    "FN",
    "LN",
    "FI",
    "CT",
    "ST",
    "ZIP",
    "COUNTRY",
    "DOBY",
    "DOBM",
    "DOBD",
    "GEN",
    "MADID",
    "EXTERN_ID",
];

/// The keys Meta takes in clear (device ids and the advertiser's own id).
pub const UNHASHED: &[&str] = &["MADID", "EXTERN_ID"];

/// A mapped field's key, if it is one of Meta's (`email` → `EMAIL`).
pub fn key_of(field: &str) -> Option<&'static str> {
    KEYS.iter().find(|k| k.eq_ignore_ascii_case(field)).copied()
}

/// `value` under `key`, normalised (not hashed); `Ok(None)` when empty.
pub fn normalize(key: &str, value: &Value) -> Result<Option<String>, String> {
    let Some(raw) = text(Some(value)) else {
        return Ok(None);
    };
    let field = key.to_lowercase();
    let letters = |s: &str| -> String {
        s.to_lowercase()
            .chars()
            .filter(|c| c.is_alphabetic())
            .collect()
    };
    let normalized = match key {
        "EMAIL" => {
            let email = raw
                .to_lowercase()
                .trim_matches(|c: char| c.is_whitespace() || c == '.' || c == '\0')
                .to_owned();
            if !crate::destinations::util::email::is_email(&email) {
                return Err(format!(
                    "`{field}` ({raw}) is not an email address; Meta could not match it"
                ));
            }
            email
        }
        "PHONE" => {
            let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
            let digits = digits.trim_start_matches('0').to_owned();
            if !(8..=15).contains(&digits.len()) {
                return Err(format!(
                    "`{field}` ({} digits) is not a phone number with its country code; Meta needs the country code, e.g. +1 650 555 0101",
                    digits.len()
                ));
            }
            digits
        }
        "FN" | "LN" | "CT" => letters(&raw),
        "FI" => letters(&raw).chars().take(1).collect(),
        "ST" => {
            let state = letters(&raw);
            us_state_code(&state).map_or(state, str::to_owned)
        }
        "ZIP" => {
            let zip: String = raw
                .to_lowercase()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            zip.split('-').next().unwrap_or_default().to_owned()
        }
        "COUNTRY" => {
            let country = letters(&raw);
            if country.len() != 2 || !country.is_ascii() {
                return Err(format!(
                    "`{field}` ({raw}) is not a 2-letter ISO 3166-1 country code (e.g. us, gb, de)"
                ));
            }
            country
        }
        "DOBY" => {
            let year: i32 = raw.parse().unwrap_or(0);
            let now = chrono::Utc::now().year();
            if !(1900..=now).contains(&year) {
                return Err(format!(
                    "`{field}` ({raw}) is not a birth year between 1900 and {now}"
                ));
            }
            year.to_string()
        }
        "DOBM" | "DOBD" => {
            let max = if key == "DOBM" { 12 } else { 31 };
            let n: u32 = raw.parse().unwrap_or(0);
            if !(1..=max).contains(&n) {
                return Err(format!("`{field}` ({raw}) is not between 1 and {max}"));
            }
            format!("{n:02}")
        }
        "GEN" => match letters(&raw).chars().next() {
            Some(g @ ('m' | 'f')) => g.to_string(),
            _ => {
                return Err(format!(
                    "`{field}` ({raw}) is not a gender Meta matches on: use m or f"
                ));
            }
        },
        "MADID" => raw.to_lowercase(),
        _ => raw,
    };
    Ok((!normalized.is_empty()).then_some(normalized))
}

/// `value` under `key` as sent: normalised, then hashed unless Meta takes
/// the key in clear.
pub fn encode(key: &str, value: &Value) -> Result<Option<String>, String> {
    Ok(normalize(key, value)?.map(|normalized| {
        if UNHASHED.contains(&key) {
            normalized
        } else {
            sha256_hex(&normalized)
        }
    }))
}

/// The 2-letter code of a US state written out (`california` → `ca`).
fn us_state_code(name: &str) -> Option<&'static str> {
    const STATES: &[(&str, &str)] = &[
        ("alabama", "al"),
        ("alaska", "ak"),
        ("arizona", "az"),
        ("arkansas", "ar"),
        ("california", "ca"),
        ("colorado", "co"),
        ("connecticut", "ct"),
        ("delaware", "de"),
        ("districtofcolumbia", "dc"),
        ("florida", "fl"),
        ("georgia", "ga"),
        ("hawaii", "hi"),
        ("idaho", "id"),
        ("illinois", "il"),
        ("indiana", "in"),
        ("iowa", "ia"),
        ("kansas", "ks"),
        ("kentucky", "ky"),
        ("louisiana", "la"),
        ("maine", "me"),
        ("maryland", "md"),
        ("massachusetts", "ma"),
        ("michigan", "mi"),
        ("minnesota", "mn"),
        ("mississippi", "ms"),
        ("missouri", "mo"),
        ("montana", "mt"),
        ("nebraska", "ne"),
        ("nevada", "nv"),
        ("newhampshire", "nh"),
        ("newjersey", "nj"),
        ("newmexico", "nm"),
        ("newyork", "ny"),
        ("northcarolina", "nc"),
        ("northdakota", "nd"),
        ("ohio", "oh"),
        ("oklahoma", "ok"),
        ("oregon", "or"),
        ("pennsylvania", "pa"),
        ("rhodeisland", "ri"),
        ("southcarolina", "sc"),
        ("southdakota", "sd"),
        ("tennessee", "tn"),
        ("texas", "tx"),
        ("utah", "ut"),
        ("vermont", "vt"),
        ("virginia", "va"),
        ("washington", "wa"),
        ("westvirginia", "wv"),
        ("wisconsin", "wi"),
        ("wyoming", "wy"),
    ];
    STATES
        .iter()
        .find(|(state, _)| *state == name)
        .map(|(_, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n(key: &str, raw: &str) -> String {
        normalize(key, &json!(raw))
            .unwrap_or_else(|e| panic!("{key} {raw}: {e}"))
            .unwrap_or_default()
    }

    #[test]
    fn normalisation_follows_metas_published_examples() {
        // Meta Business SDK (EmailNormalizerTest): whitespace, control
        // characters and a trailing dot removed.
        assert_eq!(n("EMAIL", "foo@fb.com\t\r\n\0."), "foo@fb.com");
        // Meta's customer-list formatting guide: phone numbers with the
        // country code, with or without punctuation.
        assert_eq!(n("PHONE", "1-234-567-8910"), "12345678910");
        assert_eq!(n("PHONE", "+44 844 412 4653"), "448444124653");
        // "Remove symbols, letters, and any leading zeros."
        assert_eq!(n("PHONE", "+1 (616) 954-7888"), "16169547888");
        assert_eq!(n("PHONE", "0044 844 412 4653"), "448444124653");
        // "Use a-z only. Lowercase only, no punctuation. Special characters in UTF-8."
        assert_eq!(n("FN", " Mary "), "mary");
        assert_eq!(n("LN", "O'Neil-Smith"), "oneilsmith");
        assert_eq!(n("FN", "Valéry"), "valéry");
        assert_eq!(n("FI", "Mary"), "m");
        // "lowercase, no punctuation, no special characters, no white space"
        assert_eq!(n("CT", "Menlo Park"), "menlopark");
        // "2-character ANSI abbreviation code, lowercase"
        assert_eq!(n("ST", "CA"), "ca");
        assert_eq!(n("ST", "California"), "ca");
        // "For the US, use only the first 5 digits"; "no white space"
        assert_eq!(n("ZIP", "94025-1234"), "94025");
        assert_eq!(n("ZIP", "SW1A 1AA"), "sw1a1aa");
        // "2-letter country codes in ISO 3166-1 alpha-2", lower case
        assert_eq!(n("COUNTRY", "US"), "us");
        assert_eq!(n("DOBM", "2"), "02");
        assert_eq!(n("DOBD", "07"), "07");
        assert_eq!(n("DOBY", "1986"), "1986");
        assert_eq!(n("GEN", "Female"), "f");
        assert_eq!(
            n("MADID", "AECE52E7-03EE-455A-B3C4-E57283966239"),
            "aece52e7-03ee-455a-b3c4-e57283966239"
        );
    }

    #[test]
    fn values_meta_could_not_match_are_refused_before_sending() {
        let refused = |key: &str, raw: &str| normalize(key, &json!(raw)).unwrap_err();
        assert!(refused("EMAIL", "nope").contains("not an email address"));
        assert!(refused("PHONE", "555-0101").contains("country code"));
        assert!(refused("COUNTRY", "United States").contains("2-letter"));
        assert!(refused("GEN", "x").contains("m or f"));
        assert!(refused("DOBY", "1850").contains("between 1900"));
        assert!(refused("DOBM", "13").contains("between 1 and 12"));
        assert_eq!(normalize("EMAIL", &json!(null)), Ok(None));
        assert_eq!(normalize("FN", &json!("  ")), Ok(None));
    }

    #[test]
    fn identifiers_are_hashed_except_the_ones_meta_takes_in_clear() {
        assert_eq!(
            encode("EMAIL", &json!(" JaneDoe@Gmail.com ")).unwrap(),
            // TikTok's and Meta's guides agree on "janedoe@gmail.com".
            Some("d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69".into())
        );
        assert_eq!(
            encode("EXTERN_ID", &json!("crm-42")).unwrap(),
            Some("crm-42".into())
        );
    }
}
