//! The clients' record of one sale without holds, and its check against a
//! recovered server; also the lookups every check makes.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use flashsale_client::{LookupBody, Pool, ReserveOutcome};
use flashsale_core::clock::now_ms;

use super::step::{Said, Wave};
use super::tally::Tally;

/// Concurrent lookup tasks during a check.
const LOOKUP_TASKS: usize = 32;

/// An answer that names a ticket in a sale without holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// `Won { ticket }`.
    Won(u32),
    /// `AlreadyOwned { ticket }`.
    AlreadyOwned(u32),
}

/// Everything the clients know about one sale.
#[derive(Debug)]
pub struct Book {
    /// The sale id.
    pub sale: String,
    /// Its capacity.
    pub capacity: u32,
    /// Ticket each user was told (`Won` or `AlreadyOwned`).
    told: HashMap<u64, u32>,
    /// Users told `Won`, to catch a second `Won`.
    won: HashSet<u64>,
    /// Who held which ticket at the last check: durable then, so for good.
    holders: HashMap<u64, u32>,
    /// Every user that ever reserved on this sale.
    tried: Vec<u64>,
    /// Users that reserved since the last check.
    unchecked: Vec<u64>,
    /// Acknowledged answers not yet verified after a restart.
    unverified_acks: u64,
    /// `sold` at the last check.
    pub sold: u32,
}

impl Book {
    /// An empty record for `sale`.
    pub fn new(sale: String, capacity: u32) -> Book {
        Book {
            sale,
            capacity,
            told: HashMap::new(),
            won: HashSet::new(),
            holders: HashMap::new(),
            tried: Vec::new(),
            unchecked: Vec::new(),
            unverified_acks: 0,
            sold: 0,
        }
    }

    /// Whether every ticket was sold at the last check.
    pub fn sold_out(&self) -> bool {
        self.sold >= self.capacity
    }

    /// Every user that ever reserved on this sale.
    pub fn tried(&self) -> &[u64] {
        &self.tried
    }

    /// Notes that `user` sent a reservation; `first` when it never did
    /// before on this sale.
    pub fn tried_by(&mut self, user: u64, first: bool) {
        if first {
            self.tried.push(user);
        }
        self.unchecked.push(user);
    }

    /// Records an answer a client received, flagging a contradiction with
    /// an earlier one at once.
    pub fn told(&mut self, user: u64, ack: Ack, tally: &mut Tally) {
        let (ticket, won) = match ack {
            Ack::Won(t) => (t, true),
            Ack::AlreadyOwned(t) => (t, false),
        };
        if won && !self.won.insert(user) {
            tally.duplicate(format!(
                "sale {}: user {user} was told Won twice",
                self.sale
            ));
        }
        if let Some(held) = self.holders.get(&user).filter(|&&h| h != ticket) {
            tally.duplicate(format!(
                "sale {}: user {user} held ticket {held} and was then told {ack:?}",
                self.sale
            ));
        }
        match self.told.insert(user, ticket) {
            Some(before) if before != ticket => tally.duplicate(format!(
                "sale {}: user {user} was told ticket {before}, then {ack:?}",
                self.sale
            )),
            _ => {}
        }
        self.unverified_acks += 1;
    }

    /// Records every answer of `user`'s requests; a hold in a sale without
    /// holds is a broken promise.
    pub fn told_all(&mut self, user: u64, waves: &[Wave], tally: &mut Tally) {
        for step in waves.iter().flatten() {
            match step.said {
                Said::Reserve(ReserveOutcome::Won { ticket }) => {
                    self.told(user, Ack::Won(ticket), tally);
                }
                Said::Reserve(ReserveOutcome::AlreadyOwned { ticket }) => {
                    self.told(user, Ack::AlreadyOwned(ticket), tally);
                }
                Said::Reserve(ReserveOutcome::SoldOut) | Said::Busy | Said::Cut => {}
                said => tally.other(format!(
                    "sale {}: user {user} was answered {said:?} in a sale without holds",
                    self.sale
                )),
            }
        }
    }

