//! The sale's invariants, checked from what clients were told.
//!
//! Every answer is folded into a [`Tally`] as it arrives: per user, the
//! ticket they were told they hold and how many times they were told `Won`;
//! per ticket, its owner. Checks that need one user's history (two wins, a
//! retry naming another ticket, a winner told "sold out") fire at once; the
//! ones that need everything (the number of wins, a "sold out" while the
//! server still has stock) run in [`Summary::verdicts`] after the workers'
//! tallies are merged. Nothing here keeps one entry per request, so a run of
//! millions of requests costs memory per user, not per answer.
//!
//! A run with payments on a sale with holds, where tickets change hands,
//! is checked over time by [`holds`] instead.

use std::collections::BTreeMap;

use flashsale_protocol::{ConfirmOutcome, OutcomeKind, ReleaseOutcome, ReserveOutcome};
use serde::{Deserialize, Serialize};

pub use self::holds::{Buyer, Ending, HoldCounts, HoldRef, HoldSummary, Tenure};

pub mod holds;

/// What one request was answered (or how it failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The target settled the reservation (every target's answers are
    /// mapped onto the native protocol's outcomes).
    Reserve(ReserveOutcome),
    /// An error answer from the target.
    Error,
    /// No answer within the timeout (or before the run's deadline).
    Timeout,
    /// The connection failed (connect, handshake, or lost mid-request).
    ConnectionError,
}

/// The kinds of [`Answer`], for counting and latency histograms: the
/// protocol's [`OutcomeKind`]s, then the ways a request can fail.
///
/// Reports spell a kind by its [`name`](Kind::name) (the outcome's label),
/// in the order of [`Kind::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Kind {
    /// The target settled the reservation this way.
    Outcome(OutcomeKind),
    /// Server error.
    Error,
    /// Timeout.
    Timeout,
    /// Connection error.
    ConnectionError,
}

impl Kind {
    /// How many kinds there are.
    pub const COUNT: usize = OutcomeKind::COUNT + 3;

    /// Every kind, in report order.
    pub const ALL: [Kind; Kind::COUNT] = {
        let failures = [Kind::Error, Kind::Timeout, Kind::ConnectionError];
        let mut all = [Kind::Error; Kind::COUNT];
        let mut i = 0;
        while i < Kind::COUNT {
            all[i] = if i < OutcomeKind::COUNT {
                Kind::Outcome(OutcomeKind::ALL[i])
            } else {
                failures[i - OutcomeKind::COUNT]
            };
            i += 1;
        }
        all
    };

    /// The name used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Outcome(kind) => kind.label(),
            Kind::Error => "error",
            Kind::Timeout => "timeout",
            Kind::ConnectionError => "connection_error",
        }
    }

    /// Index into per-kind arrays, `0..COUNT`, in the order of [`Kind::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Kind::Outcome(kind) => kind.index(),
            Kind::Error => OutcomeKind::COUNT,
            Kind::Timeout => OutcomeKind::COUNT + 1,
            Kind::ConnectionError => OutcomeKind::COUNT + 2,
        }
    }
}

impl From<Kind> for &'static str {
    fn from(kind: Kind) -> Self {
        kind.name()
    }
}

impl TryFrom<String> for Kind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| format!("unknown answer kind {name:?}"))
    }
}

impl Answer {
    /// The kind of this answer.
    pub const fn kind(self) -> Kind {
        match self {
            Answer::Reserve(outcome) => Kind::Outcome(outcome.kind()),
            Answer::Error => Kind::Error,
            Answer::Timeout => Kind::Timeout,
            Answer::ConnectionError => Kind::ConnectionError,
        }
    }

    /// Whether the answer settles the user's fate (a ticket, or none left).
    pub fn is_definite(self) -> bool {
        matches!(
            self.kind(),
            Kind::Outcome(
                OutcomeKind::Won
                    | OutcomeKind::Held
                    | OutcomeKind::AlreadyOwned
                    | OutcomeKind::SoldOut
            )
        )
    }

