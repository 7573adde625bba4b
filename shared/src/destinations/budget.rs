//! What a run's writes cost at a destination, in requests, before anything
//! is sent: each destination type says how many requests a batch takes
//! ([`super::DestinationConfig::requests_for`]), from how it writes records
//! (see `util::vendor::WriteKind`).

use serde::Serialize;

/// The records of one batch, by the kind of write they need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BatchWrites {
    /// Removed from the model (mirror mode): deleted or archived.
    pub removes: u64,
    /// Delivered before, with the destination's id in the ledger.
    pub updates_by_id: u64,
    /// No destination id known: created or upserted by match key.
    pub writes: u64,
}

impl BatchWrites {
    pub fn total(&self) -> u64 {
        self.removes + self.updates_by_id + self.writes
    }

    /// The kinds of write present: a vendor sends each kind in requests of
    /// its own.
    pub fn kinds(&self) -> u64 {
        [self.removes, self.updates_by_id, self.writes]
            .iter()
            .filter(|&&n| n > 0)
            .count() as u64
    }

    pub fn add(&mut self, other: &BatchWrites) {
        self.removes += other.removes;
        self.updates_by_id += other.updates_by_id;
        self.writes += other.writes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_count_only_what_the_batch_has() {
        let batch = BatchWrites {
            removes: 0,
            updates_by_id: 3,
            writes: 1,
        };
        assert_eq!(batch.kinds(), 2);
        assert_eq!(batch.total(), 4);
        assert_eq!(BatchWrites::default().kinds(), 0);
    }
}
