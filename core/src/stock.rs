//! The stock counter and the ticket allocator.

use crossbeam_utils::CachePadded;

use super::sync::{AtomicU32, Ordering};

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
    /// Tickets still free. Only ever decremented, by CAS, never below zero: so
    /// a value once read as zero stays zero, and each successful decrement from
    /// `r` is the unique sale number `initial - r`.
    /// Padded onto cache lines of its own, off those of its neighbours.
    remaining: CachePadded<AtomicU32>,
    /// `remaining` at construction; `allocator` numbers exactly that many.
    initial: u32,
    allocator: Allocator,
}

impl Stock {
    /// A fresh stock of tickets `1..=capacity`.
    pub(crate) fn fresh(capacity: u32) -> Stock {
        Stock {
            remaining: CachePadded::new(AtomicU32::new(capacity)),
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
            remaining: CachePadded::new(AtomicU32::new(initial)),
            initial,
            allocator,
        }
    }

    /// Tickets not yet taken.
    pub(crate) fn remaining(&self) -> u32 {
        self.remaining.load(Ordering::Acquire)
    }

    /// Takes one ticket, or `None` once the stock is gone.
    pub(crate) fn take(&self) -> Option<u32> {
        let mut current = self.remaining();
        loop {
            if current == 0 {
                return None;
            }
            match self.remaining.compare_exchange(
                current,
                current - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(self.nth(self.initial - current)),
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
    fn empty_free_list_is_sold_out() {
        let stock = Stock::with_free(Vec::new());
        assert_eq!(stock.remaining(), 0);
        assert_eq!(stock.take(), None);
    }
}
