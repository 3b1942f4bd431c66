//! [`Sale`]: one sale's stock and buyers, and the reserve algorithm.

use std::fmt;
use std::sync::Arc;

use super::buyers::{BuyerSet, Claim, SlotState};
use super::held::{HeldTickets, Journal};
use super::holds::{self, Change, Confirm, Release};
use super::stock::{Gate, Stock};
use flashsale_protocol::{SaleAction, MAX_SALE_ID_LEN};

use super::CoreError;

/// Largest capacity a sale accepts.
///
/// Tickets must stay below bit 31 of a buyer slot (the durable flag), and the
/// buyer set is allocated up front: 16-byte slots, two to four per ticket (at
/// most about 640 MiB at this maximum, so a typo in a capacity cannot exhaust
/// memory).
pub const MAX_CAPACITY: u32 = 10_000_000;

/// Latest opening time a sale accepts, Unix milliseconds: the last
/// millisecond of the year 9999, the last instant RFC 3339 (and so the
/// HTTP API and the export) can write. A later one is a typo, not a date.
pub const MAX_OPENS_AT_MS: u64 = 253_402_300_799_999;

/// Longest hold a sale accepts: a week, in milliseconds.
pub const MAX_HOLD_MS: u64 = 7 * 24 * 3600 * 1000;

/// What a sale is: its id, how many tickets, when it opens, and whether a win
/// is a hold to be paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleSpec {
    /// Unique id, 1..=[`MAX_SALE_ID_LEN`] bytes (the wire's limit, so every
    /// sale the core holds can be named in a request).
    pub id: String,
    /// Number of tickets, 1..=[`MAX_CAPACITY`]; tickets are `1..=capacity`.
    pub capacity: u32,
    /// Unix time in milliseconds from which reservations are accepted.
    pub opens_at_ms: u64,
    /// `Some(ms)`: a win is a hold for `ms` milliseconds (1..=[`MAX_HOLD_MS`])
    /// until the shop confirms it paid. `None`: a win is final.
    pub hold_ms: Option<u64>,
}

impl SaleSpec {
    /// A sale without holds.
    pub fn instant(id: impl Into<String>, capacity: u32, opens_at_ms: u64) -> SaleSpec {
        SaleSpec {
            id: id.into(),
            capacity,
            opens_at_ms,
            hold_ms: None,
        }
    }

    /// Checks the capacity, the id and the hold against the core's limits.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidCapacity`], [`CoreError::InvalidId`],
    /// [`CoreError::InvalidOpening`] or [`CoreError::InvalidHold`].
    pub fn validate(&self) -> Result<(), CoreError> {
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return Err(CoreError::InvalidCapacity {
                capacity: self.capacity,
            });
        }
        if self.id.is_empty() || self.id.len() > MAX_SALE_ID_LEN {
            return Err(CoreError::InvalidId { len: self.id.len() });
        }
        if self.opens_at_ms > MAX_OPENS_AT_MS {
            return Err(CoreError::InvalidOpening {
                opens_at_ms: self.opens_at_ms,
            });
        }
        if let Some(hold_ms) = self.hold_ms {
            if !(1..=MAX_HOLD_MS).contains(&hold_ms) {
                return Err(CoreError::InvalidHold { hold_ms });
            }
        }
        Ok(())
    }
}

/// The answer to one reservation attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a `Won` must be logged and then marked durable; a `Held` answered once durable"]
pub enum Reservation {
    /// This request took `ticket`. The caller must log the win and call
    /// [`Sale::mark_durable`] once the log has it on disk.
    Won {
        /// The ticket, in `1..=capacity`.
        ticket: u32,
    },
    /// The user already holds `ticket` (from an earlier or concurrent request).
    AlreadyOwned {
        /// The user's ticket.
        ticket: u32,
        /// Whether the win is already on disk.
        durable: bool,
    },
    /// A sale with holds: this request took `ticket` as a hold. The hold is in
    /// the journal; answer once the log has it on disk.
    Held {
        /// The ticket.
        ticket: u32,
        /// The payment deadline, Unix milliseconds.
        expires_at_ms: u64,
    },
    /// A sale with holds: the user already holds or owns a ticket.
    AlreadyHeld(holds::Hold),
    /// Every ticket is taken, and none by this user.
    SoldOut,
    /// The sale has not opened yet.
    NotOpen {
        /// When it opens, Unix milliseconds.
        opens_at_ms: u64,
    },
    /// The operator paused the sale.
    Paused,
    /// The operator closed the sale.
    Closed,
    /// The buyer set had no room for this user; the request may be retried.
    Busy,
}

