//! What the ad-audience destinations (`meta_custom_audience`,
//! `google_customer_match`) share: identifiers hashed with SHA-256 after
//! each vendor's own normalisation, so that no raw identifier leaves Ebb,
//! and membership that follows the model.
//!
//! A member is the set of identifiers a record was sent with, hashed. It is
//! kept in the ledger as the record's destination id: a record removed
//! from the model (mirror mode) is removed by the identifiers it was added
//! with, and a record whose identifiers changed is removed under the old
//! ones and added under the new, without Ebb keeping any raw value.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::FieldMapping;
use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::api::Failure;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::vendor::{PrepareRules, Prepared, prepare};

/// The refusal of a removal whose member is not known.
const UNKNOWN_MEMBER: &str = "the identifiers this record was added with are not known (it was delivered before \
                              Ebb kept them), so it cannot be removed from the audience; remove it by hand";

/// Checks, at config time, that a mapping names only identifiers the
/// vendor matches on (`known`); `names` lists them and `holder` says what
/// holds them (`a Custom Audience`), for the error.
pub fn identifiers_only(
    destination: &str,
    mapping: &[FieldMapping],
    known: impl Fn(&str) -> bool,
    names: &[String],
    holder: &str,
) -> Result<(), String> {
    let unknown: Vec<String> = mapping
        .iter()
        .filter(|m| !known(&m.field))
        .map(|m| format!("`{}`", m.field))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(format!(
        "destination `{destination}` matches people on {}; {} {} not one: {holder} holds identifiers only",
        names.join(", "),
        unknown.join(", "),
        if unknown.len() == 1 { "is" } else { "are" }
    ))
}

/// The membership changes of one send: the checks every vendor makes
/// before writing (`vendor::prepare`; `target` names the audience in its
/// errors), each record as a member (`member`; `Err` is its refusal), then
/// [`changes`].
pub fn plan(
    ctx: &BatchContext,
    records: &[OutboundRecord],
    answers: &mut [Option<RecordAnswer>],
    target: &str,
    member: impl Fn(&Map<String, Value>) -> Result<Member, String>,
) -> Result<Vec<Change>, Failure> {
    let rules = PrepareRules {
        target,
        unknown_id: UNKNOWN_MEMBER,
    };
    let prepared = prepare(
        ctx,
        records,
        answers,
        &rules,
        |_| Vec::new(),
        |_, fields| member(fields),
    )?;
    Ok(changes(prepared, answers))
}

/// The positions of the removals, then of the additions, each group when
/// it has some: one request (or job) each, as the vendors never mix them.
pub fn groups(changes: &[Change]) -> Vec<(bool, Vec<usize>)> {
    [false, true]
        .into_iter()
        .map(|add| {
            let positions: Vec<usize> = (0..changes.len())
                .filter(|&i| changes[i].add == add)
                .collect();
            (add, positions)
        })
        .filter(|(_, positions)| !positions.is_empty())
        .collect()
}

/// A mapped identifier's value as text before normalisation: a non-blank
/// string (trimmed) or a number's digits; `None` when empty.
pub fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Lowercase hex SHA-256 of `text` (UTF-8).
pub fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    crate::hex::encode(digest.as_ref())
}

/// A member's identifiers as sent: the vendor's name for each (`EMAIL`,
/// `hashedEmail`) and its value (hashed, or, for the few identifiers a
/// vendor takes in clear such as a country code, normalised).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member(pub BTreeMap<String, String>);

