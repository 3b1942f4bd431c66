//! One sale of a run, with or without holds: its record, and the users each
//! burst sends to it.
//!
//! A sale without holds sees fresh users reserving at once, some twice, and
//! a few returning. A sale with holds sees the same, but spread over the
//! burst (a quarter of the users arrive up to a hold's length late, so that
//! tickets coming back from cancels and expiries meet new reservations),
//! and each winner then pays, cancels, races a payment against a cancel, or
//! walks away. Users from earlier trials come back to pay holds already
//! past their deadline, and the operator sometimes releases a ticket.
//!
//! Its kills are drawn over a wider range too: half as early as for a sale
//! without holds (amid holds and the first payments), half up to beyond the
//! hold's length (amid payments, cancels, and the burst's own expiries).

use std::collections::HashSet;
use std::time::Duration;

use flashsale_client::Pool;
use flashsale_core::clock::now_ms;
use rand::Rng as _;

use super::burst::Outcome;
use super::hold_ledger::{HoldLedger, Standing};
use super::ledger::Book;
use super::rng::{Draws, Rng};
use super::script::{Behaviour, Script, Then};
use super::tally::Tally;

/// Shortest and longest wait between the burst's start and the kill.
const KILL_AFTER: (Duration, Duration) = (Duration::from_micros(300), Duration::from_millis(40));
/// The same in a sale with holds, for half of its trials.
const KILL_AFTER_HOLDS: (Duration, Duration) =
    (Duration::from_millis(40), Duration::from_millis(1400));
/// One user in this many sends two reservations at once; as many reserve
/// again after their answer.
const DOUBLE_ONE_IN: u64 = 10;
/// Returning users (who reserved in an earlier trial): one per this many
/// fresh ones.
const RETURNING_ONE_PER: u64 = 20;
/// Late payments of holds past their deadline (or soon past it): one per
/// this many fresh users.
const LATE_CONFIRM_ONE_PER: u64 = 40;
/// How far ahead a deadline may be for its hold to be paid late in the
/// burst (just after the deadline).
const LATE_CONFIRM_HORIZON: Duration = Duration::from_millis(400);
/// One trial in this many of a sale with holds is killed right at the
/// deadline of a hold from an earlier trial, if one falls within
/// [`KILL_AFTER_HOLDS`].
const KILL_AT_EXPIRY_ONE_IN: u32 = 3;
/// How far from that deadline the kill lands, at most, either way.
const KILL_AT_EXPIRY_SPREAD: Duration = Duration::from_millis(15);
/// Operator releases, in one trial in two: at most one per this many fresh
/// users (and at least one).
const RELEASE_ONE_PER: u64 = 200;
/// One user in this many of a sale with holds arrives late in the burst.
const LATE_ARRIVAL_ONE_IN: u32 = 4;
/// The latest a user arrives, after the burst starts.
const LATEST_ARRIVAL: Duration = Duration::from_millis(1200);
/// How long a winner takes to pay, at most (past a 1 s hold: late).
const LONGEST_PAYMENT: Duration = Duration::from_millis(1300);
/// How long a winner takes to cancel, at most.
const LONGEST_CANCEL: Duration = Duration::from_millis(800);
/// How long before a payment races a cancel, at most.
const LONGEST_RACE: Duration = Duration::from_millis(100);
/// The shortest of those waits.
const SHORTEST_WAIT: Duration = Duration::from_micros(200);
/// The latest a late payment or an operator release arrives.
const LATEST_OPERATOR: Duration = Duration::from_millis(60);

/// The record of one sale.
#[derive(Debug)]
pub enum Record {
    /// A sale whose wins are final.
    Instant(Book),
    /// A sale with holds.
    Holds(HoldLedger),
}

impl Record {
    /// The sale id.
    pub fn sale(&self) -> &str {
        match self {
            Record::Instant(book) => &book.sale,
            Record::Holds(ledger) => &ledger.sale,
        }
    }