/// What a user holds in a sale without holds, as seen by [`Sale::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// No ticket (or a request of theirs is still deciding).
    None,
    /// A ticket whose win is not yet on disk.
    Pending {
        /// The ticket.
        ticket: u32,
    },
    /// A ticket whose win is on disk.
    Durable {
        /// The ticket.
        ticket: u32,
    },
}

/// Phase of a sale at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleState {
    /// Not open yet.
    Upcoming,
    /// Open with tickets left.
    Open,
    /// Paused by the operator.
    Paused,
    /// Open, and every ticket is taken (in a sale with holds, some may come
    /// back).
    SoldOut,
    /// Closed by the operator, for good.
    Closed,
}

/// A snapshot of a sale's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleStatus {
    /// Tickets in total.
    pub capacity: u32,
    /// Tickets on sale.
    pub remaining: u32,
    /// Tickets taken, durable or not: `capacity - remaining`. In a sale with
    /// holds this counts held, confirmed and releasing tickets.
    pub sold: u32,
    /// Tickets held, unpaid (0 in a sale without holds).
    pub held: u32,
    /// Tickets paid (0 in a sale without holds).
    pub confirmed: u32,
    /// Phase at the time asked.
    pub state: SaleState,
    /// When the sale opens, Unix milliseconds.
    pub opens_at_ms: u64,
}

/// Why an operation of a sale with holds does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// The sale sells final tickets, not holds.
    #[error("the sale has no holds")]
    NoHolds,
}

/// One sale: a fixed stock of tickets, at most one per user.
///
/// Every method takes `&self`; share it as `Arc<Sale>`. A sale without holds
/// never locks; a sale with holds decides under one lock (see `held`).
pub struct Sale {
    spec: SaleSpec,
    stock: Stock,
    engine: Engine,
}

/// How the sale's tickets are kept.
enum Engine {
    /// Wins are final: the lock-free buyer set over `stock`.
    Instant(BuyerSet),
    /// Wins are holds: the hold book, with `stock` mirroring its free count.
    Holds(HeldTickets),
}

impl Sale {
    /// A fresh sale without holds, every ticket free.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidCapacity`] or [`CoreError::InvalidId`] for a bad
    /// spec, and [`CoreError::NeedsJournal`] for a spec with holds (use
    /// [`Sale::with_holds`]).
    pub fn new(spec: SaleSpec) -> Result<Sale, CoreError> {
        Sale::restore(spec, &[])
    }

    /// A sale without holds recovered from the log: `sold` lists the durable
    /// `(user, ticket)` wins, in any order. Their users own their tickets
    /// (durable), and the free tickets are sold next in increasing order,
    /// filling any gaps.
    ///
    /// # Errors
    ///
    /// As [`Sale::new`], plus [`CoreError::TicketOutOfRange`],
    /// [`CoreError::DuplicateTicket`] and [`CoreError::DuplicateUser`] for an
    /// inconsistent `sold` list.
    pub fn restore(spec: SaleSpec, sold: &[(u64, u32)]) -> Result<Sale, CoreError> {
        spec.validate()?;
        if spec.hold_ms.is_some() {
            return Err(CoreError::NeedsJournal { id: spec.id });
        }
        let capacity = spec.capacity;
        let mut taken = vec![false; capacity as usize + 1];
        for &(_, ticket) in sold {
            if !(1..=capacity).contains(&ticket) {
                return Err(CoreError::TicketOutOfRange { ticket, capacity });
            }
            if std::mem::replace(&mut taken[ticket as usize], true) {
                return Err(CoreError::DuplicateTicket { ticket });
            }
        }
        let free: Vec<u32> = (1..=capacity).filter(|&t| !taken[t as usize]).collect();
        drop(taken);
        let buyers = BuyerSet::for_capacity(capacity);
        for &(user, ticket) in sold {
            match buyers.claim(user) {
                Claim::Claimed(slot) => slot.publish(SlotState::Durable(ticket)),
                Claim::Existing(_) => return Err(CoreError::DuplicateUser { user }),
                Claim::Full => return Err(CoreError::BuyerSetFull { user }),
            }
        }
        Ok(Sale {
            stock: Stock::with_free(free),
            engine: Engine::Instant(buyers),
            spec,
        })
    }