impl Member {
    /// The member as the record's destination id.
    pub fn to_id(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    /// The member a destination id names; `None` when it is not one (a
    /// record delivered before the destination kept its members).
    pub fn from_id(id: &str) -> Option<Member> {
        serde_json::from_str(id).ok().map(Member)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Adds or removes one member, for a record of the send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The record's position in the send.
    pub record: usize,
    pub add: bool,
    pub member: Member,
}

/// The membership changes of one send, removals first: a record removed
/// from the model removes the member it was added as; an update whose
/// identifiers changed removes the old member and adds the new one; an
/// update whose identifiers did not change needs no request (answered
/// here); a new record adds its member. Records whose delivered member is
/// not known are refused in `answers`.
pub fn changes(
    prepared: Prepared<'_, Member>,
    answers: &mut [Option<RecordAnswer>],
) -> Vec<Change> {
    let mut removes = Vec::new();
    let mut adds = Vec::new();
    for (record, id) in prepared.removals {
        match Member::from_id(id) {
            Some(member) => removes.push(Change {
                record,
                add: false,
                member,
            }),
            None => answers[record] = Some(RecordAnswer::Rejected(UNKNOWN_MEMBER.into())),
        }
    }
    for (record, outbound, member) in prepared.updates {
        let delivered = outbound.destination_id.as_deref().and_then(Member::from_id);
        if delivered.as_ref() == Some(&member) {
            answers[record] = Some(RecordAnswer::Applied {
                destination_id: Some(member.to_id()),
                looked_up: false,
            });
            continue;
        }
        if let Some(old) = delivered {
            removes.push(Change {
                record,
                add: false,
                member: old,
            });
        }
        adds.push(Change {
            record,
            add: true,
            member,
        });
    }
    for (record, _, member) in prepared.writes {
        adds.push(Change {
            record,
            add: true,
            member,
        });
    }
    removes.extend(adds);
    removes
}

/// Each record's answer once its changes were sent: refused when one of
/// them was (`refused`: the change's position and the vendor's reason),
/// else applied, with the member it was added as.
pub fn answer(
    changes: &[Change],
    refused: &BTreeMap<usize, String>,
    answers: &mut [Option<RecordAnswer>],
) {
    for (position, change) in changes.iter().enumerate() {
        if let Some(reason) = refused.get(&position) {
            answers[change.record] = Some(RecordAnswer::Rejected(reason.clone()));
            continue;
        }
        if matches!(answers[change.record], Some(RecordAnswer::Rejected(_))) {
            continue;
        }
        if change.add || answers[change.record].is_none() {
            answers[change.record] = Some(RecordAnswer::Applied {
                destination_id: change.add.then(|| change.member.to_id()),
                looked_up: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_published_hashes() {
        // TikTok's customer-file guide: "janedoe@gmail.com".
        assert_eq!(
            sha256_hex("janedoe@gmail.com"),
            "d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69"
        );
        // X's Ads API custom audience guide: "adsapi".
        assert_eq!(
            sha256_hex("adsapi"),
            "49e0be2aeccfb51a8dee4c945c8a70a9ac500cf6f5cb08112575f74db9b1470d"
        );
    }

    #[test]
    fn a_member_round_trips_through_its_destination_id() {
        let member = Member(BTreeMap::from([
            ("EMAIL".to_owned(), sha256_hex("a@example.com")),
            ("COUNTRY".to_owned(), sha256_hex("us")),
        ]));
        assert_eq!(Member::from_id(&member.to_id()), Some(member));
        assert_eq!(Member::from_id("12345"), None);
    }

    #[test]
    fn answers_follow_each_records_changes() {
        let member = |v: &str| Member(BTreeMap::from([("EMAIL".to_owned(), v.to_owned())]));
        let changes = vec![
            Change {
                record: 0,
                add: false,
                member: member("old0"),
            },
            Change {
                record: 1,
                add: false,
                member: member("gone1"),
            },
            Change {
                record: 0,
                add: true,
                member: member("new0"),
            },
            Change {
                record: 2,
                add: true,
                member: member("new2"),
            },
        ];
        let mut answers = vec![None; 3];
        let refused = BTreeMap::from([(3, "invalid".to_owned())]);
        answer(&changes, &refused, &mut answers);
        assert_eq!(
            answers,
            vec![
                Some(RecordAnswer::Applied {
                    destination_id: Some(member("new0").to_id()),
                    looked_up: false
                }),
                Some(RecordAnswer::Applied {
                    destination_id: None,
                    looked_up: false
                }),
                Some(RecordAnswer::Rejected("invalid".into())),
            ]
        );
    }
}