    /// The answer as the invariants read it. In a sale with holds a new hold
    /// is the user's win and a retry's `AlreadyHeld` their ticket, for as long
    /// as the hold lasts: a run shorter than the hold checks the same
    /// invariants as a sale without holds. (A run with payments checks the
    /// sale over time instead: [`holds`].)
    fn as_sale(self) -> Answer {
        match self {
            Answer::Reserve(ReserveOutcome::Held { ticket, .. }) => {
                Answer::Reserve(ReserveOutcome::Won { ticket })
            }
            Answer::Reserve(ReserveOutcome::AlreadyHeld { ticket, .. }) => {
                Answer::Reserve(ReserveOutcome::AlreadyOwned { ticket })
            }
            other => other,
        }
    }
}

/// The invariants, by the names reports use.
pub mod invariant {
    /// Wins equal the tickets that were available, or the users, whichever
    /// is fewer (and never exceed the capacity).
    pub const WINS: &str = "wins_match_stock";
    /// No ticket is given to two users.
    pub const UNIQUE_TICKETS: &str = "tickets_unique";
    /// Every ticket number is in `1..=capacity`.
    pub const TICKET_RANGE: &str = "tickets_in_range";
    /// No user is told `Won` twice.
    pub const ONE_PER_USER: &str = "one_ticket_per_user";
    /// Every answer naming a ticket names the same one for a user, and no
    /// user who holds a ticket is told "sold out".
    pub const RETRIES: &str = "retries_get_same_ticket";
    /// No `SoldOut` while the server's final status shows tickets left.
    pub const NO_FALSE_SOLD_OUT: &str = "no_sold_out_with_stock_left";

    /// Every invariant, in report order.
    pub const ALL: [&str; 6] = [
        WINS,
        UNIQUE_TICKETS,
        TICKET_RANGE,
        ONE_PER_USER,
        RETRIES,
        NO_FALSE_SOLD_OUT,
    ];

    /// No confirmation sent after its hold's expiry is answered
    /// `Confirmed`.
    pub const NO_CONFIRM_AFTER_EXPIRY: &str = "no_confirm_after_expiry";
    /// No hold ends before its expiry unless its user cancels it: no
    /// holder is told sold out, no confirm is answered expired early.
    pub const HOLDS_KEPT: &str = "holds_kept_until_expiry";
    /// At most `capacity` tickets are ever paid for.
    pub const CONFIRMED_WITHIN_CAPACITY: &str = "confirmed_within_capacity";
    /// With paying users enough and time, every ticket ends confirmed.
    pub const END_CONFIRMED: &str = "every_ticket_ends_confirmed";

    /// The invariants of a run with payments on a sale with holds, in
    /// report order. [`UNIQUE_TICKETS`] there means no ticket is held or
    /// paid for by two users at once, and never paid for twice;
    /// [`ONE_PER_USER`] that no user holds two tickets at once.
    pub const WITH_HOLDS: [&str; 8] = [
        UNIQUE_TICKETS,
        TICKET_RANGE,
        ONE_PER_USER,
        RETRIES,
        NO_CONFIRM_AFTER_EXPIRY,
        HOLDS_KEPT,
        CONFIRMED_WITHIN_CAPACITY,
        END_CONFIRMED,
    ];

    /// Every entry in a draw window is answered `entered`, with the sale's
    /// `draws_at`.
    pub const ENTERED: &str = "every_entry_entered";
    /// The draw is published (its seed seen) after the window closes.
    pub const PUBLISHED: &str = "draw_published";
    /// The published draw passes `flashsale_draw::audit` against the
    /// commitment read before the window opened.
    pub const AUDITED: &str = "draw_audited";
    /// Every entrant answered `entered` is in the published entrants.
    pub const LISTED: &str = "entrants_listed";
    /// The draw has min(capacity, entrants) winners.
    pub const WINNER_COUNT: &str = "winners_match_capacity";
    /// Each winner is told the ticket of its place in the winners list.
    pub const WINNERS_TOLD: &str = "winners_told_their_ticket";
    /// Each entrant the draw passed over is told it lost.
    pub const LOSERS_TOLD: &str = "losers_told_lost";
    /// Nobody but a published winner is told a ticket, and every winner is
    /// a published entrant.
    pub const NOBODY_ELSE: &str = "nobody_else_wins";