    /// A sale with holds, rebuilt from the `changes` its log holds (none for a
    /// new sale), in log order. Every later decision goes to `journal`, in the
    /// order it is taken, before it is answered.
    ///
    /// # Errors
    ///
    /// As [`Sale::new`]; [`CoreError::NoHolds`] for a spec without holds;
    /// [`CoreError::Replay`] for a change that does not fit the state before it.
    pub fn with_holds(
        spec: SaleSpec,
        changes: &[Change],
        journal: Arc<dyn Journal>,
    ) -> Result<Sale, CoreError> {
        spec.validate()?;
        let Some(hold_ms) = spec.hold_ms else {
            return Err(CoreError::NoHolds { id: spec.id });
        };
        let held = HeldTickets::restore(&spec, hold_ms, changes, journal)?;
        let stock = Stock::fresh(spec.capacity);
        stock.mirror(held.remaining());
        Ok(Sale {
            stock,
            engine: Engine::Holds(held),
            spec,
        })
    }

    /// Tries to give `user` a ticket at time `now_ms` (Unix milliseconds).
    ///
    /// Without holds this is lock-free; see the [module docs](super) for why
    /// the steps come in this order. Once the sale is sold out, paused or
    /// closed, it does not write to shared memory.
    pub fn reserve(&self, user: u64, now_ms: u64) -> Reservation {
        if now_ms < self.spec.opens_at_ms {
            return Reservation::NotOpen {
                opens_at_ms: self.spec.opens_at_ms,
            };
        }
        let buyers = match &self.engine {
            Engine::Instant(buyers) => buyers,
            Engine::Holds(held) => return held.reserve(&self.spec.id, &self.stock, user, now_ms),
        };
        // Stock first, buyers second: a zero read here happens-after every
        // winner's claim, so if this user won, `find` below sees it.
        let stock = self.stock.load();
        if let Some(slot) = buyers.find(user) {
            return answer(slot.resolve());
        }
        match stock.gate {
            Gate::Open => {}
            Gate::Paused => return Reservation::Paused,
            Gate::Closed => return Reservation::Closed,
        }
        if stock.remaining == 0 {
            return Reservation::SoldOut;
        }
        let slot = match buyers.claim(user) {
            Claim::Claimed(slot) => slot,
            Claim::Existing(slot) => return answer(slot.resolve()),
            Claim::Full => return Reservation::Busy,
        };
        // From here to `publish`, nothing can block or panic: waiters on
        // this slot rely on it being resolved promptly.
        match self.stock.take() {
            Some(ticket) => {
                slot.publish(SlotState::Pending(ticket));
                Reservation::Won { ticket }
            }
            None => {
                slot.publish(SlotState::NoTicket);
                Reservation::SoldOut
            }
        }
    }

    /// What `user` holds right now in a sale without holds (see
    /// [`Sale::hold_of`] for one with). Does not wait for an undecided request.
    pub fn lookup(&self, user: u64) -> Holding {
        let Engine::Instant(buyers) = &self.engine else {
            return Holding::None;
        };
        match buyers.find(user).map(|slot| slot.state()) {
            Some(SlotState::Pending(ticket)) => Holding::Pending { ticket },
            Some(SlotState::Durable(ticket)) => Holding::Durable { ticket },
            Some(SlotState::Claiming | SlotState::NoTicket) | None => Holding::None,
        }
    }

