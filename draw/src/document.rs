//! The published draw, and its audit.
//!
//! After the draw the server publishes one document per sale
//! (`GET /api/sales/{sale}/draw`): the seed, the commitment it was bound to,
//! every entrant, and the winners with their tickets. [`audit`] recomputes
//! the winners from the seed and the entrants and refuses the document on
//! any difference: so a buyer, a journalist or a regulator needs nothing
//! from the server but this document and the commitment it published before
//! the sale.

use serde::{Deserialize, Serialize};

use crate::rule::{commitment, parse_hex32, to_hex, winners, Seed};

/// A published draw. The JSON the HTTP front serves, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// The sale id.
    pub sale: String,
    /// Tickets in the sale: how many entrants win at most.
    pub capacity: u32,
    /// When entries closed and the draw was made, Unix milliseconds.
    pub draws_at: u64,
    /// `SHA-256(seed)`, lowercase hex, as published before the sale.
    pub commitment: String,
    /// The seed, lowercase hex.
    pub seed: String,
    /// Every entrant's user id, ascending, each once.
    pub entrants: Vec<u64>,
    /// The winners in ticket order: the first has ticket 1.
    pub winners: Vec<Winner>,
}

impl Document {
    /// The document of an honest draw: `entrants` (in any order, duplicates
    /// counted once) drawn with `seed` for `capacity` tickets, the winners
    /// numbered from ticket 1.
    pub fn new(
        sale: impl Into<String>,
        capacity: u32,
        draws_at: u64,
        seed: &Seed,
        entrants: impl IntoIterator<Item = u64>,
    ) -> Document {
        let mut entrants: Vec<u64> = entrants.into_iter().collect();
        entrants.sort_unstable();
        entrants.dedup();
        let winners = winners(seed, &entrants, capacity)
            .into_iter()
            .zip(1..)
            .map(|(user, ticket)| Winner { user, ticket })
            .collect();
        Document {
            sale: sale.into(),
            capacity,
            draws_at,
            commitment: to_hex(&commitment(seed)),
            seed: to_hex(seed),
            entrants,
            winners,
        }
    }
}

/// One winner of a draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Winner {
    /// The user id.
    pub user: u64,
    /// The ticket the draw gave them.
    pub ticket: u32,
}

/// What an audit that passed checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// Entrants in the draw.
    pub entrants: usize,
    /// Winners recomputed, and found as published.
    pub winners: usize,
}

/// Why a published draw does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The seed is not 64 lowercase hex digits.
    #[error("the seed is not 64 lowercase hex digits")]
    SeedFormat,
    /// The commitment is not 64 lowercase hex digits.
    #[error("the commitment is not 64 lowercase hex digits")]
    CommitmentFormat,
    /// `SHA-256(seed)` is not the commitment.
    #[error("the seed does not match the commitment: SHA-256(seed) is {actual}, the commitment {published}")]
    SeedMismatch {
        /// `SHA-256(seed)`.
        actual: String,
        /// The commitment in the document.
        published: String,
    },
    /// The commitment is not the one the caller saw before the sale.
    #[error("the document's commitment {published} is not the one published before the sale ({expected})")]
    CommitmentChanged {
        /// The commitment the caller expects.
        expected: String,
        /// The commitment in the document.
        published: String,
    },
    /// The entrants are not in ascending order, or one appears twice.
    #[error("entrant {position} ({user}) is not above the one before it: the list must be ascending, each user once")]
    EntrantsOrder {
        /// Index in the list.
        position: usize,
        /// The user id there.
        user: u64,
    },
    /// The document lists a different number of winners than the rule gives.
    #[error("{published} winners are published, the rule gives {expected}")]
    WinnerCount {
        /// Winners the rule gives: the fewer of capacity and entrants.
        expected: usize,
        /// Winners in the document.
        published: usize,
    },
    /// A winner differs from the rule's.
    #[error("ticket {ticket} went to user {published}, the rule gives it to user {expected}")]
    WrongWinner {
        /// The ticket.
        ticket: u32,
        /// Who the rule gives it to.
        expected: u64,
        /// Who the document gives it to.
        published: u64,
    },
    /// A winner's ticket is not its place in the order.
    #[error("winner {position} ({user}) is listed with ticket {published}, its place gives ticket {expected}")]
    WrongTicket {
        /// Index in the list.
        position: usize,
        /// The user.
        user: u64,
        /// The ticket its place gives.
        expected: u32,
        /// The ticket listed.
        published: u32,
    },
}

