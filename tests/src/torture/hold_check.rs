//! The check of a sale with holds against a freshly restarted server.
//!
//! Every user who may hold something is looked up (`me`: the ticket, and
//! the deadline while it is only held), and what is found is judged against
//! the record (`hold_ledger`): a confirmed ticket is still confirmed with its
//! number; a hold is still held with the same number and the SAME deadline,
//! or confirmed if a payment was sent, or gone if its deadline passed or a
//! cancel or release may have acted; nothing refused, cancelled or released
//! is confirmed; no ticket has two users.
//!
//! The sale's counters are read before and after the lookups. The expiry
//! sweep runs meanwhile, but with no requests in flight holds can only end
//! and confirmations cannot change, so: confirmed before = confirmed after =
//! confirmed by lookup; held after <= held by lookup <= held before; and a
//! hold whose deadline is still ahead once the counters are read is in them.
//!
//! What was found then becomes the record: durable, so binding from now on.

use std::collections::BTreeMap;

use anyhow::Context;
use flashsale_client::{Pool, SaleInfo};
use flashsale_core::clock::now_ms;

use super::hold_ledger::{HoldLedger, Holder, Known, Standing};
use super::ledger::{lookup_all, Found};
use super::tally::Tally;

impl HoldLedger {
    /// Checks the recovered server against this record, then adopts what it
    /// found.
    ///
    /// # Errors
    ///
    /// A lookup or a listing fails: after a clean restart, the harness
    /// cannot tell anything then.
    pub async fn check(&mut self, pool: &Pool, tally: &mut Tally) -> anyhow::Result<()> {
        let users: Vec<u64> = self
            .users
            .iter()
            .filter(|(_, h)| {
                h.asked || h.unknown || h.hold.is_some_and(|k| k.standing != Standing::Ended)
            })
            .map(|(&user, _)| user)
            .collect();
        let before = info(pool, &self.sale).await?;
        let found = lookup_all(pool, &self.sale, users).await?;
        let after = info(pool, &self.sale).await?;
        let after_ms = now_ms();

        let mut owners: BTreeMap<u32, u64> = BTreeMap::new();
        let (mut held, mut confirmed, mut held_ahead) = (0, 0, 0);
        for f in &found {
            if let Some(ticket) = f.me.ticket {
                if let Some(other) = owners.insert(ticket, f.user) {
                    tally.duplicate(format!(
                        "sale {}: ticket {ticket} is held by users {other} and {}",
                        self.sale, f.user
                    ));
                }
                match f.me.expires_at {
                    Some(at) => {
                        held += 1;
                        held_ahead += u32::from(at > after_ms);
                    }
                    None => confirmed += 1,
                }
            }
            self.verify(f, tally);
        }
        self.counters(&before, &after, (held, confirmed, held_ahead), tally);
        tally.checked += std::mem::take(&mut self.unverified_acks);
        tally.holds.add(std::mem::take(&mut self.unverified));
        self.confirmed = after.confirmed;
        Ok(())
    }

    /// Judges what one lookup found, then adopts it.
    fn verify(&mut self, f: &Found, tally: &mut Tally) {
        let (user, sale) = (f.user, self.sale.clone());
        let holder = self.users.get(&user).copied().unwrap_or_default();
        let known = holder.hold;
        let mut adopted = Holder::default();
        match (f.me.ticket, f.me.expires_at) {
            (None, _) => {
                if let Some(k) = known {
                    let expired = k.standing == Standing::Held && !k.end_sent();
                    self.ended(
                        user,
                        &k,
                        f.answered_ms,
                        false,
                        "holds nothing after a restart",
                        tally,
                    );
                    if expired && f.answered_ms >= k.expires_at {
                        tally.holds.expiries += 1;
                    }
                    adopted.hold = Some(Known::new(k.ticket, k.expires_at, Standing::Ended));
                }
            }
            (Some(ticket), Some(expires_at)) => {
                if expires_at <= f.sent_ms {
                    tally.other(format!(
                        "sale {sale}: user {user} holds ticket {ticket} until {expires_at}, still at {}",
                        f.sent_ms
                    ));
                }
                match known {
                    Some(k) if (k.ticket, k.expires_at) == (ticket, expires_at) => {
                        still_held(&sale, user, &k, tally);
                        adopted.hold = Some(Known::new(ticket, expires_at, Standing::Held));
                    }
                    _ => {
                        if !holder.unknown {
                            tally.other(format!(
                                "sale {sale}: user {user} holds ticket {ticket} until {expires_at} after a restart, and was never told so (record: {known:?})"
                            ));
                        }
                        adopted.hold = known;
                        self.learn(
                            user,
                            &mut adopted,
                            Known::new(ticket, expires_at, Standing::Held),
                            f.answered_ms,
                            tally,
                        );
                    }
                }
            }
            (Some(ticket), None) => {
                match known {
                    Some(k) if k.ticket == ticket => paid(&sale, user, &k, tally),
                    _ => tally.other(format!(
                        "sale {sale}: user {user} has ticket {ticket} confirmed after a restart, the record knows {known:?}"
                    )),
                }
                let expires_at = known.map_or(0, |k| k.expires_at);
                adopted.hold = Some(Known::new(ticket, expires_at, Standing::Confirmed));
            }
        }
        if let Some(k) = adopted.hold.as_mut() {
            // A refusal that a restart did not undo stays binding.
            k.refused = known.is_some_and(|old| {
                old.refused && (old.ticket, old.expires_at) == (k.ticket, k.expires_at)
            }) && k.standing != Standing::Held;
        }
        self.users.insert(user, adopted);
    }