    /// Records that `user`'s win is on disk; called by the log writer after
    /// its sync. Returns false if the user holds no ticket (a caller bug).
    pub fn mark_durable(&self, user: u64) -> bool {
        let Engine::Instant(buyers) = &self.engine else {
            return false;
        };
        let Some(slot) = buyers.find(user) else {
            return false;
        };
        match slot.state() {
            SlotState::Durable(_) => true,
            pending @ SlotState::Pending(ticket) => {
                slot.replace(pending, SlotState::Durable(ticket))
                    || matches!(slot.state(), SlotState::Durable(_))
            }
            SlotState::Claiming | SlotState::NoTicket => false,
        }
    }

    /// The operator pauses, resumes or closes the sale. The caller logs the
    /// change first. Returns false, changing nothing, once the sale is closed.
    ///
    /// Pausing and closing refuse every reservation that reads the gate
    /// afterwards. In a sale without holds, a request that read it open an
    /// instant before and already claimed its buyer slot still finishes (at
    /// most one request per thread); in a sale with holds the gate is read
    /// under the book's lock, so nothing is sold after the call returns.
    pub fn apply(&self, action: SaleAction) -> bool {
        match &self.engine {
            Engine::Instant(_) => self.stock.apply(action),
            Engine::Holds(held) => held.apply(&self.stock, action),
        }
    }

    /// A sale with holds: where `user`'s ticket stands, as of `now_ms`.
    ///
    /// # Errors
    ///
    /// [`HoldError::NoHolds`] for a sale without holds.
    pub fn hold_of(&self, user: u64, now_ms: u64) -> Result<Option<holds::Hold>, HoldError> {
        Ok(self
            .held()?
            .hold_of(&self.spec.id, &self.stock, user, now_ms))
    }

    /// A sale with holds: the shop confirms `user`'s hold as paid.
    ///
    /// # Errors
    ///
    /// [`HoldError::NoHolds`] for a sale without holds.
    pub fn confirm(&self, user: u64, payment_ref: &str, now_ms: u64) -> Result<Confirm, HoldError> {
        Ok(self
            .held()?
            .confirm(&self.spec.id, &self.stock, user, payment_ref, now_ms))
    }

    /// A sale with holds: the buyer gives up their hold.
    ///
    /// # Errors
    ///
    /// [`HoldError::NoHolds`] for a sale without holds.
    pub fn cancel(&self, user: u64, now_ms: u64) -> Result<Release, HoldError> {
        Ok(self
            .held()?
            .cancel(&self.spec.id, &self.stock, user, now_ms))
    }

    /// A sale with holds: the operator releases `user`'s held or confirmed
    /// ticket.
    ///
    /// # Errors
    ///
    /// [`HoldError::NoHolds`] for a sale without holds.
    pub fn release(&self, user: u64, now_ms: u64) -> Result<Release, HoldError> {
        Ok(self
            .held()?
            .release(&self.spec.id, &self.stock, user, now_ms))
    }

    /// A sale with holds: expires every hold due at `now_ms` and returns when
    /// the next one is due. `None` for a sale without holds, or no hold.
    pub fn expire_due(&self, now_ms: u64) -> Option<u64> {
        match &self.engine {
            Engine::Instant(_) => None,
            Engine::Holds(held) => held.expire_due(&self.spec.id, &self.stock, now_ms),
        }
    }

    /// A sale with holds: the log has a change on disk. Called by the log
    /// writer after its sync, for every change the journal was given.
    pub fn change_durable(&self, change: &Change) {
        if let Engine::Holds(held) = &self.engine {
            held.durable(&self.stock, change);
        }
    }