    /// The invariants of a draw run (`--draw`), in report order.
    pub const DRAW: [&str; 8] = [
        ENTERED,
        PUBLISHED,
        AUDITED,
        LISTED,
        WINNER_COUNT,
        WINNERS_TOLD,
        LOSERS_TOLD,
        NOBODY_ELSE,
    ];
}

/// One broken invariant, with what showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which invariant (one of [`invariant::ALL`]).
    pub invariant: String,
    /// What was seen.
    pub detail: String,
}

/// At most this many violations are kept with their details; the rest are
/// only counted.
const MAX_KEPT: usize = 50;

#[derive(Debug, Clone, Copy, Default)]
struct UserState {
    /// The ticket this user was told they hold; 0 when none.
    ticket: u32,
    wins: u8,
    definite: bool,
    sold_out: bool,
    /// A request of this user timed out or lost its connection: a `Won`
    /// may have been sent and lost.
    unanswered: bool,
    /// In a draw window: this user was answered `entered`.
    entered: bool,
}

/// Folds the answers of one worker's users (a contiguous id range).
#[derive(Debug)]
pub struct Tally {
    first_user: u64,
    users: Vec<UserState>,
    /// With payments in a sale with holds: each user's holds, in place of
    /// `users`' view of a final win.
    buyers: Vec<Buyer>,
    /// In a draw run: the `draws_at` every entry must be answered with.
    draws_at: Option<u64>,
    summary: Summary,
}

impl Tally {
    /// A tally for users `first_user..first_user + users` of a sale of
    /// `capacity` tickets.
    pub fn new(capacity: u32, first_user: u64, users: u64) -> Tally {
        Tally {
            first_user,
            users: vec![UserState::default(); usize::try_from(users).unwrap_or(usize::MAX)],
            buyers: Vec::new(),
            draws_at: None,
            summary: Summary {
                capacity,
                users,
                ..Summary::default()
            },
        }
    }

    /// A tally for a run with payments on a sale with holds: the holds,
    /// confirmations and cancels are checked over time ([`holds`]).
    pub fn with_payments(capacity: u32, first_user: u64, users: u64) -> Tally {
        let mut tally = Tally::new(capacity, first_user, users);
        tally.buyers = vec![Buyer::default(); tally.users.len()];
        tally.summary.holds = Some(HoldSummary::default());
        tally
    }

    /// A tally for the entries of a draw run: every answer must be
    /// `entered` with `draws_at` (`busy` is retried, not judged).
    pub fn for_draw(capacity: u32, first_user: u64, users: u64, draws_at: u64) -> Tally {
        let mut tally = Tally::new(capacity, first_user, users);
        tally.draws_at = Some(draws_at);
        tally
    }

