//! [`HoldBook`]: the tickets of a sale sold with a payment deadline.
//!
//! In a sale with holds a win is not final. The winner *holds* a ticket until
//! its `expires_at`; the shop confirms it once paid; a hold that expires or
//! that its buyer cancels goes back on sale, and the operator can release any
//! held or confirmed ticket (a refund). Stock therefore comes back, and the
//! lock-free core's invariant "a stock once zero stays zero" does not hold
//! here. This book is the state machine for such a sale, and it is plain data:
//! the caller keeps it behind one lock and every decision is taken under it.
//!
//! # Invariants
//!
//! Every ticket `1..=capacity` is in exactly one state:
//!
//! - **free**: on sale, in `free`;
//! - **held** by one user until `expires_at`, with an entry in `expiries`;
//! - **confirmed** for one user with a payment reference;
//! - **releasing**: a release (expiry, cancel or operator release) has been
//!   decided and is on its way to the log. It is offered again only once the
//!   caller reports the release durable ([`HoldBook::release_durable`]).
//!
//! A user has at most one held or confirmed ticket (`by_user`), and a held or
//! confirmed ticket has exactly one user. `remaining` is the number of free
//! tickets. [`HoldBook::check`] verifies all of this, and the property tests
//! drive random operations through it; `tests/holds_stress.rs` checks from
//! many threads that returned stock stays linearizable (one holder per
//! ticket at a time, "sold out" only when no ticket is free), and the loom
//! models check the races of a pause and of a confirm against an expiry.
//!
//! # Decisions are logged in the order they are taken
//!
//! Each operation that changes state appends [`Change`]s to an outbox, and the
//! caller drains it ([`HoldBook::drain_changes`]) under the same lock and
//! queues the changes on the write-ahead log in that order. The log therefore
//! replays to the state the book was in, and a change that depends on an
//! earlier one (a ticket held again after it expired) is never on disk without
//! it. A hold or a confirm is answered only once its change is durable; a
//! released ticket is offered again only once its release is durable, so an
//! expiry is always logged before someone else can hold its ticket.
//!
//! # The races
//!
//! Confirm against expiry, confirm against cancel, cancel against expiry, and a
//! returned ticket against new reservations are all decided here, under the
//! caller's lock, in one order. Time is an argument: every operation first
//! expires the holds whose deadline is at or before `now`, so a confirm that
//! arrives after its deadline is answered [`Confirm::Expired`] even when no
//! sweep has run yet, and never confirms a ticket someone else may hold.

use std::collections::{BTreeSet, HashMap};

pub use flashsale_protocol::ReleaseReason;

/// The reference the payment provider gave a confirmed ticket.
pub type PaymentRef = Box<str>;

/// A state change to log, in the order it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `user` now holds `ticket` until `expires_at_ms`.
    Held {
        /// The ticket.
        ticket: u32,
        /// Its holder.
        user: u64,
        /// The payment deadline, Unix milliseconds.
        expires_at_ms: u64,
    },
    /// `user`'s hold on `ticket` is paid.
    Confirmed {
        /// The ticket.
        ticket: u32,
        /// Its holder.
        user: u64,
        /// The payment reference.
        payment_ref: PaymentRef,
    },
    /// `ticket` left `user` and goes back on sale once this is durable.
    Released {
        /// The ticket.
        ticket: u32,
        /// Its former holder.
        user: u64,
        /// Why.
        reason: ReleaseReason,
    },
}

/// Where a user's ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    /// Held, to be paid by `expires_at_ms`.
    Held {
        /// The payment deadline, Unix milliseconds.
        expires_at_ms: u64,
    },
    /// Paid.
    Confirmed,
}

/// A user's ticket: which, its status, and whether its change is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The ticket.
    pub ticket: u32,
    /// Held or confirmed.
    pub status: HoldStatus,
    /// Whether the change that gave this status is durable. An answer that
    /// promises the status waits until it is.
    pub durable: bool,
}

/// The answer to a reservation in a sale with holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a new hold must be logged before it is answered"]
pub enum Reserve {
    /// A new hold: [`Change::Held`] is in the outbox.
    Held {
        /// The ticket.
        ticket: u32,
        /// The payment deadline, Unix milliseconds.
        expires_at_ms: u64,
    },
    /// The user already holds or owns a ticket.
    AlreadyOwned(Hold),
    /// No ticket is free (some may come back).
    SoldOut,
}

