//! [`Sale`]: one sale's stock and buyers, and the reserve algorithm.

use std::fmt;
use std::sync::Arc;

use super::buyers::{BuyerSet, Claim, SlotState};
use super::draw::{Draw, DrawEvent, DrawPhase, DrawResult, DrawSpec, DrawStatus, Entry};
use super::held::{HeldTickets, Journal};
use super::holds::{self, Change, Confirm, Release};
use super::stock::{Gate, Stock};
use flashsale_protocol::{SaleAction, MAX_SALE_ID_LEN};

use super::draw::MAX_DRAW_WINDOW_MS;
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
    /// `Some`: the first tickets go by a draw among the users who ask in
    /// the window after opening (see `draw`). `None`: first come, first
    /// served from the opening.
    pub draw: Option<DrawSpec>,
}

impl SaleSpec {
    /// A sale without holds.
    pub fn instant(id: impl Into<String>, capacity: u32, opens_at_ms: u64) -> SaleSpec {
        SaleSpec {
            id: id.into(),
            capacity,
            opens_at_ms,
            hold_ms: None,
            draw: None,
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
        if let Some(draw) = &self.draw {
            if !(1..=MAX_DRAW_WINDOW_MS).contains(&draw.window_ms) {
                return Err(CoreError::InvalidDrawWindow {
                    window_ms: draw.window_ms,
                });
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
    /// A sale with a draw, inside its window: the user is in the draw made
    /// at `draws_at_ms`. Answer once `durable`, or once the log has caught
    /// up (the entry is in its queue).
    Entered {
        /// When the draw is made, Unix milliseconds.
        draws_at_ms: u64,
        /// Whether the entry is already on disk.
        durable: bool,
    },
    /// A sale with a draw whose window closed, and whose draw is not yet
    /// made or not yet durable: nothing may be answered about it yet. Ask
    /// again once the log has caught up (after [`Sale::run_draw`] and
    /// [`Sale::publish_draw`]).
    Drawing {
        /// When the draw was due, Unix milliseconds.
        draws_at_ms: u64,
    },
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
    /// The entries and the draw of a sale with a draw window. Boxed: a
    /// sale without one pays a null check on its hot path, not a struct
    /// that spreads its other fields over more cache lines.
    draw: Option<Box<Draw>>,
}

/// What a sale's log holds, to rebuild it from ([`Sale::recover`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct History<'a> {
    /// A sale without holds: `(user, ticket)` of every durable win, drawn
    /// or not, in any order.
    pub sold: &'a [(u64, u32)],
    /// A sale with holds: every change, in log order.
    pub changes: &'a [Change],
    /// A sale with a draw: every entrant, each once.
    pub entrants: &'a [u64],
    /// A sale with a draw: when the draw was made, if its record is there.
    pub drawn_at_ms: Option<u64>,
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
        if spec.hold_ms.is_some() || spec.draw.is_some() {
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
            draw: None,
            spec,
        })
    }

    /// Any sale, rebuilt from what its log holds (nothing, for a new one).
    /// A sale with holds or with a draw writes its later decisions to
    /// `journal`, in the order they are taken, before they are answered.
    ///
    /// A sale whose draw record is in the log gets its draw made again from
    /// the seed and `history.entrants`: the same draw, so its winners must
    /// be among `history`'s wins (the caller appends any a crash cut off
    /// before calling this; see [`Sale::draw_winners`]).
    ///
    /// # Errors
    ///
    /// As [`Sale::restore`] and [`Sale::with_holds`], and
    /// [`CoreError::Replay`] for a drawn winner missing from `sold`.
    pub fn recover(
        spec: SaleSpec,
        history: History<'_>,
        journal: Arc<dyn Journal>,
    ) -> Result<Sale, CoreError> {
        spec.validate()?;
        let draw_spec = spec.draw.clone();
        let mut sale = match spec.hold_ms {
            Some(_) => Sale::with_holds(
                SaleSpec { draw: None, ..spec },
                history.changes,
                journal.clone(),
            )?,
            None => Sale::restore(SaleSpec { draw: None, ..spec }, history.sold)?,
        };
        let Some(draw_spec) = draw_spec else {
            return Ok(sale);
        };
        let draw = Draw::restore(
            draw_spec.clone(),
            sale.spec.opens_at_ms,
            history.entrants,
            journal,
        );
        if let Some(drawn_at_ms) = history.drawn_at_ms {
            let result = Sale::draw_winners(sale.spec.capacity, &draw_spec, history.entrants);
            if let Engine::Instant(_) = &sale.engine {
                for (user, ticket) in result.iter().zip(1..) {
                    if sale.lookup(*user) != (Holding::Durable { ticket }) {
                        return Err(CoreError::Replay {
                            id: sale.spec.id.clone(),
                            reason: format!("drawn winner {user} does not hold ticket {ticket}"),
                        });
                    }
                }
            }
            let mut entrants = history.entrants.to_vec();
            entrants.sort_unstable();
            draw.set_result(
                Arc::new(DrawResult {
                    drawn_at_ms,
                    winners: result,
                    entrants,
                }),
                DrawPhase::Published,
            );
        }
        sale.spec.draw = Some(draw_spec);
        sale.draw = Some(Box::new(draw));
        Ok(sale)
    }

    /// The winners of the draw `draw` among `entrants` for `capacity`
    /// tickets, in ticket order: what a restart must find in the log.
    pub fn draw_winners(capacity: u32, draw: &DrawSpec, entrants: &[u64]) -> Vec<u64> {
        flashsale_draw::winners(&draw.seed, entrants, capacity)
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
        if spec.draw.is_some() {
            let history = History {
                changes,
                ..History::default()
            };
            return Sale::recover(spec, history, journal);
        }
        let held = HeldTickets::restore(&spec, hold_ms, changes, journal)?;
        let stock = Stock::fresh(spec.capacity);
        stock.mirror(held.remaining());
        Ok(Sale {
            stock,
            engine: Engine::Holds(held),
            draw: None,
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
        if let Some(draw) = self.draw.as_deref() {
            if draw.phase() != DrawPhase::Published {
                return self.reserve_in_draw(draw, user, now_ms);
            }
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

    /// A reservation in a sale whose draw is not published: an entry inside
    /// the window, and nothing to say after it until the draw is durable.
    #[cold]
    fn reserve_in_draw(&self, draw: &Draw, user: u64, now_ms: u64) -> Reservation {
        let draws_at_ms = draw.draws_at_ms();
        if now_ms >= draws_at_ms {
            return Reservation::Drawing { draws_at_ms };
        }
        let gate = self.stock.load().gate;
        let entry = match gate {
            Gate::Open => draw.enter(&self.spec.id, user, now_ms),
            // An entrant still learns their entry while the sale is paused.
            Gate::Paused | Gate::Closed => draw.entry_of(user),
        };
        match (entry, gate) {
            (Some(entry), _) => Reservation::Entered {
                draws_at_ms,
                durable: entry.durable,
            },
            (None, Gate::Paused) => Reservation::Paused,
            (None, Gate::Closed) => Reservation::Closed,
            // The draw was made between the clock read and the lock.
            (None, Gate::Open) => Reservation::Drawing { draws_at_ms },
        }
    }

    /// A sale with a draw: makes the draw at `now_ms`, if it is due and not
    /// yet made. Under the draw's lock it journals the draw, then gives each
    /// winner their ticket (journalled as a sale or a hold); the result is
    /// not answered to anyone until the caller saw the log durable up to
    /// here and called [`Sale::publish_draw`]. `None` if the sale has no
    /// draw, the draw is not due, or it was already made.
    pub fn run_draw(&self, now_ms: u64) -> Option<Arc<DrawResult>> {
        let draw = self.draw.as_ref()?;
        let id = self.spec.id.as_str();
        draw.run(id, self.spec.capacity, now_ms, |winners, journal| {
            match &self.engine {
                Engine::Instant(buyers) => {
                    for &user in winners {
                        // Nothing claimed a slot or took stock before the
                        // draw: every winner gets the next ticket, 1, 2, ...
                        let Claim::Claimed(slot) = buyers.claim(user) else {
                            continue;
                        };
                        let Some(ticket) = self.stock.take() else {
                            slot.publish(SlotState::NoTicket);
                            continue;
                        };
                        slot.publish(SlotState::Pending(ticket));
                        journal.draw(id, &DrawEvent::Won { user, ticket }, now_ms);
                    }
                }
                Engine::Holds(held) => held.grant(id, &self.stock, winners, now_ms),
            }
        })
    }

    /// A sale with a draw: the log has everything [`Sale::run_draw`]
    /// journalled on disk, so the draw is public from now on. False if no
    /// draw was made.
    pub fn publish_draw(&self) -> bool {
        self.draw.as_deref().is_some_and(Draw::publish)
    }

    /// A sale with a draw: `user`'s entry, if they entered.
    pub fn entry_of(&self, user: u64) -> Option<Entry> {
        self.draw.as_ref()?.entry_of(user)
    }

    /// A sale with a draw: the log has `user`'s entry on disk.
    pub fn entry_durable(&self, user: u64) {
        if let Some(draw) = &self.draw {
            draw.entry_durable(user);
        }
    }

    /// A sale with a draw: its public facts (the seed once published).
    pub fn draw_status(&self) -> Option<DrawStatus> {
        self.draw.as_deref().map(Draw::status)
    }

    /// A sale with a draw: the draw, once published.
    pub fn draw_result(&self) -> Option<Arc<DrawResult>> {
        self.draw.as_ref()?.published()
    }

    /// A sale with a draw: where the draw stands.
    pub fn draw_phase(&self) -> Option<DrawPhase> {
        self.draw.as_deref().map(Draw::phase)
    }

    /// A sale with a draw: when entries close and the draw is due.
    pub fn draws_at_ms(&self) -> Option<u64> {
        self.draw.as_deref().map(Draw::draws_at_ms)
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
            draw: None,
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