    fn index(&self, user: u64) -> Option<usize> {
        user.checked_sub(self.first_user)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.users.len())
    }

    /// Runs `f` on the buyer `user` of a run with payments.
    fn with_buyer(&mut self, user: u64, f: impl FnOnce(&mut Buyer, &mut Summary)) {
        if let Some(buyer) = self.index(user).and_then(|i| self.buyers.get_mut(i)) {
            f(buyer, &mut self.summary);
        }
    }

    /// Records that `user` was answered `answer`. In a run with payments,
    /// returns the hold the answer told of if it is new to the user: the
    /// one to pay for or cancel.
    pub fn record(&mut self, user: u64, answer: Answer) -> Option<HoldRef> {
        self.summary.counts[answer.kind().index()] += 1;
        let Some(i) = self.index(user) else {
            self.summary.violate(
                invariant::RETRIES,
                format!("answer for user {user}, who was never sent"),
            );
            return None;
        };
        let state = &mut self.users[i];
        let summary = &mut self.summary;
        if answer.is_definite() && !state.definite {
            state.definite = true;
            summary.definite_users += 1;
        }
        if let Some(expected) = self.draws_at {
            entry(user, answer, expected, state, summary);
            return None;
        }
        if let Some(buyer) = self.buyers.get_mut(i) {
            return match answer {
                Answer::Reserve(outcome) => buyer.reserve(user, outcome, unix_ms(), summary),
                Answer::Timeout | Answer::ConnectionError => {
                    buyer.unanswered();
                    None
                }
                _ => None,
            };
        }
        match answer.as_sale() {
            Answer::Reserve(
                outcome
                @ (ReserveOutcome::Won { ticket } | ReserveOutcome::AlreadyOwned { ticket }),
            ) => {
                summary.check_range(user, ticket);
                if outcome.kind() == OutcomeKind::Won {
                    summary.wins += 1;
                    state.wins = state.wins.saturating_add(1);
                    summary.won_users += u64::from(state.wins == 1);
                    if state.wins >= 2 {
                        summary.violate(
                            invariant::ONE_PER_USER,
                            format!(
                                "user {user} told Won twice (tickets {} and {ticket})",
                                state.ticket
                            ),
                        );
                    }
                }
                if state.ticket == 0 {
                    state.ticket = ticket;
                    summary.holders += 1;
                    if state.wins == 0 && state.unanswered {
                        summary.maybe_lost_wins += 1;
                    }
                    if let Some(other) = summary.owners.insert(ticket, user) {
                        summary.violate(
                            invariant::UNIQUE_TICKETS,
                            format!("ticket {ticket} told to users {other} and {user}"),
                        );
                    }
                } else if state.ticket != ticket {
                    summary.violate(
                        invariant::RETRIES,
                        format!(
                            "user {user} told ticket {} and then ticket {ticket}",
                            state.ticket
                        ),
                    );
                }
                if state.sold_out {
                    summary.violate(
                        invariant::RETRIES,
                        format!("user {user} holds ticket {ticket} but was told sold out"),
                    );
                }
            }
            Answer::Reserve(ReserveOutcome::SoldOut) => {
                summary.sold_out_users += u64::from(!state.sold_out);
                if state.ticket != 0 && !state.sold_out {
                    summary.violate(
                        invariant::RETRIES,
                        format!(
                            "user {user} holds ticket {} but was told sold out",
                            state.ticket
                        ),
                    );
                }
                state.sold_out = true;
            }
            Answer::Timeout | Answer::ConnectionError => state.unanswered = true,
            _ => {}
        }
        None
    }

    /// The shop is about to confirm `user`'s hold (`cancel` false), or the
    /// buyer to cancel it, now.
    pub fn acting(&mut self, user: u64, cancel: bool) {
        let now = unix_ms();
        self.with_buyer(user, |buyer, summary| buyer.acting(cancel, now, summary));
    }

    /// Records the answer to a confirm of `user`'s `hold` sent at `sent`
    /// (Unix ms); `None` when none came.
    pub fn confirmed(
        &mut self,
        user: u64,
        hold: HoldRef,
        sent: u64,
        answer: Option<ConfirmOutcome>,
    ) {
        let now = unix_ms();
        self.with_buyer(user, |buyer, summary| {
            buyer.confirmed(user, hold, (sent, now), answer, summary);
        });
    }

    /// Records the answer to `user`'s cancel of `hold`; `None` when none
    /// came.
    pub fn cancelled(&mut self, user: u64, hold: HoldRef, answer: Option<ReleaseOutcome>) {
        let now = unix_ms();
        self.with_buyer(user, |buyer, summary| {
            buyer.cancelled(user, hold, now, answer, summary);
        });
    }

    /// What this tally contributes to the run's verdict.
    pub fn into_summary(mut self) -> Summary {
        let first = self.first_user;
        if self.draws_at.is_some() {
            self.summary.unentered = (first..)
                .zip(&self.users)
                .filter(|(_, state)| !state.entered)
                .map(|(user, _)| user)
                .collect();
        }
        for (i, buyer) in self.buyers.iter_mut().enumerate() {
            buyer.finish(first + i as u64, &mut self.summary);
        }
        self.summary
    }
}

