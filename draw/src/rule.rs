//! The rule itself: commitment, score, winners.

use sha2::{Digest, Sha256};

/// Length of a seed, and of a commitment and a score: one SHA-256 output.
pub const SEED_LEN: usize = 32;

/// The secret a sale's draw is decided by.
pub type Seed = [u8; SEED_LEN];

/// `SHA-256(seed)`: published when the sale is created, long before the seed.
pub fn commitment(seed: &Seed) -> [u8; SEED_LEN] {
    Sha256::digest(seed).into()
}

/// `SHA-256(seed || user as 8 bytes big-endian)`: the entrant's place in the
/// draw, lowest first.
pub fn score(seed: &Seed, user: u64) -> [u8; SEED_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(seed);
    hasher.update(user.to_be_bytes());
    hasher.finalize().into()
}

/// The winners of a draw among `entrants` for `capacity` tickets, in ticket
/// order: the user at index `i` gets ticket `i + 1`.
///
/// `entrants` may come in any order; each user should appear once (a
/// duplicate would be scored, and could win, twice: callers keep entrants in
/// a set). Two users with the same score, which would take a collision of
/// SHA-256, are ordered by user id, so the order is total.
pub fn winners(seed: &Seed, entrants: &[u64], capacity: u32) -> Vec<u64> {
    let mut scored: Vec<([u8; SEED_LEN], u64)> =
        entrants.iter().map(|&u| (score(seed, u), u)).collect();
    let take = scored.len().min(capacity as usize);
    // Only the first `capacity` need an order: partition around the last
    // winner, then sort the winners alone.
    if take < scored.len() && take > 0 {
        scored.select_nth_unstable(take - 1);
    }
    scored.truncate(take);
    scored.sort_unstable();
    scored.into_iter().map(|(_, user)| user).collect()
}

/// Lowercase hex of 32 bytes, as seeds and commitments are published.
pub fn to_hex(bytes: &[u8; SEED_LEN]) -> String {
    hex::encode(bytes)
}

/// 32 bytes from exactly 64 lowercase hex digits; `None` for anything else
/// (uppercase included: the published form is lowercase, and accepting two
/// spellings would let two different documents both pass).
pub fn parse_hex32(text: &str) -> Option<[u8; SEED_LEN]> {
    if text.len() != 2 * SEED_LEN || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; SEED_LEN];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: an implementation of the rule in any language must
    /// reproduce these (docs/FAIRNESS.md gives a script that does).
    #[test]
    fn golden_commitment_and_scores() {
        let seed = [7u8; SEED_LEN];
        assert_eq!(
            to_hex(&commitment(&seed)),
            "4bb06f8e4e3a7715d201d573d0aa423762e55dabd61a2c02278fa56cc6d294e0"
        );
        assert_eq!(
            to_hex(&score(&seed, 1)),
            "f222a20b21927d88e72377031f01efe0de4396c67ea944d82dbf80126fe11e6d"
        );
        assert_eq!(
            to_hex(&score(&seed, u64::MAX)),
            "aa810a473e629d3be0fd237749fb98dc2b58d7123de95d58d2296da078501ecb"
        );
    }

    #[test]
    fn winners_are_the_lowest_scores_in_order() {
        let seed = [1u8; SEED_LEN];
        let entrants: Vec<u64> = (0..1000).collect();
        let mut all: Vec<_> = entrants.iter().map(|&u| (score(&seed, u), u)).collect();
        all.sort();
        let expected: Vec<u64> = all.iter().take(10).map(|&(_, u)| u).collect();
        assert_eq!(winners(&seed, &entrants, 10), expected);
        let mut reversed = entrants.clone();
        reversed.reverse();
        assert_eq!(
            winners(&seed, &reversed, 10),
            expected,
            "order of entry plays no part"
        );
    }

    #[test]
    fn fewer_entrants_than_tickets_all_win() {
        let seed = [2u8; SEED_LEN];
        let won = winners(&seed, &[5, 3, 9], 200);
        assert_eq!(won.len(), 3);
        let mut sorted = won.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [3, 5, 9]);
        assert!(winners(&seed, &[], 200).is_empty());
        assert!(winners(&seed, &[1, 2], 0).is_empty());
    }

    #[test]
    fn hex_is_lowercase_and_exact() {
        let bytes = [0xabu8; SEED_LEN];
        let text = to_hex(&bytes);
        assert_eq!(text, "ab".repeat(32));
        assert_eq!(parse_hex32(&text), Some(bytes));
        assert_eq!(parse_hex32(&text.to_uppercase()), None);
        assert_eq!(parse_hex32(&text[1..]), None);
        assert_eq!(parse_hex32(&format!("{}zz", &text[2..])), None);
    }
}