    /// The sale's counters against the lookups (`held`, `confirmed`, and
    /// holds whose deadline was still ahead once `after` was read).
    fn counters(
        &self,
        before: &SaleInfo,
        after: &SaleInfo,
        (held, confirmed, held_ahead): (u32, u32, u32),
        tally: &mut Tally,
    ) {
        let sale = &self.sale;
        for s in [before, after] {
            if s.capacity != self.capacity
                || s.sold > s.capacity
                || s.remaining + s.sold != s.capacity
                || s.held + s.confirmed > s.sold
            {
                tally.oversold(format!(
                    "sale {sale}: counters {s:?} for a capacity of {}",
                    self.capacity
                ));
            }
        }
        if before.confirmed != confirmed || after.confirmed != confirmed {
            tally.duplicate(format!(
                "sale {sale}: {} then {} confirmed by the counters, {confirmed} by lookup",
                before.confirmed, after.confirmed
            ));
        }
        if !(after.held..=before.held).contains(&held) || after.held < held_ahead {
            tally.duplicate(format!(
                "sale {sale}: {} then {} held by the counters, {held} by lookup ({held_ahead} of them not yet due)",
                before.held, after.held
            ));
        }
    }
}

/// A hold found as the record knew it.
fn still_held(sale: &str, user: u64, k: &Known, tally: &mut Tally) {
    match k.standing {
        Standing::Held if k.refused && !k.end_sent() => tally.other(format!(
            "sale {sale}: user {user}'s payment of ticket {} was refused as expired, and it is still held after a restart",
            k.ticket
        )),
        Standing::Held => {}
        Standing::Confirmed => tally.confirmed_lost(format!(
            "sale {sale}: user {user} confirmed ticket {}, which is only held after a restart",
            k.ticket
        )),
        Standing::Ended => tally.lost(format!(
            "sale {sale}: user {user}'s hold of ticket {} ended, and is still there after a restart",
            k.ticket
        )),
    }
}

/// A confirmed ticket found where the record knew a hold of it.
fn paid(sale: &str, user: u64, k: &Known, tally: &mut Tally) {
    match k.standing {
        Standing::Confirmed => {}
        Standing::Held if k.confirm_sent && !k.refused => {}
        Standing::Held if k.confirm_sent => tally.late_confirmed(format!(
            "sale {sale}: user {user}'s payment of ticket {} was refused as expired, and it is confirmed after a restart",
            k.ticket
        )),
        Standing::Held => tally.late_confirmed(format!(
            "sale {sale}: user {user}'s ticket {} is confirmed after a restart, and no payment was sent before its deadline",
            k.ticket
        )),
        Standing::Ended => tally.late_confirmed(format!(
            "sale {sale}: user {user}'s ticket {} was cancelled, released or refused, and is confirmed after a restart",
            k.ticket
        )),
    }
}

/// The counters of `sale`, held and confirmed included.
///
/// # Errors
///
/// The listing fails or has no such sale.
pub async fn info(pool: &Pool, sale: &str) -> anyhow::Result<SaleInfo> {
    let sales = pool.sales().await.context("listing the sales")?;
    sales
        .into_iter()
        .find(|s| s.sale == sale)
        .with_context(|| format!("sale {sale} is not listed"))
}