/// Recomputes `document`'s winners and checks every field it can.
///
/// `expected_commitment`, when given, is the commitment the caller saw
/// before the sale (from `GET /api/sales/{sale}`): the one check the
/// document cannot make on itself.
///
/// # Errors
///
/// The first [`AuditError`] found.
pub fn audit(document: &Document, expected_commitment: Option<&str>) -> Result<Audit, AuditError> {
    let seed = parse_hex32(&document.seed).ok_or(AuditError::SeedFormat)?;
    let published = parse_hex32(&document.commitment).ok_or(AuditError::CommitmentFormat)?;
    if let Some(expected) = expected_commitment {
        if expected != document.commitment {
            return Err(AuditError::CommitmentChanged {
                expected: expected.to_owned(),
                published: document.commitment.clone(),
            });
        }
    }
    let actual = commitment(&seed);
    if actual != published {
        return Err(AuditError::SeedMismatch {
            actual: hex::encode(actual),
            published: document.commitment.clone(),
        });
    }
    if let Some(position) = document
        .entrants
        .windows(2)
        .position(|pair| pair[0] >= pair[1])
    {
        return Err(AuditError::EntrantsOrder {
            position: position + 1,
            user: document.entrants[position + 1],
        });
    }
    let expected = winners(&seed, &document.entrants, document.capacity);
    if expected.len() != document.winners.len() {
        return Err(AuditError::WinnerCount {
            expected: expected.len(),
            published: document.winners.len(),
        });
    }
    for (position, (&user, winner)) in expected.iter().zip(&document.winners).enumerate() {
        let ticket = u32::try_from(position + 1).unwrap_or(u32::MAX);
        if winner.user != user {
            return Err(AuditError::WrongWinner {
                ticket,
                expected: user,
                published: winner.user,
            });
        }
        if winner.ticket != ticket {
            return Err(AuditError::WrongTicket {
                position,
                user,
                expected: ticket,
                published: winner.ticket,
            });
        }
    }
    Ok(Audit {
        entrants: document.entrants.len(),
        winners: expected.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(seed: [u8; 32], entrants: Vec<u64>, capacity: u32) -> Document {
        Document::new("gig", capacity, 1_000, &seed, entrants)
    }

    #[test]
    fn an_honest_draw_passes() {
        let doc = published([3; 32], (100..600).collect(), 50);
        let commitment = doc.commitment.clone();
        assert_eq!(
            audit(&doc, Some(&commitment)),
            Ok(Audit {
                entrants: 500,
                winners: 50
            })
        );
        let few = published([3; 32], vec![9, 4], 50);
        assert_eq!(audit(&few, None).map(|a| a.winners), Ok(2));
    }

    #[test]
    fn a_json_round_trip_audits_the_same() {
        let doc = published([5; 32], (0..40).collect(), 7);
        let json = serde_json::to_string(&doc).unwrap();
        let back: Document = serde_json::from_str(&json).unwrap();
        assert_eq!(back, doc);
        assert!(audit(&back, None).is_ok());
    }

    #[test]
    fn every_tampering_is_caught() {
        let doc = published([0xab; 32], (1..=300).collect(), 20);

        let mut other_seed = doc.clone();
        other_seed.seed = to_hex(&[9; 32]);
        assert!(matches!(
            audit(&other_seed, None),
            Err(AuditError::SeedMismatch { .. })
        ));

        let mut recommitted = published([9; 32], (1..=300).collect(), 20);
        recommitted.sale = doc.sale.clone();
        assert!(matches!(
            audit(&recommitted, Some(&doc.commitment)),
            Err(AuditError::CommitmentChanged { .. })
        ));

        let mut upper = doc.clone();
        upper.seed = upper.seed.to_uppercase();
        assert_eq!(audit(&upper, None), Err(AuditError::SeedFormat));

        // An entrant dropped changes who wins (or the count), unless it was
        // a loser; dropping the first winner always shows.
        let mut dropped = doc.clone();
        let first = dropped.winners[0].user;
        dropped.entrants.retain(|&u| u != first);
        assert!(audit(&dropped, None).is_err());

        let mut added = doc.clone();
        added.entrants.push(10_000);
        let added_wins = winners(&[0xab; 32], &added.entrants, 20).contains(&10_000);
        assert_eq!(audit(&added, None).is_err(), added_wins);

        let mut duplicated = doc.clone();
        duplicated.entrants.insert(1, duplicated.entrants[0]);
        assert!(matches!(
            audit(&duplicated, None),
            Err(AuditError::EntrantsOrder { position: 1, .. })
        ));

        let mut swapped = doc.clone();
        swapped.winners.swap(0, 1);
        assert!(matches!(
            audit(&swapped, None),
            Err(AuditError::WrongWinner { ticket: 1, .. })
        ));

        let mut renumbered = doc.clone();
        renumbered.winners[3].ticket = 99;
        assert!(matches!(
            audit(&renumbered, None),
            Err(AuditError::WrongTicket { position: 3, .. })
        ));

        let mut short = doc.clone();
        short.winners.pop();
        assert!(matches!(
            audit(&short, None),
            Err(AuditError::WinnerCount {
                expected: 20,
                published: 19
            })
        ));

        let mut smuggled = doc.clone();
        smuggled.winners[5].user = 77_777;
        assert!(audit(&smuggled, None).is_err());
    }
}
