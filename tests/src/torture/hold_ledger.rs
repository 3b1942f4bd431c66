//! The clients' record of one sale with holds, and what each answer proves.
//!
//! Per user the record keeps the latest hold it knows of (its ticket and its
//! deadline) and where that hold stands as far as the clients were told:
//! held, confirmed, or ended (cancelled, released, or found gone). Every
//! acknowledged answer is durable, so it binds every later answer and every
//! restart:
//!
//! - a confirmed ticket stays confirmed, with its number, until the operator
//!   releases it;
//! - a hold stays held, with its number and its deadline, until the
//!   deadline, unless a cancel or release sent for it may have acted or a
//!   payment may have confirmed it;
//! - a cancelled or released hold is never confirmed afterwards, nor is a
//!   hold whose payment was refused as `Expired`, nor one paid after its
//!   deadline (a payment whose earlier attempt was cut may have been
//!   applied, so its repetition may answer `Confirmed`).
//!
//! A request whose answer was cut may have been applied or not, so it only
//! widens what may follow: the flags on [`Known`] say which requests are
//! outstanding. A restart settles them all (`hold_check` adopts what the
//! server then says), so that the next burst is judged from a known state.
//!
//! Time is judged as in `step`: the server decides between a request's
//! `sent_ms` and `answered_ms`, so a hold gone before `answered_ms` reached
//! its deadline was not an expiry.

use std::collections::BTreeMap;
use std::time::Duration;

use flashsale_client::{ConfirmOutcome, ReleaseOutcome, ReserveOutcome};

use super::step::{Asked, Said, Step, Wave};
use super::tally::{HoldChecks, Tally};

/// Where a known hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Held until its deadline, durably.
    Held,
    /// Paid, durably.
    Confirmed,
    /// Cancelled or released (acknowledged), or found gone.
    Ended,
}

/// The latest hold the clients know of for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Its ticket.
    pub ticket: u32,
    /// Its deadline, Unix milliseconds.
    pub expires_at: u64,
    /// Where it stands.
    pub standing: Standing,
    /// A payment of this hold was sent before its deadline since the last
    /// check.
    pub confirm_sent: bool,
    /// A payment of this hold sent before its deadline was cut since the
    /// last check: it may have been applied, and its repetition then answers
    /// `Confirmed` even after it.
    pub confirm_cut: bool,
    /// Cancels and releases of this hold sent since the last check.
    pub ends_sent: u32,
    /// A cancel or release of this hold was cut since the last check.
    pub end_cut: bool,
    /// An operator release of this hold was sent since the last check.
    pub release_sent: bool,
    /// A payment of this hold was answered `Expired`.
    pub refused: bool,
}

impl Known {
    /// A hold just learned of, with nothing outstanding.
    pub fn new(ticket: u32, expires_at: u64, standing: Standing) -> Known {
        Known {
            ticket,
            expires_at,
            standing,
            confirm_sent: false,
            confirm_cut: false,
            ends_sent: 0,
            end_cut: false,
            release_sent: false,
            refused: false,
        }
    }

    /// Whether the hold may have ended by `at_ms`: its deadline passed, or a
    /// cancel or release other than the one answering now may have acted.
    pub fn may_have_ended(&self, at_ms: u64, answering_end: bool) -> bool {
        at_ms >= self.expires_at || self.end_cut || self.ends_sent > u32::from(answering_end)
    }

    /// Whether a cancel or release of it was sent since the last check.
    pub fn end_sent(&self) -> bool {
        self.end_cut || self.ends_sent > 0
    }

    /// Whether an operator release of it may have acted (a buyer's cancel
    /// cannot end a confirmed ticket).
    pub fn may_be_released(&self) -> bool {
        self.release_sent
    }
}

/// One user of the sale.
#[derive(Debug, Clone, Copy, Default)]
pub struct Holder {
    /// The latest hold the clients know of.
    pub hold: Option<Known>,
    /// Reserved since the last check: to look up.
    pub asked: bool,
    /// A reservation cut since the last check: may hold a hold nobody was
    /// told about.
    pub unknown: bool,
}

