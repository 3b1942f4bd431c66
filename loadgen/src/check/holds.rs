//! The invariants of a sale with holds, from what the buyers and the shop
//! were told.
//!
//! In a sale with holds a ticket changes hands: a hold that expires or is
//! cancelled returns its ticket, and the next buyer may get the same
//! number. So "no ticket told to two users" becomes "no ticket held by two
//! users at once", which needs time. Every hold is kept as a [`Tenure`]:
//! the interval in which its user *certainly* held the ticket, from when the
//! first answer naming it arrived (the server granted it no later) to the
//! earliest moment it can have ended (its `expires_at`, or when a cancel was
//! sent; never, once paid). Two users' tenures of one ticket that intersect
//! are a ticket held twice. Checks only fire on what is certain, so a slow
//! answer or a lost one never makes a false alarm.
//!
//! The shop's confirmations are checked the same way. The server decides an
//! expiry at its exact instant (every operation first expires what is due),
//! so a confirm answered `Confirmed` must have been sent before the hold's
//! `expires_at`, and one answered `Expired` must have been answered after
//! it, unless a cancel was sent first.
//!
//! Times are this machine's Unix milliseconds, compared with the server's
//! `expires_at`: the checks assume the two clocks agree, as they do when
//! both run on one machine.

use std::collections::BTreeMap;

use flashsale_protocol::{ConfirmOutcome, ReleaseOutcome, ReserveOutcome};
use serde::{Deserialize, Serialize};

use super::{invariant, Summary, Verdict};

/// A hold as its user was told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldRef {
    /// The ticket held.
    pub ticket: u32,
    /// The payment deadline, Unix milliseconds.
    pub expires_at: u64,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    at: HoldRef,
    /// When the first answer naming it arrived.
    from: u64,
    /// The earliest it can have ended: `u64::MAX` once paid.
    until: u64,
    /// A `Held` answer named it (not only `AlreadyHeld`).
    granted: bool,
}

impl Hold {
    fn new(at: HoldRef, now: u64, granted: bool) -> Hold {
        Hold {
            at,
            from: now,
            until: at.expires_at,
            granted,
        }
    }

    fn tenure(&self, user: u64) -> Tenure {
        Tenure {
            ticket: self.at.ticket,
            user,
            from: self.from,
            until: self.until,
        }
    }

    /// Whether it certainly still lasted at `now`.
    fn lasts_at(&self, now: u64) -> bool {
        now < self.until
    }
}

/// The interval in which one user certainly held one ticket, Unix
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenure {
    /// The ticket.
    pub ticket: u32,
    /// Its holder.
    pub user: u64,
    /// Held from (at the latest).
    pub from: u64,
    /// Held until (at the earliest); `u64::MAX` once paid.
    pub until: u64,
}

/// How many holds, confirmations and cancels a run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldCounts {
    /// Holds granted (`Held` answers).
    pub holds: u64,
    /// Confirmations the shop sent.
    pub confirms_sent: u64,
    /// Confirmations answered `Confirmed`.
    pub confirmed: u64,
    /// Confirmations answered `Expired` (sent too late, or the hold was
    /// gone).
    pub confirms_expired: u64,
    /// Cancels the buyers sent.
    pub cancels_sent: u64,
    /// Cancels answered `Released`.
    pub cancelled: u64,
    /// Confirms and cancels that got no answer (timeout, lost connection,
    /// or an error answer).
    pub unanswered: u64,
}

impl std::ops::AddAssign for HoldCounts {
    fn add_assign(&mut self, other: HoldCounts) {
        let mine = [
            &mut self.holds,
            &mut self.confirms_sent,
            &mut self.confirmed,
            &mut self.confirms_expired,
            &mut self.cancels_sent,
            &mut self.cancelled,
            &mut self.unanswered,
        ];
        let theirs = [
            other.holds,
            other.confirms_sent,
            other.confirmed,
            other.confirms_expired,
            other.cancels_sent,
            other.cancelled,
            other.unanswered,
        ];
        for (mine, theirs) in mine.into_iter().zip(theirs) {
            *mine += theirs;
        }
    }
}

/// What the holds of a run came to; merged over the workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldSummary {
    /// The counts.
    pub counts: HoldCounts,
    /// Every hold's tenure.
    pub tenures: Vec<Tenure>,
    /// Each paid ticket and who paid for it.
    pub paid: BTreeMap<u32, u64>,
}

impl HoldSummary {
    /// Adds another worker's holds; `violate` hears of a ticket paid for
    /// by two users.
    pub fn merge(&mut self, other: HoldSummary, mut violate: impl FnMut(String)) {
        self.counts += other.counts;
        self.tenures.extend(other.tenures);
        for (ticket, user) in other.paid {
            if let Some(first) = self.paid.insert(ticket, user) {
                violate(format!(
                    "ticket {ticket} paid for by users {first} and {user}"
                ));
            }
        }
    }

