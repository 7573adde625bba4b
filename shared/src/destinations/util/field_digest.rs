//! A digest of a record's fields, kept in the ledger for the version
//! delivered, so the next update by the destination's id can send only
//! the fields whose values changed: an 8-byte fingerprint of the field
//! names, then 8 bytes of BLAKE3 per field value, in name order. A digest
//! of another set of names (the mapping changed) tells nothing: every field
//! is sent.

use serde_json::{Map, Value};

const PART: usize = 8;

fn hash8(bytes: &[u8]) -> [u8; PART] {
    let mut out = [0; PART];
    out.copy_from_slice(&blake3::hash(bytes).as_bytes()[..PART]);
    out
}

fn sorted_names(fields: &Map<String, Value>) -> Vec<&String> {
    let mut names: Vec<&String> = fields.keys().collect();
    names.sort();
    names
}

fn names_fingerprint(names: &[&String]) -> [u8; PART] {
    let mut joined = Vec::new();
    for name in names {
        joined.extend_from_slice(name.as_bytes());
        joined.push(0);
    }
    hash8(&joined)
}

/// The digest of `fields`.
pub fn digest(fields: &Map<String, Value>) -> Vec<u8> {
    let names = sorted_names(fields);
    let mut out = Vec::with_capacity(PART * (names.len() + 1));
    out.extend_from_slice(&names_fingerprint(&names));
    for name in names {
        out.extend_from_slice(&hash8(fields[name].to_string().as_bytes()));
    }
    out
}

/// The fields of `fields` whose values differ from those `delivered`
/// digested; `None` when the digest is of another set of fields (or not a
/// digest), so what changed is not known.
pub fn changed(delivered: &[u8], fields: &Map<String, Value>) -> Option<Vec<String>> {
    let names = sorted_names(fields);
    if delivered.len() != PART * (names.len() + 1) || delivered[..PART] != names_fingerprint(&names)
    {
        return None;
    }
    Some(
        names
            .into_iter()
            .zip(delivered[PART..].chunks(PART))
            .filter(|(name, before)| *before != hash8(fields[*name].to_string().as_bytes()))
            .map(|(name, _)| name.clone())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn only_fields_whose_values_changed_are_named() {
        let before = map(json!({"email": "a@x.io", "plan": "pro", "ltv": 1.5}));
        let digest = digest(&before);
        assert_eq!(digest.len(), 8 * 4);
        assert_eq!(changed(&digest, &before), Some(vec![]));
        let after = map(json!({"email": "a@x.io", "plan": "free", "ltv": 1.5}));
        assert_eq!(changed(&digest, &after), Some(vec!["plan".to_owned()]));
        let null = map(json!({"email": "a@x.io", "plan": null, "ltv": 1.5}));
        assert_eq!(changed(&digest, &null), Some(vec!["plan".to_owned()]));
    }

    #[test]
    fn another_set_of_fields_tells_nothing() {
        let digest = digest(&map(json!({"email": "a@x.io", "plan": "pro"})));
        assert_eq!(
            changed(&digest, &map(json!({"email": "a@x.io", "tier": "pro"}))),
            None
        );
        assert_eq!(changed(&digest, &map(json!({"email": "a@x.io"}))), None);
        assert_eq!(changed(b"junk", &map(json!({"email": "a@x.io"}))), None);
    }
}