/// Everything the clients know about one sale with holds.
#[derive(Debug)]
pub struct HoldLedger {
    /// The sale id.
    pub sale: String,
    /// Its capacity.
    pub capacity: u32,
    /// The length of a hold.
    pub hold: Duration,
    /// Every user that ever asked anything on this sale.
    pub users: BTreeMap<u64, Holder>,
    /// Acknowledged answers not yet verified after a restart, by kind.
    pub unverified: HoldChecks,
    /// Acknowledged answers naming a ticket not yet verified.
    pub unverified_acks: u64,
    /// Tickets confirmed at the last check.
    pub confirmed: u32,
    /// Trials this sale is still sold in before the next sale starts.
    pub trials_left: u32,
}

impl HoldLedger {
    /// An empty record for `sale`, sold for at most `trials` trials.
    pub fn new(sale: String, capacity: u32, hold: Duration, trials: u32) -> HoldLedger {
        HoldLedger {
            sale,
            capacity,
            hold,
            users: BTreeMap::new(),
            unverified: HoldChecks::default(),
            unverified_acks: 0,
            confirmed: 0,
            trials_left: trials,
        }
    }

    /// Whether every ticket was confirmed at the last check.
    pub fn sold_out(&self) -> bool {
        self.confirmed >= self.capacity
    }

    /// The users and holds matching `pick`, in user order.
    pub fn holds(&self, pick: impl Fn(&Known) -> bool) -> Vec<(u64, Known)> {
        self.users
            .iter()
            .filter_map(|(&user, h)| Some((user, h.hold.filter(|k| pick(k))?)))
            .collect()
    }

    /// Records every answer of `user`'s requests, wave by wave, flagging at
    /// once what contradicts an earlier acknowledgement.
    pub fn told(&mut self, user: u64, waves: &[Wave], tally: &mut Tally) {
        let mut holder = self.users.get(&user).copied().unwrap_or_default();
        for wave in waves {
            for step in wave {
                sent(&mut holder, step);
            }
            // A `SoldOut` in a wave that also holds was decided first (after
            // a hold, the twin is told `AlreadyHeld`), so it is judged
            // against what was known before the wave.
            let mut steps: Vec<&Step> = wave.iter().collect();
            steps.sort_by_key(|s| s.said != Said::Reserve(ReserveOutcome::SoldOut));
            for step in steps {
                self.answered(user, &mut holder, step, tally);
            }
        }
        self.users.insert(user, holder);
    }

    fn answered(&mut self, user: u64, holder: &mut Holder, step: &Step, tally: &mut Tally) {
        match step.said {
            Said::Busy => {}
            Said::Cut => match (step.asked, holder.hold.as_mut()) {
                (Asked::Reserve, _) => holder.unknown = true,
                (Asked::Confirm { .. }, Some(k)) if step.sent_ms < k.expires_at => {
                    k.confirm_cut = true;
                }
                (Asked::Cancel | Asked::Release, Some(k)) => k.end_cut = true,
                _ => {}
            },
            Said::Reserve(outcome) => self.reserved(user, holder, step, outcome, tally),
            said => match holder.hold.as_mut() {
                Some(k) => match said {
                    Said::Confirm(outcome) => self.confirmed(user, k, step, outcome, tally),
                    Said::Release(_) => self.released(user, k, step, tally),
                    _ => {}
                },
                None => tally.other(format!(
                    "sale {}: user {user}, who holds nothing we know of, was answered {said:?}",
                    self.sale
                )),
            },
        }
    }