/// Folds one answer to an entry in a draw window: `entered` with the
/// sale's `draws_at` acknowledges the entry; `busy`, a timeout or a lost
/// connection leave it unacknowledged (the user is counted at the end);
/// anything else is a violation.
fn entry(user: u64, answer: Answer, draws_at: u64, state: &mut UserState, summary: &mut Summary) {
    match answer {
        Answer::Reserve(ReserveOutcome::Entered { draws_at: told }) if told == draws_at => {
            state.entered = true;
        }
        Answer::Reserve(ReserveOutcome::Entered { draws_at: told }) => summary.violate(
            invariant::ENTERED,
            format!("user {user} told the draw is at {told}, the sale says {draws_at}"),
        ),
        Answer::Reserve(ReserveOutcome::Busy { .. })
        | Answer::Timeout
        | Answer::ConnectionError => {}
        other => summary.violate(
            invariant::ENTERED,
            format!(
                "user {user} answered {} inside the draw window",
                other.kind().name()
            ),
        ),
    }
}

/// This machine's Unix time in milliseconds, to compare with the server's
/// `expires_at`.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The mergeable result of one or more tallies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Tickets in the sale.
    pub capacity: u32,
    /// Distinct users simulated.
    pub users: u64,
    /// Answers per [`Kind`], indexed by [`Kind::index`].
    pub counts: [u64; Kind::COUNT],
    /// `Won` answers.
    pub wins: u64,
    /// Users told they hold a ticket (by `Won` or `AlreadyOwned`).
    pub holders: u64,
    /// Users told `Won` (at least once).
    pub won_users: u64,
    /// Users told `AlreadyOwned` but never `Won`, after a request of theirs
    /// went unanswered: their win was probably in the lost answer.
    pub maybe_lost_wins: u64,
    /// Users whose fate is settled (a ticket, or sold out).
    pub definite_users: u64,
    /// Users told sold out.
    pub sold_out_users: u64,
    /// Ticket to the user told they hold it.
    pub owners: BTreeMap<u32, u64>,
    /// Violations found while folding (at most a few kept in full).
    pub violations: Vec<Violation>,
    /// Violations found, including those not kept.
    pub violation_count: u64,
    /// In a run with payments: the holds, payments and cancels.
    pub holds: Option<HoldSummary>,
    /// In a draw run: the users never answered `entered`, ascending.
    #[serde(default)]
    pub unentered: Vec<u64>,
}

impl Summary {
    fn holds(&mut self) -> &mut HoldSummary {
        self.holds.get_or_insert_with(HoldSummary::default)
    }

    fn check_range(&mut self, user: u64, ticket: u32) {
        if !(1..=self.capacity).contains(&ticket) {
            self.violate(
                invariant::TICKET_RANGE,
                format!(
                    "user {user} told ticket {ticket}, outside 1..={}",
                    self.capacity
                ),
            );
        }
    }

    fn violate(&mut self, invariant: &str, detail: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_KEPT {
            self.violations.push(Violation {
                invariant: invariant.to_owned(),
                detail,
            });
        }
    }