    /// The sale's counters as of now, with its phase at `now_ms`.
    pub fn status(&self, now_ms: u64) -> SaleStatus {
        let stock = self.stock.load();
        let (held, confirmed) = match &self.engine {
            Engine::Instant(_) => (0, 0),
            Engine::Holds(tickets) => {
                let counts = tickets.counts();
                (counts.held, counts.confirmed)
            }
        };
        let state = match stock.gate {
            Gate::Closed => SaleState::Closed,
            Gate::Paused => SaleState::Paused,
            Gate::Open if now_ms < self.spec.opens_at_ms => SaleState::Upcoming,
            Gate::Open if stock.remaining == 0 => SaleState::SoldOut,
            Gate::Open => SaleState::Open,
        };
        SaleStatus {
            capacity: self.spec.capacity,
            remaining: stock.remaining,
            sold: self.spec.capacity - stock.remaining,
            held,
            confirmed,
            state,
            opens_at_ms: self.spec.opens_at_ms,
        }
    }

    /// The spec this sale was built from.
    pub fn spec(&self) -> &SaleSpec {
        &self.spec
    }

    /// Number of users with a buyer entry: winners plus claims that lost the
    /// last tickets (0 in a sale with holds). Scans the whole buyer set, so it
    /// is for tests and diagnostics, not the request path.
    pub fn buyer_entries(&self) -> usize {
        match &self.engine {
            Engine::Instant(buyers) => buyers.len(),
            Engine::Holds(_) => 0,
        }
    }

    fn held(&self) -> Result<&HeldTickets, HoldError> {
        match &self.engine {
            Engine::Holds(held) => Ok(held),
            Engine::Instant(_) => Err(HoldError::NoHolds),
        }
    }
}

/// The answer for a user whose slot was already claimed and is now decided.
fn answer(state: SlotState) -> Reservation {
    match state {
        SlotState::Pending(ticket) => Reservation::AlreadyOwned {
            ticket,
            durable: false,
        },
        SlotState::Durable(ticket) => Reservation::AlreadyOwned {
            ticket,
            durable: true,
        },
        // `resolve` never returns `Claiming`; a lost claim means sold out.
        SlotState::Claiming | SlotState::NoTicket => Reservation::SoldOut,
    }
}