/// The answer to a payment confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a confirmation must be logged before it is answered"]
pub enum Confirm {
    /// Confirmed now, or earlier with the same reference. `durable` false:
    /// answer once the confirmation is on disk.
    Confirmed {
        /// The ticket.
        ticket: u32,
        /// Whether the confirmation is on disk.
        durable: bool,
    },
    /// The ticket is confirmed with another payment reference.
    OtherReference {
        /// The ticket.
        ticket: u32,
    },
    /// The user's hold expired, or was cancelled or released, and the user
    /// holds nothing now.
    Expired,
    /// The user never held a ticket in this sale.
    NoHold,
}

/// The answer to a buyer's cancel or an operator's release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a release must be logged before it is answered"]
pub enum Release {
    /// Released now: [`Change::Released`] is in the outbox.
    Released {
        /// The ticket that goes back on sale.
        ticket: u32,
    },
    /// A buyer cannot cancel a paid ticket (the operator can release it).
    Confirmed {
        /// The ticket.
        ticket: u32,
    },
    /// The user holds nothing (never did, or it already ended).
    NoHold,
}

/// Counters of a sale with holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HoldCounts {
    /// Tickets on sale.
    pub remaining: u32,
    /// Tickets held, unpaid.
    pub held: u32,
    /// Tickets paid.
    pub confirmed: u32,
    /// Tickets released, waiting for the log before going back on sale.
    pub releasing: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ticket {
    Free,
    Held {
        user: u64,
        expires_at_ms: u64,
        durable: bool,
    },
    Confirmed {
        user: u64,
        payment_ref: PaymentRef,
        durable: bool,
    },
    Releasing,
}

/// The tickets of one sale with holds. Plain data: keep it behind a lock.
#[derive(Debug, Clone)]
pub struct HoldBook {
    hold_ms: u64,
    /// Index `t` is ticket `t`; index 0 is unused.
    tickets: Vec<Ticket>,
    /// Free tickets, sold lowest first.
    free: BTreeSet<u32>,
    /// The held or confirmed ticket of each user.
    by_user: HashMap<u64, u32>,
    /// Held tickets by deadline.
    expiries: BTreeSet<(u64, u32)>,
    /// Users whose last ticket ended without staying confirmed, so that a
    /// late confirmation is answered "expired" rather than "no hold".
    lapsed: BTreeSet<u64>,
    counts: HoldCounts,
    outbox: Vec<Change>,
}

impl HoldBook {
    /// A book with every ticket `1..=capacity` free and holds of `hold_ms`.
    pub fn new(capacity: u32, hold_ms: u64) -> HoldBook {
        let mut tickets = vec![Ticket::Free; capacity as usize + 1];
        tickets[0] = Ticket::Releasing;
        HoldBook {
            hold_ms,
            tickets,
            free: (1..=capacity).collect(),
            by_user: HashMap::new(),
            expiries: BTreeSet::new(),
            lapsed: BTreeSet::new(),
            counts: HoldCounts {
                remaining: capacity,
                ..HoldCounts::default()
            },
            outbox: Vec::new(),
        }
    }

    /// The length of a hold, milliseconds.
    pub fn hold_ms(&self) -> u64 {
        self.hold_ms
    }

    /// The sale's counters.
    pub fn counts(&self) -> HoldCounts {
        self.counts
    }

    /// What `user` holds, as of the last operation.
    pub fn holding(&self, user: u64) -> Option<Hold> {
        let ticket = *self.by_user.get(&user)?;
        match &self.tickets[ticket as usize] {
            Ticket::Held {
                expires_at_ms,
                durable,
                ..
            } => Some(Hold {
                ticket,
                status: HoldStatus::Held {
                    expires_at_ms: *expires_at_ms,
                },
                durable: *durable,
            }),
            Ticket::Confirmed { durable, .. } => Some(Hold {
                ticket,
                status: HoldStatus::Confirmed,
                durable: *durable,
            }),
            Ticket::Free | Ticket::Releasing => None,
        }
    }