    /// Adds another worker's summary (its users are disjoint from ours).
    pub fn merge(&mut self, other: Summary) {
        self.capacity = self.capacity.max(other.capacity);
        self.users += other.users;
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.wins += other.wins;
        self.holders += other.holders;
        self.won_users += other.won_users;
        self.maybe_lost_wins += other.maybe_lost_wins;
        self.definite_users += other.definite_users;
        self.sold_out_users += other.sold_out_users;
        self.violation_count += other.violation_count;
        self.unentered.extend(other.unentered);
        self.unentered.sort_unstable();
        for v in other.violations {
            if self.violations.len() < MAX_KEPT {
                self.violations.push(v);
            }
        }
        if let Some(theirs) = other.holds {
            let mut twice = Vec::new();
            self.holds().merge(theirs, |detail| twice.push(detail));
            for detail in twice {
                self.violate(invariant::UNIQUE_TICKETS, detail);
            }
        }
        for (ticket, user) in other.owners {
            if let Some(first) = self.owners.insert(ticket, user) {
                self.violate(
                    invariant::UNIQUE_TICKETS,
                    format!("ticket {ticket} told to users {first} and {user}"),
                );
            }
        }
    }

    /// Checks every invariant. `available` is the number of tickets left
    /// when the run started; `final_remaining` what the server reported at
    /// the end (`None` if it could not be asked).
    pub fn verdicts(&self, available: u32, final_remaining: Option<u32>) -> Vec<Verdict> {
        let mut found = self.found_by(&invariant::ALL);
        // Users who held a ticket before the run are told `AlreadyOwned`,
        // not `Won`: so the run's wins are counted, not its holders.
        let expected = u64::from(available).min(self.users);
        let undecided = self.users - self.definite_users;
        if self.holders > u64::from(self.capacity) {
            push(
                &mut found,
                invariant::WINS,
                format!(
                    "{} users told they hold a ticket, capacity {}",
                    self.holders, self.capacity
                ),
            );
        }
        if self.won_users > expected {
            push(
                &mut found,
                invariant::WINS,
                format!(
                    "{} users won, more than the {expected} tickets available",
                    self.won_users
                ),
            );
        }
        if undecided == 0 && self.won_users + self.maybe_lost_wins < expected {
            push(
                &mut found,
                invariant::WINS,
                format!(
                    "{} users won; expected min(available {available}, users {}) = {expected}",
                    self.won_users + self.maybe_lost_wins,
                    self.users
                ),
            );
        }
        if let Some(remaining) = final_remaining {
            if remaining > 0 && self.sold_out_users > 0 {
                push(
                    &mut found,
                    invariant::NO_FALSE_SOLD_OUT,
                    format!(
                        "{} users told sold out, but the server still has {remaining} tickets",
                        self.sold_out_users
                    ),
                );
            }
        }
        invariant::ALL
            .iter()
            .map(|name| (*name, found.remove(name).unwrap_or_default()))
            .map(|(name, details)| Verdict {
                invariant: name.to_owned(),
                held: details.is_empty(),
                // With no definite answer for some users, an exact count
                // cannot be checked: say so instead of claiming a pass.
                inconclusive: name == invariant::WINS && details.is_empty() && undecided > 0,
                details,
            })
            .collect()
    }
}

impl Summary {
    /// The violations folded so far, listed under each of `names`.
    pub(crate) fn found_by<'a>(&self, names: &[&'a str]) -> BTreeMap<&'a str, Vec<String>> {
        let mut found: BTreeMap<&str, Vec<String>> =
            names.iter().map(|name| (*name, Vec::new())).collect();
        for v in &self.violations {
            push(&mut found, &v.invariant, v.detail.clone());
        }
        found
    }
}

fn push(found: &mut BTreeMap<&str, Vec<String>>, name: &str, detail: String) {
    if let Some(list) = found.get_mut(name) {
        list.push(detail);
    }
}

/// The outcome of one invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The invariant's name.
    pub invariant: String,
    /// Whether nothing contradicted it.
    pub held: bool,
    /// Whether it could only be checked partially (some users got no
    /// definite answer).
    pub inconclusive: bool,
    /// What contradicted it.
    pub details: Vec<String>,
}

#[cfg(test)]
mod tests;