    /// Checks the recovered server against this record: every acknowledged
    /// ticket is held by its user with the same number, every earlier
    /// holder still holds its ticket, no ticket has two holders, tickets are
    /// within the capacity, and `sold` is exactly the number of holders (so
    /// no user holds a second ticket that no lookup shows).
    ///
    /// # Errors
    ///
    /// A lookup or status request fails: after a clean restart, the harness
    /// cannot tell anything then.
    pub async fn check(&mut self, pool: &Pool, tally: &mut Tally) -> anyhow::Result<()> {
        let mut users: Vec<u64> = self.unchecked.drain(..).collect();
        users.extend(self.holders.keys());
        users.extend(self.told.keys());
        users.sort_unstable();
        users.dedup();
        let found: HashMap<u64, u32> = lookup_all(pool, &self.sale, users)
            .await?
            .into_iter()
            .filter_map(|f| Some((f.user, f.me.ticket?)))
            .collect();
        let status = pool
            .status(&self.sale)
            .await
            .with_context(|| format!("status of sale {}", self.sale))?;

        for (&user, &ticket) in &self.told {
            if found.get(&user) != Some(&ticket) {
                tally.lost(format!(
                    "sale {}: user {user} was told ticket {ticket}, the server says {:?}",
                    self.sale,
                    found.get(&user)
                ));
            }
        }
        for (&user, &ticket) in &self.holders {
            if found.get(&user) != Some(&ticket) && self.told.get(&user) != Some(&ticket) {
                tally.lost(format!(
                    "sale {}: user {user} held ticket {ticket} at an earlier check, now {:?}",
                    self.sale,
                    found.get(&user)
                ));
            }
        }
        let mut owners: BTreeMap<u32, u64> = BTreeMap::new();
        for (&user, &ticket) in &found {
            if !(1..=self.capacity).contains(&ticket) {
                tally.oversold(format!(
                    "sale {}: user {user} holds ticket {ticket}, outside 1..={}",
                    self.sale, self.capacity
                ));
            }
            if let Some(other) = owners.insert(ticket, user) {
                tally.duplicate(format!(
                    "sale {}: ticket {ticket} is held by users {other} and {user}",
                    self.sale
                ));
            }
        }
        if status.sold > self.capacity || status.capacity != self.capacity {
            tally.oversold(format!(
                "sale {}: status says {} sold of {} (capacity {})",
                self.sale, status.sold, status.capacity, self.capacity
            ));
        }
        if status.sold as usize != found.len() {
            tally.duplicate(format!(
                "sale {}: status says {} sold, but {} users hold a ticket",
                self.sale,
                status.sold,
                found.len()
            ));
        }
        tally.checked += self.unverified_acks;
        self.unverified_acks = 0;
        self.sold = status.sold;
        self.holders = found;
        Ok(())
    }

    /// Every ticket held at the last check.
    pub fn held_tickets(&self) -> HashSet<u32> {
        self.holders.values().copied().collect()
    }
}

/// What a lookup found, and when.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// The user looked up.
    pub user: u64,
    /// What the server said the user holds.
    pub me: LookupBody,
    /// Unix milliseconds before the lookup was sent.
    pub sent_ms: u64,
    /// Unix milliseconds after its answer arrived.
    pub answered_ms: u64,
}

/// Looks up every user in `users` concurrently.
///
/// # Errors
///
/// A lookup fails: after a clean restart, nothing excuses that.
pub async fn lookup_all(pool: &Pool, sale: &str, users: Vec<u64>) -> anyhow::Result<Vec<Found>> {
    let mut tasks = tokio::task::JoinSet::new();
    let chunk = users.len().div_ceil(LOOKUP_TASKS).max(1);
    for part in users.chunks(chunk) {
        let (pool, sale, part) = (pool.clone(), sale.to_owned(), part.to_vec());
        tasks.spawn(async move {
            let mut found = Vec::with_capacity(part.len());
            for user in part {
                let sent_ms = now_ms();
                let me = pool
                    .me(&sale, user)
                    .await
                    .with_context(|| format!("lookup of user {user} on sale {sale}"))?;
                found.push(Found {
                    user,
                    me,
                    sent_ms,
                    answered_ms: now_ms(),
                });
            }
            anyhow::Ok(found)
        });
    }
    let mut found = Vec::with_capacity(users.len());
    while let Some(joined) = tasks.join_next().await {
        found.extend(joined.context("a lookup task panicked")??);
    }
    Ok(found)
}