    /// Pairs of tenures of one ticket, by two users, that intersect.
    pub fn held_twice(&self) -> Vec<String> {
        let mut tenures: Vec<&Tenure> = self.tenures.iter().filter(|t| t.from < t.until).collect();
        tenures.sort_unstable_by_key(|t| (t.ticket, t.from));
        let mut found = Vec::new();
        let mut longest: Option<&Tenure> = None;
        for t in tenures {
            match longest {
                Some(l) if l.ticket == t.ticket => {
                    if t.from < l.until && t.user != l.user {
                        found.push(format!(
                            "ticket {} held by user {} until at least {} and by user {} from {}",
                            t.ticket,
                            l.user,
                            until_text(l.until),
                            t.user,
                            t.from
                        ));
                    }
                    if t.until > l.until {
                        longest = Some(t);
                    }
                }
                _ => longest = Some(t),
            }
        }
        found
    }
}

fn until_text(until: u64) -> String {
    if until == u64::MAX {
        "its payment (for good)".to_owned()
    } else {
        until.to_string()
    }
}

/// One user's holds and payment, as told.
#[derive(Debug, Clone, Default)]
pub struct Buyer {
    hold: Option<Hold>,
    paid: Option<u32>,
    /// Tickets a cancel released before any answer naming them arrived,
    /// with when: a cancel releases whatever the user holds at the server,
    /// and the answer granting a newer hold can come after the cancel's.
    released_untold: Vec<(u32, u64)>,
    /// A reservation of this user went unanswered (timeout, lost
    /// connection): it may have been granted a hold it never heard of.
    unanswered: bool,
}

impl Buyer {
    /// Folds a reservation's answer that arrived at `now`. Returns the hold
    /// when it is new to this user: the one the shop or the buyer acts on.
    pub fn reserve(
        &mut self,
        user: u64,
        outcome: ReserveOutcome,
        now: u64,
        summary: &mut Summary,
    ) -> Option<HoldRef> {
        match outcome {
            ReserveOutcome::Held { ticket, expires_at } => {
                self.told_hold(user, HoldRef { ticket, expires_at }, true, now, summary)
            }
            ReserveOutcome::AlreadyHeld {
                ticket,
                expires_at: Some(expires_at),
            } => self.told_hold(user, HoldRef { ticket, expires_at }, false, now, summary),
            ReserveOutcome::AlreadyHeld {
                ticket,
                expires_at: None,
            }
            | ReserveOutcome::AlreadyOwned { ticket } => {
                self.told_paid(user, ticket, now, summary);
                None
            }
            ReserveOutcome::Won { ticket } => {
                summary.violate(
                    invariant::RETRIES,
                    format!(
                        "user {user} told Won ticket {ticket}, a final sale, in a sale with holds"
                    ),
                );
                None
            }
            ReserveOutcome::SoldOut => {
                if let Some(ticket) = self.paid {
                    summary.violate(
                        invariant::RETRIES,
                        format!("user {user} paid for ticket {ticket} and was told sold out"),
                    );
                } else if let Some(h) = self.hold.filter(|h| h.lasts_at(now)) {
                    summary.violate(
                        invariant::HOLDS_KEPT,
                        format!(
                            "user {user} told sold out at {now} while holding ticket {} until {}",
                            h.at.ticket, h.at.expires_at
                        ),
                    );
                }
                None
            }
            _ => None,
        }
    }

    /// A reservation of this user got no answer.
    pub fn unanswered(&mut self) {
        self.unanswered = true;
    }

