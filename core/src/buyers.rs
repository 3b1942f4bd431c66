//! The sharded lock-free buyer set: user id -> slot state.
//!
//! Each shard is a fixed-size open-addressing table (linear probing) of
//! [`BuyerSlot`]s. A slot's key goes from empty to one user id exactly once and
//! is never removed, which is what makes a lock-free probe sound: once a reader
//! steps over a non-empty slot, that slot stays taken by that user forever.
//!
//! Key `0` marks an empty slot, so user `0` cannot live in the tables; it gets a
//! dedicated side slot whose key word is a claimed flag instead. Every other
//! `u64`, `u64::MAX` included, is stored as is.

use super::sync::{AtomicU32, AtomicU64, Backoff, Ordering};

/// Raw state of a claimed slot whose request has not decided yet.
const CLAIMING: u32 = 0;
/// Raw state of a claim that lost: the sale sold out under it.
const NO_TICKET: u32 = u32::MAX;
/// Set on a ticket once its win is durable in the log.
const DURABLE_BIT: u32 = 1 << 31;
/// Key word of an empty table slot.
const EMPTY_KEY: u64 = 0;

/// Number of shards (a power of two).
#[cfg(not(feature = "loom"))]
const SHARDS: usize = 64;
#[cfg(feature = "loom")]
const SHARDS: usize = 2;
/// Smallest table per shard (a power of two).
#[cfg(not(feature = "loom"))]
const MIN_SLOTS_PER_SHARD: usize = 16;
#[cfg(feature = "loom")]
const MIN_SLOTS_PER_SHARD: usize = 4;
/// Room for claims that lose the race for the last tickets.
///
/// A losing claim keeps its key (as [`SlotState::NoTicket`]). Only requests in
/// flight at the moment of sell-out can lose, since later ones see zero stock
/// before claiming, so this bounds with the number of reserving threads.
#[cfg(not(feature = "loom"))]
const SLACK: u64 = 1024;
#[cfg(feature = "loom")]
const SLACK: u64 = 2;

/// Decoded state of a claimed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// A request of this user holds the claim and is taking stock.
    Claiming,
    /// The user won this ticket; the win is not yet durable.
    Pending(u32),
    /// The user owns this ticket and the log has it on disk.
    Durable(u32),
    /// The claim lost: the sale sold out before it got a ticket.
    NoTicket,
}

impl SlotState {
    /// Decodes the raw `u32` of a slot.
    ///
    /// Tickets are `1..=MAX_CAPACITY`, below bit 31, so the encoding is
    /// `0` claiming, `u32::MAX` no ticket, `t` pending and `t | 1 << 31` durable.
    pub(crate) const fn decode(raw: u32) -> SlotState {
        match raw {
            CLAIMING => SlotState::Claiming,
            NO_TICKET => SlotState::NoTicket,
            t if t & DURABLE_BIT != 0 => SlotState::Durable(t & !DURABLE_BIT),
            t => SlotState::Pending(t),
        }
    }

    /// Encodes this state as the raw `u32` of a slot.
    pub(crate) const fn encode(self) -> u32 {
        match self {
            SlotState::Claiming => CLAIMING,
            SlotState::NoTicket => NO_TICKET,
            SlotState::Pending(t) => t,
            SlotState::Durable(t) => t | DURABLE_BIT,
        }
    }
}

/// One user's entry: the key word and the state word.
#[derive(Debug)]
pub(crate) struct BuyerSlot {
    /// `EMPTY_KEY` until claimed, then the user id, never changed again.
    key: AtomicU64,
    /// Raw [`SlotState`]; meaningful only once `key` is claimed. Written by the
    /// claiming request (to resolve it) and by `mark_durable`, with Release.
    state: AtomicU32,
}

impl BuyerSlot {
    fn new() -> BuyerSlot {
        BuyerSlot {
            key: AtomicU64::new(EMPTY_KEY),
            state: AtomicU32::new(CLAIMING),
        }
    }

    /// The current state, without waiting.
    pub(crate) fn state(&self) -> SlotState {
        SlotState::decode(self.state.load(Ordering::Acquire))
    }