    fn reserved(
        &mut self,
        user: u64,
        holder: &mut Holder,
        step: &Step,
        outcome: ReserveOutcome,
        tally: &mut Tally,
    ) {
        let sale = self.sale.clone();
        let at = step.answered_ms;
        match outcome {
            ReserveOutcome::Held { ticket, expires_at } => {
                let hold_ms = u64::try_from(self.hold.as_millis()).unwrap_or(u64::MAX);
                let window = step.sent_ms + hold_ms..=at + hold_ms;
                if !window.contains(&expires_at) {
                    tally.other(format!(
                        "sale {sale}: user {user} was told Held until {expires_at}, sent at {} and answered at {at} with holds of {hold_ms} ms",
                        step.sent_ms
                    ));
                }
                self.learn(user, holder, Known::new(ticket, expires_at, Standing::Held), at, tally);
            }
            ReserveOutcome::AlreadyHeld {
                ticket,
                expires_at: Some(expires_at),
            } => match holder.hold {
                Some(k) if (k.ticket, k.expires_at) == (ticket, expires_at) => match k.standing {
                    Standing::Held if !k.refused => self.unverified_acks += 1,
                    Standing::Held => tally.other(format!(
                        "sale {sale}: user {user}'s payment of ticket {ticket} was refused as expired, then the hold was still there"
                    )),
                    Standing::Confirmed => tally.confirmed_lost(format!(
                        "sale {sale}: user {user} was told ticket {ticket} confirmed, then only held until {expires_at}"
                    )),
                    Standing::Ended => tally.other(format!(
                        "sale {sale}: user {user}'s hold of ticket {ticket} ended, then was still held"
                    )),
                },
                _ => self.learn(user, holder, Known::new(ticket, expires_at, Standing::Held), at, tally),
            },
            ReserveOutcome::AlreadyHeld {
                ticket,
                expires_at: None,
            } => match holder.hold.as_mut() {
                Some(k) if k.ticket == ticket && k.standing != Standing::Ended => {
                    if k.standing == Standing::Held && !k.confirm_sent {
                        tally.other(format!(
                            "sale {sale}: user {user}'s ticket {ticket} is confirmed, but no payment was sent"
                        ));
                    }
                    k.standing = Standing::Confirmed;
                    self.unverified_acks += 1;
                }
                known => tally.other(format!(
                    "sale {sale}: user {user} was told ticket {ticket} confirmed, but holds {known:?}"
                )),
            },
            ReserveOutcome::SoldOut => {
                if let Some(k) = holder.hold {
                    self.ended(user, &k, at, false, "was told SoldOut", tally);
                }
            }
            other => tally.other(format!(
                "sale {sale}: user {user} was answered {other:?} in a sale with holds"
            )),
        }
    }

    /// A hold the user was told about or found holding: the one known
    /// before, if another, must have ended by `at_ms`.
    pub fn learn(
        &mut self,
        user: u64,
        holder: &mut Holder,
        hold: Known,
        at_ms: u64,
        tally: &mut Tally,
    ) {
        let (ticket, expires_at) = (hold.ticket, hold.expires_at);
        if !(1..=self.capacity).contains(&ticket) {
            tally.oversold(format!(
                "sale {}: user {user} holds ticket {ticket}, outside 1..={}",
                self.sale, self.capacity
            ));
        }
        if let Some(old) = holder.hold {
            if (old.ticket, old.expires_at) == (ticket, expires_at) {
                // The same hold again (the twin of a double click).
                self.unverified_acks += 1;
                return;
            }
            self.ended(user, &old, at_ms, false, "holds another ticket", tally);
        }
        holder.hold = Some(hold);
        self.unverified_acks += 1;
        if hold.standing == Standing::Held {
            self.unverified.holds += 1;
        }
    }

    /// The server says `user` no longer holds `k` (`why`), answered at
    /// `at_ms`: fine if it may have ended, a loss otherwise.
    pub fn ended(
        &self,
        user: u64,
        k: &Known,
        at_ms: u64,
        answering_end: bool,
        why: &str,
        tally: &mut Tally,
    ) {
        let (sale, ticket) = (&self.sale, k.ticket);
        match k.standing {
            Standing::Ended => {}
            Standing::Confirmed if !k.may_be_released() => tally.confirmed_lost(format!(
                "sale {sale}: user {user} confirmed ticket {ticket}, then {why}"
            )),
            Standing::Held if !k.may_have_ended(at_ms, answering_end) => tally.lost(format!(
                "sale {sale}: user {user} held ticket {ticket} until {}, then {why} at {at_ms}",
                k.expires_at
            )),
            Standing::Held | Standing::Confirmed => {}
        }
    }