    /// Whether the next burst needs another sale: every ticket sold (or
    /// confirmed), or a sale with holds sold for its share of trials.
    pub fn done(&self) -> bool {
        match self {
            Record::Instant(book) => book.sold_out(),
            Record::Holds(ledger) => ledger.sold_out() || ledger.trials_left == 0,
        }
    }

    /// How far the sale got, for the trial's line.
    pub fn progress(&self) -> String {
        match self {
            Record::Instant(book) => format!("sold {}/{}", book.sold, book.capacity),
            Record::Holds(ledger) => {
                format!("confirmed {}/{}", ledger.confirmed, ledger.capacity)
            }
        }
    }

    /// Draws when the burst's server is killed.
    pub fn kill_after(&self, rng: &mut Rng) -> Duration {
        let (low, high) = match self {
            Record::Holds(ledger) if rng.one_in(KILL_AT_EXPIRY_ONE_IN) => {
                let now = now_ms();
                let horizon = now + millis(KILL_AFTER_HOLDS.1);
                let due = ledger.holds(|k| {
                    k.standing == Standing::Held && (now + 1..horizon).contains(&k.expires_at)
                });
                if !due.is_empty() {
                    let (_, k) = due[rng.random_range(0..due.len())];
                    let at = Duration::from_millis(k.expires_at - now);
                    let spread = rng.random_range(Duration::ZERO..=KILL_AT_EXPIRY_SPREAD * 2);
                    return (at + spread)
                        .saturating_sub(KILL_AT_EXPIRY_SPREAD)
                        .max(KILL_AFTER.0);
                }
                KILL_AFTER_HOLDS
            }
            Record::Holds(_) if rng.one_in(2) => KILL_AFTER_HOLDS,
            _ => KILL_AFTER,
        };
        rng.log_uniform(low, high)
    }

    /// Records what a burst's users were told.
    pub fn told(&mut self, outcome: &Outcome, tally: &mut Tally) {
        for (user, waves) in &outcome.users {
            match self {
                Record::Instant(book) => book.told_all(*user, waves, tally),
                Record::Holds(ledger) => ledger.told(*user, waves, tally),
            }
        }
        if let Record::Holds(ledger) = self {
            ledger.trials_left = ledger.trials_left.saturating_sub(1);
        }
    }

    /// Checks the recovered server against the record.
    ///
    /// # Errors
    ///
    /// A lookup or a status request fails.
    pub async fn check(&mut self, pool: &Pool, tally: &mut Tally) -> anyhow::Result<()> {
        match self {
            Record::Instant(book) => book.check(pool, tally).await,
            Record::Holds(ledger) => ledger.check(pool, tally).await,
        }
    }

    /// The users of the next burst, `fresh` of them new (numbered from
    /// `next_user` on), in a shuffled order.
    pub fn plan(&mut self, rng: &mut Rng, next_user: &mut u64, fresh: u64) -> Vec<(u64, Script)> {
        let mut users = match self {
            Record::Instant(book) => plan_instant(book, rng, next_user, fresh),
            Record::Holds(ledger) => plan_holds(ledger, rng, next_user, fresh),
        };
        for i in (1..users.len()).rev() {
            users.swap(i, rng.random_range(0..=i));
        }
        users
    }
}

/// Fresh users, each with a behaviour, plus a few who reserved on this
/// sale before (they must get their old ticket back, if they hold one).
fn plan_instant(
    book: &mut Book,
    rng: &mut Rng,
    next_user: &mut u64,
    fresh: u64,
) -> Vec<(u64, Script)> {
    let mut users = Vec::new();
    for user in take(next_user, fresh) {
        book.tried_by(user, true);
        users.push((user, Script::Reserve(behaviour(rng))));
    }
    let returning = (fresh / RETURNING_ONE_PER).min(book.tried().len() as u64);
    for _ in 0..returning {
        let tried = book.tried();
        let user = tried[rng.random_range(0..tried.len())];
        book.tried_by(user, false);
        users.push((user, Script::Reserve(Behaviour::Once)));
    }
    users
}

