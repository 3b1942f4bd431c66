//! The stock counter, the operator's gate, and the ticket allocator.
//!
//! One `u32` holds both the count of free tickets (bits 0 to 29) and the
//! gate (bit 30 paused, bit 31 closed), so that the request path learns
//! both from a single atomic load: a paused or sold-out sale answers with
//! one load and no store, exactly like an open one.

use crossbeam_utils::CachePadded;
use flashsale_protocol::SaleAction;

use super::sync::{AtomicU32, Ordering};

/// Gate bit: reservations are refused until the sale resumes.
const PAUSED: u32 = 1 << 30;
/// Gate bit: the sale is over for good.
const CLOSED: u32 = 1 << 31;
/// The count bits. `MAX_CAPACITY` is far below, so a count never reaches
/// the gate bits, and decrementing a non-zero count never borrows from them.
const COUNT: u32 = PAUSED - 1;
const _: () = assert!(super::sale::MAX_CAPACITY <= COUNT);

/// Whether the operator lets reservations through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Reservations go through.
    Open,
    /// Refused until resumed.
    Paused,
    /// Refused for good.
    Closed,
}

/// The stock word as one load saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Free tickets.
    pub(crate) remaining: u32,
    /// The gate.
    pub(crate) gate: Gate,
}

impl Snapshot {
    fn of(word: u32) -> Snapshot {
        let gate = if word & CLOSED != 0 {
            Gate::Closed
        } else if word & PAUSED != 0 {
            Gate::Paused
        } else {
            Gate::Open
        };
        Snapshot {
            remaining: word & COUNT,
            gate,
        }
    }
}

/// Which ticket number the k-th sale of this process hands out.
#[derive(Debug)]
enum Allocator {
    /// Fresh sale: the k-th sale gets ticket `k + 1`.
    Sequential,
    /// Restored sale: the k-th sale gets `free[k]`, the free numbers ascending.
    Free(Box<[u32]>),
}

/// Remaining stock plus the allocator that numbers each sold ticket.
#[derive(Debug)]
pub(crate) struct Stock {
    /// Tickets still free, and the gate above them. In a sale without holds
    /// the count is only ever decremented, by CAS, never below zero: so a
    /// count once read as zero stays zero, and each successful decrement from
    /// `r` is the unique sale number `initial - r`. (A sale with holds keeps
    /// its tickets in its hold book and only mirrors their count here.)
    /// Padded onto cache lines of its own, off those of its neighbours.
    word: CachePadded<AtomicU32>,
    /// `remaining` at construction; `allocator` numbers exactly that many.
    initial: u32,
    allocator: Allocator,
}

impl Stock {
    /// A fresh stock of tickets `1..=capacity`.
    pub(crate) fn fresh(capacity: u32) -> Stock {
        Stock {
            word: CachePadded::new(AtomicU32::new(capacity)),
            initial: capacity,
            allocator: Allocator::Sequential,
        }
    }

    /// A stock of the given free ticket numbers, which must be ascending.
    pub(crate) fn with_free(free: Vec<u32>) -> Stock {
        debug_assert!(free.windows(2).all(|w| w[0] < w[1]));
        let initial = u32::try_from(free.len()).unwrap_or(u32::MAX);
        let allocator = if free.iter().enumerate().all(|(k, &t)| t as usize == k + 1) {
            Allocator::Sequential
        } else {
            Allocator::Free(free.into_boxed_slice())
        };
        Stock {
            word: CachePadded::new(AtomicU32::new(initial)),
            initial,
            allocator,
        }
    }

    /// The count and the gate, in one load.
    pub(crate) fn load(&self) -> Snapshot {
        Snapshot::of(self.word.load(Ordering::Acquire))
    }

    /// Tickets not yet taken.
    pub(crate) fn remaining(&self) -> u32 {
        self.load().remaining
    }

    /// Takes one ticket, or `None` once the stock is gone.
    ///
    /// The gate is not checked here: a request that found the gate open has
    /// already claimed its buyer slot, and finishes (see the sale's docs).
    pub(crate) fn take(&self) -> Option<u32> {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let count = current & COUNT;
            if count == 0 {
                return None;
            }
            match self.word.compare_exchange(
                current,
                current - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(self.nth(self.initial - count)),
                Err(actual) => current = actual,
            }
        }
    }

    /// Applies the operator's `action` to the gate. Closed is final: a
    /// closed gate stays closed, and the call answers false.
    pub(crate) fn apply(&self, action: SaleAction) -> bool {
        let previous = match action {
            SaleAction::Pause => self.word.fetch_or(PAUSED, Ordering::AcqRel),
            SaleAction::Resume => self.word.fetch_and(!PAUSED, Ordering::AcqRel),
            SaleAction::Close => self.word.fetch_or(CLOSED, Ordering::AcqRel),
        };
        previous & CLOSED == 0
    }

    /// Sets the count, keeping the gate. For a sale with holds, whose book
    /// owns the tickets; its caller serialises the calls.
    pub(crate) fn mirror(&self, remaining: u32) {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let next = (current & !COUNT) | (remaining & COUNT);
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The ticket of the k-th sale, `k < initial`.
    fn nth(&self, k: u32) -> u32 {
        match &self.allocator {
            Allocator::Sequential => k + 1,
            // In bounds: `free.len() == initial` and `k < initial`.
            Allocator::Free(free) => free[k as usize],
        }
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    fn drain(stock: &Stock) -> Vec<u32> {
        std::iter::from_fn(|| stock.take()).collect()
    }

    #[test]
    fn fresh_stock_sells_in_order() {
        let stock = Stock::fresh(5);
        assert_eq!(drain(&stock), [1, 2, 3, 4, 5]);
        assert_eq!(stock.remaining(), 0);
        assert_eq!(stock.take(), None);
    }

    #[test]
    fn free_list_fills_gaps_in_increasing_order() {
        let stock = Stock::with_free(vec![2, 3, 7, 9]);
        assert!(matches!(stock.allocator, Allocator::Free(_)));
        assert_eq!(stock.remaining(), 4);
        assert_eq!(drain(&stock), [2, 3, 7, 9]);
        assert_eq!(stock.take(), None);
    }

    #[test]
    fn free_prefix_uses_the_sequential_allocator() {
        let stock = Stock::with_free(vec![1, 2, 3]);
        assert!(matches!(stock.allocator, Allocator::Sequential));
        assert_eq!(drain(&stock), [1, 2, 3]);
    }

    #[test]
    fn the_gate_shares_the_word_without_touching_the_count() {
        let stock = Stock::fresh(3);
        assert!(stock.apply(SaleAction::Pause));
        assert_eq!(
            stock.load(),
            Snapshot {
                remaining: 3,
                gate: Gate::Paused
            }
        );
        assert_eq!(
            stock.take(),
            Some(1),
            "a claim made before the pause finishes"
        );
        assert!(stock.apply(SaleAction::Resume));
        assert_eq!(stock.load().gate, Gate::Open);
        assert!(stock.apply(SaleAction::Close));
        assert!(!stock.apply(SaleAction::Resume), "closed is final");
        assert_eq!(stock.load().gate, Gate::Closed);
        assert_eq!(drain(&stock), [2, 3]);
        assert_eq!(stock.load().remaining, 0);
        stock.mirror(7);
        assert_eq!(
            stock.load(),
            Snapshot {
                remaining: 7,
                gate: Gate::Closed
            }
        );
    }

    #[test]
    fn empty_free_list_is_sold_out() {
        let stock = Stock::with_free(Vec::new());
        assert_eq!(stock.remaining(), 0);
        assert_eq!(stock.take(), None);
    }
}