    fn told_hold(
        &mut self,
        user: u64,
        told: HoldRef,
        granted: bool,
        now: u64,
        summary: &mut Summary,
    ) -> Option<HoldRef> {
        summary.check_range(user, told.ticket);
        if let Some(paid) = self.paid {
            if paid != told.ticket {
                summary.violate(
                    invariant::ONE_PER_USER,
                    format!(
                        "user {user} paid for ticket {paid}, then was told it holds ticket {}",
                        told.ticket
                    ),
                );
            }
            return None;
        }
        summary.holds().counts.holds += u64::from(granted);
        if let Some(i) = self
            .released_untold
            .iter()
            .position(|&(t, _)| t == told.ticket)
        {
            // The hold a cancel already released: it ended before this
            // answer arrived, so it is not acted on and certainly held for
            // no time at all.
            let (_, released) = self.released_untold.swap_remove(i);
            let mut ended = Hold::new(told, now, granted);
            ended.until = released;
            summary.holds().tenures.push(ended.tenure(user));
            return None;
        }
        match &mut self.hold {
            Some(current) if current.at == told => {
                if granted && current.granted {
                    summary.violate(
                        invariant::ONE_PER_USER,
                        format!("user {user} told Held twice for ticket {}", told.ticket),
                    );
                }
                current.granted |= granted;
                current.from = current.from.min(now);
                None
            }
            // An answer about an earlier hold, overtaken by a later one.
            Some(current) if told.expires_at < current.at.expires_at => None,
            Some(current) => {
                if current.lasts_at(now) {
                    summary.violate(
                        invariant::ONE_PER_USER,
                        format!(
                            "user {user} held ticket {} until at least {} and was told at {now} it holds ticket {}",
                            current.at.ticket, current.until, told.ticket
                        ),
                    );
                }
                summary.holds().tenures.push(current.tenure(user));
                *current = Hold::new(told, now, granted);
                Some(told)
            }
            None => {
                self.hold = Some(Hold::new(told, now, granted));
                Some(told)
            }
        }
    }

    /// The user was told it owns `ticket`, paid: by a confirm's answer, or
    /// by `AlreadyOwned`.
    fn told_paid(&mut self, user: u64, ticket: u32, now: u64, summary: &mut Summary) {
        summary.check_range(user, ticket);
        match self.paid {
            Some(paid) if paid != ticket => summary.violate(
                invariant::RETRIES,
                format!(
                    "user {user} paid for ticket {paid}, then was told it owns ticket {ticket}"
                ),
            ),
            Some(_) => {}
            None => {
                self.paid = Some(ticket);
                let holds = summary.holds();
                match &mut self.hold {
                    Some(h) if h.at.ticket == ticket => h.until = u64::MAX,
                    // Paid for a hold whose answer has not arrived yet.
                    other => {
                        if let Some(old) = other.take() {
                            holds.tenures.push(old.tenure(user));
                        }
                        let mut paid = Hold::new(
                            HoldRef {
                                ticket,
                                expires_at: u64::MAX,
                            },
                            now,
                            true,
                        );
                        paid.until = u64::MAX;
                        *other = Some(paid);
                    }
                }
                if let Some(first) = holds.paid.insert(ticket, user) {
                    summary.violate(
                        invariant::UNIQUE_TICKETS,
                        format!("ticket {ticket} paid for by users {first} and {user}"),
                    );
                }
            }
        }
    }

    /// The shop is about to confirm (`cancel` false) or the buyer to cancel
    /// the hold, at `sent`.
    pub fn acting(&mut self, cancel: bool, sent: u64, summary: &mut Summary) {
        let holds = summary.holds();
        if cancel {
            holds.counts.cancels_sent += 1;
            // From now on the hold may be gone at any moment.
            if let Some(h) = &mut self.hold {
                h.until = h.until.min(sent);
            }
        } else {
            holds.counts.confirms_sent += 1;
        }
    }

    /// Folds the answer to a confirm of `hold`, sent at `sent` and
    /// answered at `now` (`None`: no answer).
    pub fn confirmed(
        &mut self,
        user: u64,
        hold: HoldRef,
        (sent, now): (u64, u64),
        answer: Option<ConfirmOutcome>,
        summary: &mut Summary,
    ) {
        let holds = summary.holds();
        let current = self.hold.filter(|h| h.at == hold);
        match answer {
            None => holds.counts.unanswered += 1,
            Some(ConfirmOutcome::Confirmed { ticket }) => {
                holds.counts.confirmed += 1;
                // The server confirms the user's hold of the moment; only a
                // hold known to be that one can be judged late.
                if let Some(h) = self.hold.filter(|h| h.at.ticket == ticket && h.until != u64::MAX) {
                    if sent >= h.at.expires_at {
                        summary.violate(
                            invariant::NO_CONFIRM_AFTER_EXPIRY,
                            format!(
                                "user {user}'s confirm sent at {sent} was answered confirmed, \
                                 but its hold of ticket {ticket} expired at {}",
                                h.at.expires_at
                            ),
                        );
                    }
                }
                self.told_paid(user, ticket, now, summary);
            }
            Some(ConfirmOutcome::Expired) => {
                holds.counts.confirms_expired += 1;
                if let Some(h) = current.filter(|h| h.lasts_at(now)) {
                    summary.violate(
                        invariant::HOLDS_KEPT,
                        format!(
                            "user {user}'s confirm answered expired at {now}, before its hold of ticket {} expired at {}",
                            h.at.ticket, h.at.expires_at
                        ),
                    );
                }
            }
            Some(ConfirmOutcome::OtherReference { ticket }) => summary.violate(
                invariant::RETRIES,
                format!("user {user}'s only payment reference answered other_reference for ticket {ticket}"),
            ),
            Some(other) => summary.violate(
                invariant::HOLDS_KEPT,
                format!("user {user}'s confirm of its hold of ticket {} answered {other:?}", hold.ticket),
            ),
        }
    }