impl fmt::Debug for Sale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sale")
            .field("spec", &self.spec)
            .field("remaining", &self.stock.remaining())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    fn spec(capacity: u32) -> SaleSpec {
        SaleSpec::instant("s", capacity, 1_000)
    }

    fn won(r: Reservation) -> u32 {
        match r {
            Reservation::Won { ticket } => ticket,
            other => panic!("expected Won, got {other:?}"),
        }
    }

    #[test]
    fn spec_validation() {
        let bad = |capacity, id: &str| Sale::new(SaleSpec::instant(id, capacity, 0)).unwrap_err();
        assert_eq!(bad(0, "a"), CoreError::InvalidCapacity { capacity: 0 });
        assert_eq!(
            bad(MAX_CAPACITY + 1, "a"),
            CoreError::InvalidCapacity {
                capacity: MAX_CAPACITY + 1
            }
        );
        assert_eq!(bad(1, ""), CoreError::InvalidId { len: 0 });
        assert_eq!(bad(1, &"x".repeat(65)), CoreError::InvalidId { len: 65 });
        assert!(Sale::new(SaleSpec::instant("x".repeat(64), 1, 0)).is_ok());
        assert!(Sale::new(SaleSpec::instant("a", 1, MAX_OPENS_AT_MS)).is_ok());
        assert_eq!(
            Sale::new(SaleSpec::instant("a", 1, u64::MAX)).unwrap_err(),
            CoreError::InvalidOpening {
                opens_at_ms: u64::MAX
            }
        );
    }

    #[test]
    fn not_open_before_opens_at() {
        let sale = Sale::new(spec(2)).unwrap();
        assert_eq!(
            sale.reserve(1, 999),
            Reservation::NotOpen { opens_at_ms: 1_000 }
        );
        assert_eq!(sale.status(999).state, SaleState::Upcoming);
        assert_eq!(sale.buyer_entries(), 0);
        assert_eq!(won(sale.reserve(1, 1_000)), 1);
    }

    #[test]
    fn sequential_sale_and_retries() {
        let sale = Sale::new(spec(2)).unwrap();
        assert_eq!(won(sale.reserve(u64::MAX, 1_000)), 1);
        assert_eq!(
            sale.reserve(u64::MAX, 1_001),
            Reservation::AlreadyOwned {
                ticket: 1,
                durable: false
            }
        );
        assert_eq!(won(sale.reserve(0, 1_000)), 2);
        assert_eq!(sale.reserve(7, 1_000), Reservation::SoldOut);
        assert_eq!(sale.lookup(0), Holding::Pending { ticket: 2 });
        assert!(sale.mark_durable(0));
        assert!(sale.mark_durable(0));
        assert!(!sale.mark_durable(7));
        assert_eq!(sale.lookup(0), Holding::Durable { ticket: 2 });
        assert_eq!(
            sale.reserve(0, 1_000),
            Reservation::AlreadyOwned {
                ticket: 2,
                durable: true
            }
        );
        assert_eq!(sale.lookup(7), Holding::None);
        let status = sale.status(2_000);
        assert_eq!((status.remaining, status.sold), (0, 2));
        assert_eq!(status.state, SaleState::SoldOut);
    }

    #[test]
    fn restore_fills_gaps_in_order() {
        let sale = Sale::restore(spec(6), &[(10, 5), (0, 2), (u64::MAX, 3)]).unwrap();
        assert_eq!(sale.lookup(0), Holding::Durable { ticket: 2 });
        assert_eq!(sale.lookup(u64::MAX), Holding::Durable { ticket: 3 });
        assert_eq!(
            sale.reserve(10, 1_000),
            Reservation::AlreadyOwned {
                ticket: 5,
                durable: true
            }
        );
        let status = sale.status(1_000);
        assert_eq!((status.remaining, status.sold), (3, 3));
        let tickets: Vec<u32> = (20..23).map(|u| won(sale.reserve(u, 1_000))).collect();
        assert_eq!(tickets, [1, 4, 6]);
        assert_eq!(sale.reserve(23, 1_000), Reservation::SoldOut);
    }

    #[test]
    fn restore_of_a_sold_out_sale() {
        let sale = Sale::restore(spec(2), &[(1, 2), (2, 1)]).unwrap();
        assert_eq!(sale.status(1_000).state, SaleState::SoldOut);
        assert_eq!(sale.reserve(3, 1_000), Reservation::SoldOut);
        assert_eq!(sale.buyer_entries(), 2);
    }

    #[test]
    fn restore_validation() {
        let err = |sold: &[(u64, u32)]| Sale::restore(spec(3), sold).unwrap_err();
        assert_eq!(
            err(&[(1, 0)]),
            CoreError::TicketOutOfRange {
                ticket: 0,
                capacity: 3
            }
        );
        assert_eq!(
            err(&[(1, 4)]),
            CoreError::TicketOutOfRange {
                ticket: 4,
                capacity: 3
            }
        );
        assert_eq!(
            err(&[(1, 2), (2, 2)]),
            CoreError::DuplicateTicket { ticket: 2 }
        );
        assert_eq!(err(&[(0, 1), (0, 2)]), CoreError::DuplicateUser { user: 0 });
        assert_eq!(
            err(&[(u64::MAX, 1), (u64::MAX, 3)]),
            CoreError::DuplicateUser { user: u64::MAX }
        );
        assert!(Sale::restore(SaleSpec::instant("", 3, 0), &[]).is_err());
    }

    #[test]
    fn full_buyer_set_answers_busy() {
        let sale = Sale {
            spec: spec(10),
            stock: Stock::fresh(10),
            engine: Engine::Instant(BuyerSet::with_geometry(1, 2, 1)),
        };
        assert_eq!(won(sale.reserve(1, 1_000)), 1);
        assert_eq!(won(sale.reserve(2, 1_000)), 2);
        assert_eq!(sale.reserve(3, 1_000), Reservation::Busy);
        assert_eq!(sale.status(1_000).remaining, 8);
        assert!(matches!(
            sale.reserve(2, 1_000),
            Reservation::AlreadyOwned { ticket: 2, .. }
        ));
    }
}