    fn confirmed(
        &mut self,
        user: u64,
        k: &mut Known,
        step: &Step,
        outcome: ConfirmOutcome,
        tally: &mut Tally,
    ) {
        let sale = self.sale.clone();
        let (ticket, at) = (k.ticket, step.answered_ms);
        let Asked::Confirm { expires_at } = step.asked else {
            return;
        };
        if expires_at != k.expires_at {
            tally.other(format!(
                "sale {sale}: user {user} paid the hold ending {expires_at}, the record knows the one ending {}",
                k.expires_at
            ));
            return;
        }
        match outcome {
            ConfirmOutcome::Confirmed { ticket: paid } => {
                if paid != ticket {
                    tally.duplicate(format!(
                        "sale {sale}: user {user} held ticket {ticket}, and paid ticket {paid}"
                    ));
                } else if k.standing == Standing::Ended || k.refused {
                    tally.late_confirmed(format!(
                        "sale {sale}: user {user}'s hold of ticket {ticket} ended or was refused, then a payment was confirmed"
                    ));
                } else if k.standing == Standing::Held
                    && step.sent_ms >= k.expires_at
                    && !k.confirm_cut
                {
                    tally.late_confirmed(format!(
                        "sale {sale}: user {user} paid ticket {ticket} at {}, after its deadline {}",
                        step.sent_ms, k.expires_at
                    ));
                }
                k.standing = Standing::Confirmed;
                self.unverified_acks += 1;
                self.unverified.confirms += 1;
            }
            ConfirmOutcome::Expired => {
                if step.sent_ms >= k.expires_at {
                    tally.holds.late_refused += 1;
                }
                self.ended(user, k, at, false, "its payment was refused as expired", tally);
                k.refused = true;
            }
            other => tally.other(format!(
                "sale {sale}: user {user} paid its hold of ticket {ticket} and was answered {other:?}"
            )),
        }
    }

    fn released(&mut self, user: u64, k: &mut Known, step: &Step, tally: &mut Tally) {
        let Said::Release(outcome) = step.said else {
            return;
        };
        let (at_ms, operator) = (step.answered_ms, step.asked == Asked::Release);
        let sale = self.sale.clone();
        let who = if operator {
            "the operator"
        } else {
            "the buyer"
        };
        match outcome {
            ReleaseOutcome::Released { ticket } => {
                if k.standing == Standing::Held && step.sent_ms >= k.expires_at {
                    // Every operation expires what is due first.
                    tally.other(format!(
                        "sale {sale}: user {user}'s hold of ticket {ticket} was released by {who} at {}, after its deadline {}",
                        step.sent_ms, k.expires_at
                    ));
                }
                if ticket != k.ticket {
                    tally.duplicate(format!(
                        "sale {sale}: user {user} held ticket {}, {who} released ticket {ticket}",
                        k.ticket
                    ));
                }
                match k.standing {
                    Standing::Ended => tally.other(format!(
                        "sale {sale}: user {user}'s ticket {ticket} was released twice"
                    )),
                    Standing::Confirmed if !operator => tally.confirmed_lost(format!(
                        "sale {sale}: user {user}'s confirmed ticket {ticket} was cancelled by the buyer"
                    )),
                    _ if operator => self.unverified.releases += 1,
                    _ => self.unverified.cancels += 1,
                }
                k.standing = Standing::Ended;
            }
            ReleaseOutcome::Confirmed { ticket } if !operator => {
                // Not a promise (the payment may still be on its way to
                // disk), but a payment must have been sent.
                if ticket != k.ticket || !(k.confirm_sent || k.standing == Standing::Confirmed) {
                    tally.other(format!(
                        "sale {sale}: user {user}'s cancel found ticket {ticket} confirmed, the record knows {k:?}"
                    ));
                }
            }
            ReleaseOutcome::NoHold => {
                self.ended(user, k, at_ms, true, &format!("{who} found no hold"), tally);
            }
            other => tally.other(format!(
                "sale {sale}: {who} released user {user}'s ticket and was answered {other:?}"
            )),
        }
    }
}

/// Notes what a request may do before its answer is known.
fn sent(holder: &mut Holder, step: &Step) {
    match (step.asked, holder.hold.as_mut()) {
        (Asked::Reserve, _) => holder.asked = true,
        // A payment sent at or after the deadline cannot confirm anything.
        (Asked::Confirm { expires_at }, Some(k))
            if k.expires_at == expires_at && step.sent_ms < expires_at =>
        {
            k.confirm_sent = true;
        }
        (Asked::Cancel, Some(k)) => k.ends_sent += 1,
        (Asked::Release, Some(k)) => {
            k.ends_sent += 1;
            k.release_sent = true;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