    /// Folds the answer to the buyer's cancel of `hold`, answered at `now`
    /// (`None`: no answer).
    pub fn cancelled(
        &mut self,
        user: u64,
        hold: HoldRef,
        now: u64,
        answer: Option<ReleaseOutcome>,
        summary: &mut Summary,
    ) {
        let holds = summary.holds();
        match answer {
            None => holds.counts.unanswered += 1,
            Some(ReleaseOutcome::Released { ticket }) => {
                holds.counts.cancelled += 1;
                // The hold the cancel meant (whose place a newer hold may
                // already have taken, its answer overtaking this one), or
                // the user's current one; otherwise a ticket the user was
                // not told of yet: the hold granted after the one the
                // cancel meant ended, its answer still on its way. Judged
                // at the end.
                let told = ticket == hold.ticket
                    || self.hold.is_some_and(|h| h.at.ticket == ticket);
                if !told {
                    self.released_untold.push((ticket, now));
                }
            }
            Some(ReleaseOutcome::NoHold) if now >= hold.expires_at => {}
            Some(other) => summary.violate(
                invariant::HOLDS_KEPT,
                format!(
                    "user {user}'s cancel at {now} of its hold of ticket {} (expiring {}) answered {other:?}",
                    hold.ticket, hold.expires_at
                ),
            ),
        }
    }

    /// The end of the run: the last hold becomes a tenure, and a ticket
    /// released by a cancel that no answer ever named, while every
    /// reservation of the user was answered, is a violation.
    pub fn finish(&mut self, user: u64, summary: &mut Summary) {
        if !self.unanswered {
            for (ticket, _) in self.released_untold.drain(..) {
                summary.violate(
                    invariant::RETRIES,
                    format!("user {user}'s cancel released ticket {ticket}, which it was never told it holds"),
                );
            }
        }
        if let Some(h) = self.hold.take() {
            summary
                .holds
                .get_or_insert_with(HoldSummary::default)
                .tenures
                .push(h.tenure(user));
        }
    }
}

/// How a run with payments ended, for its verdicts.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    /// Tickets confirmed at the end, if the server could be asked.
    pub confirmed: Option<u32>,
    /// Why every ticket could not be expected to end confirmed, if so: too
    /// few paying users, payments later than the hold, a run cut short.
    pub short: Option<String>,
}

impl Summary {
    /// The verdicts of a run on a sale with holds, with payments.
    pub fn hold_verdicts(&self, ending: &Ending) -> Vec<Verdict> {
        let empty = HoldSummary::default();
        let holds = self.holds.as_ref().unwrap_or(&empty);
        let mut found = self.found_by(&invariant::WITH_HOLDS);
        let mut push = |name: &str, detail: String| super::push(&mut found, name, detail);
        for detail in holds.held_twice() {
            push(invariant::UNIQUE_TICKETS, detail);
        }
        let paid = holds.paid.len() as u64;
        if paid > u64::from(self.capacity) {
            push(
                invariant::CONFIRMED_WITHIN_CAPACITY,
                format!("{paid} tickets paid for, capacity {}", self.capacity),
            );
        }
        if let Some(confirmed) = ending.confirmed.filter(|c| *c > self.capacity) {
            push(
                invariant::CONFIRMED_WITHIN_CAPACITY,
                format!(
                    "the server reports {confirmed} confirmed, capacity {}",
                    self.capacity
                ),
            );
        }
        let mut inconclusive = None;
        match ending.confirmed {
            Some(c) if c == self.capacity => {}
            Some(c) => match &ending.short {
                Some(why) => inconclusive = Some(format!("{c} of {} confirmed: {why}", self.capacity)),
                None => push(
                    invariant::END_CONFIRMED,
                    format!(
                        "{c} of {} tickets confirmed when the run ended, with paying users enough to buy them all",
                        self.capacity
                    ),
                ),
            },
            None => inconclusive = Some("the server could not be asked at the end".to_owned()),
        }
        invariant::WITH_HOLDS
            .iter()
            .map(|name| {
                let details = found.remove(name).unwrap_or_default();
                let open = (*name == invariant::END_CONFIRMED && details.is_empty())
                    .then(|| inconclusive.clone())
                    .flatten();
                Verdict {
                    invariant: (*name).to_owned(),
                    held: details.is_empty(),
                    inconclusive: open.is_some(),
                    details: open.into_iter().chain(details).collect(),
                }
            })
            .collect()
    }
}
#[cfg(test)]
mod tests;