    /// The state once the claim is decided, waiting while it is in flight.
    ///
    /// The claiming request resolves its slot a few instructions after the
    /// claim, with no lock, allocation, I/O or panic in between, so the wait is
    /// short unless that thread is preempted; then the backoff yields to it.
    pub(crate) fn resolve(&self) -> SlotState {
        let mut backoff = Backoff::default();
        loop {
            match self.state() {
                SlotState::Claiming => backoff.snooze(),
                decided => return decided,
            }
        }
    }

    /// Publishes a new state for this slot.
    pub(crate) fn publish(&self, state: SlotState) {
        self.state.store(state.encode(), Ordering::Release);
    }

    /// Replaces `current` with `new`; false if the slot held something else.
    pub(crate) fn replace(&self, current: SlotState, new: SlotState) -> bool {
        self.state
            .compare_exchange(
                current.encode(),
                new.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// Outcome of [`BuyerSet::claim`].
#[derive(Debug)]
pub(crate) enum Claim<'a> {
    /// This call claimed a fresh slot for the user; its state is `Claiming`
    /// and the caller must publish a decided state.
    Claimed(&'a BuyerSlot),
    /// Another request of the same user claimed first.
    Existing(&'a BuyerSlot),
    /// The user's shard is full.
    Full,
}

/// One shard: a power-of-two table probed linearly.
#[derive(Debug)]
#[repr(align(64))]
struct Shard {
    slots: Box<[BuyerSlot]>,
}

/// A lock-free map from user id to [`SlotState`], sized once, never shrunk.
#[derive(Debug)]
pub(crate) struct BuyerSet {
    shards: Box<[Shard]>,
    /// `slots_per_shard - 1`.
    slot_mask: usize,
    /// Per-set hash seed, so user ids cannot be picked to collide.
    seed: u64,
    /// User 0's slot; its key word is `1` once claimed.
    zero: BuyerSlot,
}

impl BuyerSet {
    /// A set with room for `capacity` winners plus the losing claims.
    pub(crate) fn for_capacity(capacity: u32) -> BuyerSet {
        let entries = u64::from(capacity) + SLACK;
        let total = (2 * entries).next_power_of_two();
        let per_shard = usize::try_from(total / SHARDS as u64)
            .unwrap_or(usize::MAX)
            .max(MIN_SLOTS_PER_SHARD);
        BuyerSet::with_geometry(SHARDS, per_shard, random_seed())
    }

    /// A set of `shards` tables of `slots_per_shard` slots (powers of two).
    pub(crate) fn with_geometry(shards: usize, slots_per_shard: usize, seed: u64) -> BuyerSet {
        debug_assert!(shards.is_power_of_two() && slots_per_shard.is_power_of_two());
        let shards = (0..shards)
            .map(|_| Shard {
                slots: (0..slots_per_shard).map(|_| BuyerSlot::new()).collect(),
            })
            .collect();
        BuyerSet {
            shards,
            slot_mask: slots_per_shard - 1,
            seed,
            zero: BuyerSlot::new(),
        }
    }

    /// The user's slot if some request of theirs has claimed one. Read-only.
    pub(crate) fn find(&self, user: u64) -> Option<&BuyerSlot> {
        if user == 0 {
            return (self.zero.key.load(Ordering::Acquire) != EMPTY_KEY).then_some(&self.zero);
        }
        for slot in self.probe(user) {
            match slot.key.load(Ordering::Acquire) {
                k if k == user => return Some(slot),
                EMPTY_KEY => return None,
                _ => {}
            }
        }
        None
    }

    /// Claims a slot for the user, unless one of their requests already has.
    pub(crate) fn claim(&self, user: u64) -> Claim<'_> {
        if user == 0 {
            return match self.zero.key.compare_exchange(
                EMPTY_KEY,
                1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Claim::Claimed(&self.zero),
                Err(_) => Claim::Existing(&self.zero),
            };
        }
        for slot in self.probe(user) {
            let mut key = slot.key.load(Ordering::Acquire);
            if key == EMPTY_KEY {
                match slot.key.compare_exchange(
                    EMPTY_KEY,
                    user,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Claim::Claimed(slot),
                    Err(actual) => key = actual,
                }
            }
            if key == user {
                return Claim::Existing(slot);
            }
        }
        Claim::Full
    }

    /// Number of claimed slots. Scans every table: for tests and diagnostics.
    pub(crate) fn len(&self) -> usize {
        let zero = usize::from(self.zero.key.load(Ordering::Acquire) != EMPTY_KEY);
        let tables: usize = self
            .shards
            .iter()
            .map(|shard| {
                shard
                    .slots
                    .iter()
                    .filter(|s| s.key.load(Ordering::Acquire) != EMPTY_KEY)
                    .count()
            })
            .sum();
        zero + tables
    }

    /// The slots a user may occupy, in probe order (one full lap of the shard).
    fn probe(&self, user: u64) -> impl Iterator<Item = &BuyerSlot> {
        let hash = mix(user ^ self.seed);
        // Shard and start slot come from disjoint bits of the hash.
        let shard_index = (hash >> 40) as usize & (self.shards.len() - 1);
        let slots = &self.shards[shard_index].slots;
        let start = hash as usize & self.slot_mask;
        let mask = self.slot_mask;
        (0..slots.len()).map(move |i| &slots[(start + i) & mask])
    }
}

/// The splitmix64 finalizer: a cheap bijective mix of all 64 bits.
const fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A seed from the operating system's random source, so that no one can
/// pick user ids that collide in one shard. Without that source (it does
/// not fail on Linux), the clock still varies the layout between runs.
#[cfg(not(feature = "loom"))]
fn random_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| mix(crate::clock::now_ms()))
}

/// loom replays each model many times and needs the same atomics touched in
/// the same order every time, so the layout must not vary between runs.
#[cfg(feature = "loom")]
fn random_seed() -> u64 {
    0x5eed
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    #[test]
    fn state_encoding_round_trips() {
        let states = [
            SlotState::Claiming,
            SlotState::NoTicket,
            SlotState::Pending(1),
            SlotState::Pending(100_000_000),
            SlotState::Durable(1),
            SlotState::Durable(100_000_000),
        ];
        for state in states {
            assert_eq!(SlotState::decode(state.encode()), state);
        }
        assert_eq!(SlotState::Claiming.encode(), 0);
        assert_eq!(SlotState::NoTicket.encode(), u32::MAX);
        assert_eq!(SlotState::Durable(7).encode(), 7 | 1 << 31);
    }

    #[test]
    fn extreme_user_ids_are_distinct_keys() {
        let set = BuyerSet::for_capacity(4);
        for user in [0, 1, u64::MAX, u64::MAX - 1] {
            assert!(set.find(user).is_none());
            let Claim::Claimed(slot) = set.claim(user) else {
                panic!("user {user} not claimed");
            };
            slot.publish(SlotState::Pending(7));
            assert!(matches!(set.claim(user), Claim::Existing(_)));
            assert_eq!(
                set.find(user).map(BuyerSlot::state),
                Some(SlotState::Pending(7))
            );
        }
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn full_shard_reports_full_and_find_terminates() {
        let set = BuyerSet::with_geometry(1, 4, 42);
        for user in 1..=4 {
            assert!(matches!(set.claim(user), Claim::Claimed(_)));
        }
        assert!(matches!(set.claim(5), Claim::Full));
        assert!(set.find(5).is_none());
        assert!(matches!(set.claim(3), Claim::Existing(_)));
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn replace_only_from_the_expected_state() {
        let set = BuyerSet::for_capacity(1);
        let Claim::Claimed(slot) = set.claim(9) else {
            panic!("not claimed");
        };
        assert!(!slot.replace(SlotState::Pending(1), SlotState::Durable(1)));
        slot.publish(SlotState::Pending(1));
        assert!(slot.replace(SlotState::Pending(1), SlotState::Durable(1)));
        assert_eq!(slot.resolve(), SlotState::Durable(1));
    }

    #[test]
    fn geometry_scales_with_capacity() {
        let small = BuyerSet::for_capacity(200);
        assert_eq!(small.shards.len(), SHARDS);
        assert!(small.shards.len() * (small.slot_mask + 1) >= 2 * (200 + SLACK as usize));
    }
}
