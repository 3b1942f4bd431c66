//! [`HeldTickets`]: a sale with holds, its [`HoldBook`] behind one lock.
//!
//! Holds return stock, so the lock-free core's argument ("a stock once zero
//! stays zero, so a zero read is final") does not carry over. Rather than a
//! second lock-free algorithm with tickets coming back, a sale with holds
//! takes every decision under one mutex: reserve, confirm, cancel, release
//! and expiry are then totally ordered, and each race of the issue list
//! (confirm against expiry, a returned ticket against new reservations) is
//! decided by that order. The section is short (a few map operations), and
//! the stock word mirrors the free count and carries the gate, so status
//! readers never take the lock.
//!
//! Under the same lock, every decision goes to the [`Journal`] in the order it
//! was taken. The journal only queues (the log writer syncs in batches), so
//! the lock is never held across a disk write; and since the log keeps queue
//! order, it replays to the state the book was in. What the caller then
//! answers waits until the log reports the change durable
//! ([`HeldTickets::durable`]): a hold or a confirmation is answered, and a
//! released ticket offered again, only then.
//!
//! The lock is a `std::sync::Mutex` (under loom, loom's): operations never
//! wait inside it, and a panic inside one cannot leave the book half-changed
//! (every operation changes the book only after its checks), so a poisoned
//! lock is taken over rather than failing every later request.

use std::sync::{Arc, PoisonError};

use flashsale_protocol::SaleAction;

use super::draw::DrawEvent;
use super::holds::{self, Change, Confirm, HoldBook, HoldCounts, Release, Reserve};
use super::stock::{Gate, Stock};
use super::sync::{Mutex, MutexGuard};
use super::{CoreError, Reservation, SaleSpec};

/// Where a sale with holds writes its decisions.
pub trait Journal: Send + Sync {
    /// Queues `change` of sale `sale`, decided at `at_ms`, on the log.
    ///
    /// Called under the sale's lock, in the order decisions are taken, so it
    /// must not block: queue the record and return. The log must keep the
    /// order of these calls.
    fn write(&self, sale: &str, change: &Change, at_ms: u64);

    /// Queues an event of sale `sale`'s draw, at `at_ms`, on the log. Called
    /// under the draw's lock with the same rules as [`Journal::write`].
    fn draw(&self, sale: &str, event: &DrawEvent, at_ms: u64);
}

/// The tickets of a sale with holds.
pub(crate) struct HeldTickets {
    book: Mutex<HoldBook>,
    journal: Arc<dyn Journal>,
}

impl HeldTickets {
    /// The book rebuilt from the sale's logged changes, in log order.
    pub(crate) fn restore(
        spec: &SaleSpec,
        hold_ms: u64,
        changes: &[Change],
        journal: Arc<dyn Journal>,
    ) -> Result<HeldTickets, CoreError> {
        let mut book = HoldBook::new(spec.capacity, hold_ms);
        for change in changes {
            book.replay(change).map_err(|reason| CoreError::Replay {
                id: spec.id.clone(),
                reason,
            })?;
        }
        Ok(HeldTickets {
            book: Mutex::new(book),
            journal,
        })
    }

    /// Free tickets, for the stock mirror.
    pub(crate) fn remaining(&self) -> u32 {
        self.lock().counts().remaining
    }

    pub(crate) fn counts(&self) -> HoldCounts {
        self.lock().counts()
    }

    pub(crate) fn reserve(&self, sale: &str, stock: &Stock, user: u64, now_ms: u64) -> Reservation {
        self.decide(sale, stock, now_ms, |book| {
            book.expire_due(now_ms);
            if let Some(holding) = book.holding(user) {
                return Reservation::AlreadyHeld(holding);
            }
            // Read under the lock, so nothing is held after a pause returns.
            match stock.load().gate {
                Gate::Open => {}
                Gate::Paused => return Reservation::Paused,
                Gate::Closed => return Reservation::Closed,
            }
            match book.reserve(user, now_ms) {
                Reserve::Held {
                    ticket,
                    expires_at_ms,
                } => Reservation::Held {
                    ticket,
                    expires_at_ms,
                },
                Reserve::AlreadyOwned(holding) => Reservation::AlreadyHeld(holding),
                Reserve::SoldOut => Reservation::SoldOut,
            }
        })
    }

    pub(crate) fn hold_of(
        &self,
        sale: &str,
        stock: &Stock,
        user: u64,
        now_ms: u64,
    ) -> Option<holds::Hold> {
        self.decide(sale, stock, now_ms, |book| {
            book.expire_due(now_ms);
            book.holding(user)
        })
    }

    pub(crate) fn confirm(
        &self,
        sale: &str,
        stock: &Stock,
        user: u64,
        payment_ref: &str,
        now_ms: u64,
    ) -> Confirm {
        self.decide(sale, stock, now_ms, |book| {
            book.confirm(user, payment_ref, now_ms)
        })
    }

    pub(crate) fn cancel(&self, sale: &str, stock: &Stock, user: u64, now_ms: u64) -> Release {
        self.decide(sale, stock, now_ms, |book| book.cancel(user, now_ms))
    }

    pub(crate) fn release(&self, sale: &str, stock: &Stock, user: u64, now_ms: u64) -> Release {
        self.decide(sale, stock, now_ms, |book| book.release(user, now_ms))
    }

    pub(crate) fn expire_due(&self, sale: &str, stock: &Stock, now_ms: u64) -> Option<u64> {
        self.decide(sale, stock, now_ms, |book| {
            book.expire_due(now_ms);
            book.next_expiry()
        })
    }

    /// Gives each of the draw's `winners`, in order, the lowest free
    /// ticket as a hold from `now_ms`: tickets 1, 2, ... of a fresh sale.
    pub(crate) fn grant(&self, sale: &str, stock: &Stock, winners: &[u64], now_ms: u64) {
        self.decide(sale, stock, now_ms, |book| {
            for &user in winners {
                let _ = book.reserve(user, now_ms);
            }
        });
    }

    pub(crate) fn apply(&self, stock: &Stock, action: SaleAction) -> bool {
        let _book = self.lock();
        stock.apply(action)
    }

    /// The log has `change` on disk: a hold or confirmation may be answered,
    /// a released ticket goes back on sale.
    pub(crate) fn durable(&self, stock: &Stock, change: &Change) {
        let mut book = self.lock();
        match change {
            Change::Held { ticket, user, .. } | Change::Confirmed { ticket, user, .. } => {
                book.mark_durable(*ticket, *user);
            }
            Change::Released { ticket, .. } => {
                book.release_durable(*ticket);
            }
        }
        stock.mirror(book.counts().remaining);
    }

    /// Runs one decision under the lock, then journals what it changed, in
    /// order, and mirrors the free count, still under the lock.
    fn decide<T>(
        &self,
        sale: &str,
        stock: &Stock,
        now_ms: u64,
        decision: impl FnOnce(&mut HoldBook) -> T,
    ) -> T {
        let mut book = self.lock();
        let answer = decision(&mut book);
        for change in book.drain_changes() {
            self.journal.write(sale, &change, now_ms);
        }
        stock.mirror(book.counts().remaining);
        answer
    }

    fn lock(&self) -> MutexGuard<'_, HoldBook> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