/// Fresh buyers; earlier users reserving again; late payments of holds
/// past their deadline (or ended); sometimes operator releases. No user
/// has two parts in one burst.
fn plan_holds(
    ledger: &HoldLedger,
    rng: &mut Rng,
    next_user: &mut u64,
    fresh: u64,
) -> Vec<(u64, Script)> {
    let mut users = Vec::new();
    for user in take(next_user, fresh) {
        users.push((user, buyer(rng)));
    }
    let mut busy = HashSet::new();
    let now = now_ms();
    let soon = now + millis(LATE_CONFIRM_HORIZON);
    let late = ledger.holds(|k| k.standing != Standing::Confirmed && k.expires_at <= soon);
    for (user, k) in pick(rng, &late, fresh / LATE_CONFIRM_ONE_PER, &mut busy) {
        // Just after the deadline: the payment races the expiry.
        let until = Duration::from_millis(k.expires_at.saturating_sub(now));
        let start = until + rng.log_uniform(SHORTEST_WAIT, LATEST_OPERATOR);
        let expires_at = k.expires_at;
        users.push((user, Script::LateConfirm { start, expires_at }));
    }
    if rng.one_in(2) {
        let owned = ledger.holds(|k| k.standing != Standing::Ended);
        let releases = rng.random_range(1..=(fresh / RELEASE_ONE_PER).max(1));
        for (user, _) in pick(rng, &owned, releases, &mut busy) {
            let start = rng.log_uniform(SHORTEST_WAIT, LATEST_OPERATOR);
            users.push((user, Script::Release { start }));
        }
    }
    let earlier: Vec<(u64, ())> = ledger.users.keys().map(|&u| (u, ())).collect();
    for (user, ()) in pick(rng, &earlier, fresh / RETURNING_ONE_PER, &mut busy) {
        users.push((user, buyer(rng)));
    }
    users
}

/// A buyer of a sale with holds: when it arrives, how it reserves, what it
/// does with its hold.
fn buyer(rng: &mut Rng) -> Script {
    let start = if rng.one_in(LATE_ARRIVAL_ONE_IN) {
        rng.log_uniform(Duration::from_millis(1), LATEST_ARRIVAL)
    } else {
        Duration::ZERO
    };
    let then = match rng.random_range(0..20) {
        0..10 => Then::Confirm(rng.log_uniform(SHORTEST_WAIT, LONGEST_PAYMENT)),
        10..13 => Then::Cancel(rng.log_uniform(SHORTEST_WAIT, LONGEST_CANCEL)),
        13 => Then::Race(rng.log_uniform(SHORTEST_WAIT, LONGEST_RACE)),
        _ => Then::Abandon,
    };
    Script::Hold {
        behaviour: behaviour(rng),
        start,
        then,
    }
}

fn behaviour(rng: &mut Rng) -> Behaviour {
    match rng.random_range(0..DOUBLE_ONE_IN) {
        0 => Behaviour::Twice,
        1 => Behaviour::Again,
        _ => Behaviour::Once,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `count` fresh user ids.
fn take(next_user: &mut u64, count: u64) -> std::ops::Range<u64> {
    let first = *next_user;
    *next_user += count;
    first..*next_user
}

/// Up to `count` distinct entries of `from` whose user is not `busy` yet,
/// drawn at random; marks them busy.
fn pick<T: Copy>(
    rng: &mut Rng,
    from: &[(u64, T)],
    count: u64,
    busy: &mut HashSet<u64>,
) -> Vec<(u64, T)> {
    let mut picked = Vec::new();
    if from.is_empty() {
        return picked;
    }
    // Bounded: a few draws per wanted entry, duplicates skipped.
    for _ in 0..count * 4 {
        if picked.len() as u64 >= count {
            break;
        }
        let (user, item) = from[rng.random_range(0..from.len())];
        if busy.insert(user) {
            picked.push((user, item));
        }
    }
    picked
}