    /// The earliest deadline of a hold, if any: when to sweep next.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|&(at, _)| at)
    }

    /// Takes the changes decided since the last drain, oldest first.
    pub fn drain_changes(&mut self) -> std::vec::Drain<'_, Change> {
        self.outbox.drain(..)
    }

    /// Expires every hold whose deadline is at or before `now_ms`.
    pub fn expire_due(&mut self, now_ms: u64) {
        while let Some(&(at, ticket)) = self.expiries.first() {
            if at > now_ms {
                break;
            }
            self.expiries.pop_first();
            if let Ticket::Held { user, .. } = self.tickets[ticket as usize] {
                self.release_ticket(ticket, user, ReleaseReason::Expired);
            }
        }
    }

    /// A reservation by `user` at `now_ms`.
    pub fn reserve(&mut self, user: u64, now_ms: u64) -> Reserve {
        self.expire_due(now_ms);
        if let Some(holding) = self.holding(user) {
            return Reserve::AlreadyOwned(holding);
        }
        let Some(ticket) = self.free.pop_first() else {
            return Reserve::SoldOut;
        };
        let expires_at_ms = now_ms.saturating_add(self.hold_ms);
        self.hold(ticket, user, expires_at_ms, false);
        self.outbox.push(Change::Held {
            ticket,
            user,
            expires_at_ms,
        });
        Reserve::Held {
            ticket,
            expires_at_ms,
        }
    }

    /// The shop confirms `user`'s hold as paid with `payment_ref` at `now_ms`.
    /// Idempotent by user and reference.
    pub fn confirm(&mut self, user: u64, payment_ref: &str, now_ms: u64) -> Confirm {
        self.expire_due(now_ms);
        let Some(&ticket) = self.by_user.get(&user) else {
            return if self.lapsed.contains(&user) {
                Confirm::Expired
            } else {
                Confirm::NoHold
            };
        };
        let slot = &mut self.tickets[ticket as usize];
        match slot {
            Ticket::Held { expires_at_ms, .. } => {
                self.expiries.remove(&(*expires_at_ms, ticket));
                *slot = Ticket::Confirmed {
                    user,
                    payment_ref: payment_ref.into(),
                    durable: false,
                };
                self.counts.held -= 1;
                self.counts.confirmed += 1;
                self.outbox.push(Change::Confirmed {
                    ticket,
                    user,
                    payment_ref: payment_ref.into(),
                });
                Confirm::Confirmed {
                    ticket,
                    durable: false,
                }
            }
            Ticket::Confirmed {
                payment_ref: existing,
                durable,
                ..
            } => {
                if **existing == *payment_ref {
                    Confirm::Confirmed {
                        ticket,
                        durable: *durable,
                    }
                } else {
                    Confirm::OtherReference { ticket }
                }
            }
            // `by_user` names only held or confirmed tickets (`check`).
            Ticket::Free | Ticket::Releasing => {
                debug_assert!(false, "ticket {ticket} in by_user but not held");
                Confirm::NoHold
            }
        }
    }

    /// The buyer gives up their hold at `now_ms`.
    pub fn cancel(&mut self, user: u64, now_ms: u64) -> Release {
        self.expire_due(now_ms);
        let Some(&ticket) = self.by_user.get(&user) else {
            return Release::NoHold;
        };
        if matches!(self.tickets[ticket as usize], Ticket::Confirmed { .. }) {
            return Release::Confirmed { ticket };
        }
        self.release_ticket(ticket, user, ReleaseReason::Cancelled);
        Release::Released { ticket }
    }

    /// The operator releases `user`'s held or confirmed ticket at `now_ms`.
    pub fn release(&mut self, user: u64, now_ms: u64) -> Release {
        self.expire_due(now_ms);
        let Some(&ticket) = self.by_user.get(&user) else {
            return Release::NoHold;
        };
        self.release_ticket(ticket, user, ReleaseReason::Released);
        Release::Released { ticket }
    }

    /// The log has `ticket`'s hold or confirmation on disk. Returns false if
    /// the ticket is no longer held or confirmed by `user`.
    pub fn mark_durable(&mut self, ticket: u32, user: u64) -> bool {
        match self.tickets.get_mut(ticket as usize) {
            Some(
                Ticket::Held {
                    user: holder,
                    durable,
                    ..
                }
                | Ticket::Confirmed {
                    user: holder,
                    durable,
                    ..
                },
            ) if *holder == user => {
                *durable = true;
                true
            }
            _ => false,
        }
    }

    /// The log has `ticket`'s release on disk: it goes back on sale. Returns
    /// false if the ticket was not releasing.
    pub fn release_durable(&mut self, ticket: u32) -> bool {
        match self.tickets.get_mut(ticket as usize) {
            Some(slot @ Ticket::Releasing) if ticket != 0 => {
                *slot = Ticket::Free;
                self.free.insert(ticket);
                self.counts.releasing -= 1;
                self.counts.remaining += 1;
                true
            }
            _ => false,
        }
    }

    /// Replays one change read back from the log, as durable. Changes must
    /// come in log order; one that does not fit the state (a hold of a ticket
    /// that is not free) is refused with a description.
    ///
    /// # Errors
    ///
    /// The reason the change does not apply; the book is unchanged.
    pub fn replay(&mut self, change: &Change) -> Result<(), String> {
        match change {
            Change::Held {
                ticket,
                user,
                expires_at_ms,
            } => {
                if self.tickets.get(*ticket as usize) != Some(&Ticket::Free) || *ticket == 0 {
                    return Err(format!("ticket {ticket} held while not free"));
                }
                if self.by_user.contains_key(user) {
                    return Err(format!("user {user} holds two tickets"));
                }
                self.free.remove(ticket);
                self.hold(*ticket, *user, *expires_at_ms, true);
            }
            Change::Confirmed {
                ticket,
                user,
                payment_ref,
            } => {
                let held = matches!(
                    self.tickets.get(*ticket as usize),
                    Some(Ticket::Held { user: holder, .. }) if holder == user
                );
                if !held {
                    return Err(format!(
                        "ticket {ticket} confirmed without a hold by {user}"
                    ));
                }
                self.remove_expiry(*ticket);
                self.tickets[*ticket as usize] = Ticket::Confirmed {
                    user: *user,
                    payment_ref: payment_ref.clone(),
                    durable: true,
                };
                self.counts.held -= 1;
                self.counts.confirmed += 1;
            }
            Change::Released { ticket, user, .. } => {
                if self.by_user.get(user) != Some(ticket) {
                    return Err(format!("ticket {ticket} released but not held by {user}"));
                }
                self.take_back(*ticket, *user);
                self.release_durable(*ticket);
            }
        }
        Ok(())
    }

    /// Checks every invariant of the module docs.
    ///
    /// # Errors
    ///
    /// The first invariant found broken.
    pub fn check(&self) -> Result<(), String> {
        let mut counts = HoldCounts::default();
        let mut holders = HashMap::new();
        for (ticket, state) in self.tickets.iter().enumerate().skip(1) {
            let ticket = ticket as u32;
            let in_free = self.free.contains(&ticket);
            match state {
                Ticket::Free => counts.remaining += 1,
                Ticket::Held {
                    user,
                    expires_at_ms,
                    ..
                } => {
                    counts.held += 1;
                    if !self.expiries.contains(&(*expires_at_ms, ticket)) {
                        return Err(format!("held ticket {ticket} has no deadline"));
                    }
                    holders.insert(*user, ticket);
                }
                Ticket::Confirmed { user, .. } => {
                    counts.confirmed += 1;
                    holders.insert(*user, ticket);
                }
                Ticket::Releasing => counts.releasing += 1,
            }
            if in_free != (*state == Ticket::Free) {
                return Err(format!("ticket {ticket}: free list and state disagree"));
            }
        }
        if counts != self.counts {
            return Err(format!("counts {:?}, state says {counts:?}", self.counts));
        }
        if holders != self.by_user {
            return Err("users and tickets disagree (a user with two tickets?)".into());
        }
        if self.expiries.len() != counts.held as usize {
            return Err("a deadline without a held ticket".into());
        }
        Ok(())
    }

    fn hold(&mut self, ticket: u32, user: u64, expires_at_ms: u64, durable: bool) {
        self.tickets[ticket as usize] = Ticket::Held {
            user,
            expires_at_ms,
            durable,
        };
        self.by_user.insert(user, ticket);
        self.lapsed.remove(&user);
        self.expiries.insert((expires_at_ms, ticket));
        self.counts.remaining -= 1;
        self.counts.held += 1;
    }

    fn remove_expiry(&mut self, ticket: u32) {
        if let Ticket::Held { expires_at_ms, .. } = self.tickets[ticket as usize] {
            self.expiries.remove(&(expires_at_ms, ticket));
        }
    }

    /// Moves a held or confirmed ticket to releasing and logs why.
    fn release_ticket(&mut self, ticket: u32, user: u64, reason: ReleaseReason) {
        self.take_back(ticket, user);
        self.outbox.push(Change::Released {
            ticket,
            user,
            reason,
        });
    }

    /// Moves `user`'s held or confirmed `ticket` to releasing.
    fn take_back(&mut self, ticket: u32, user: u64) {
        match self.tickets[ticket as usize] {
            Ticket::Held { .. } => {
                self.remove_expiry(ticket);
                self.counts.held -= 1;
            }
            Ticket::Confirmed { .. } => self.counts.confirmed -= 1,
            // Callers pass only tickets found in `by_user`, which names only
            // held or confirmed tickets (`check`).
            Ticket::Free | Ticket::Releasing => {
                debug_assert!(false, "ticket {ticket} taken back but not held");
                return;
            }
        }
        self.tickets[ticket as usize] = Ticket::Releasing;
        self.counts.releasing += 1;
        self.by_user.remove(&user);
        self.lapsed.insert(user);
    }
}

#[cfg(test)]
mod tests;
