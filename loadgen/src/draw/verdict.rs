//! The verdict on a draw run: the published draw, audited, against what
//! every user was told.
//!
//! Pure: it takes the entries' tally, the document the target published
//! (if it did) and each user's own result, and says which of the draw's
//! invariants ([`invariant::DRAW`]) held. The audit proves the document
//! honest on its own terms (the seed matches the commitment read before
//! the window opened, the winners are the rule's); the rest ties the
//! document to the users: an entrant the server acknowledged and then left
//! out of the list, or a result that disagrees with the list, is exactly
//! what an audit of the document alone cannot see.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use flashsale_draw::{audit, Document};
use flashsale_protocol::json::{EntryResult, LookupBody};
use serde::{Deserialize, Serialize};

use crate::check::{invariant, Summary, Verdict};
use crate::stats::Percentiles;

/// Details kept per invariant; the rest are only counted.
const KEPT: usize = 20;

/// What one user was told of their result after the draw was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Told {
    /// They hold this ticket.
    Ticket(u32),
    /// They entered and the draw passed them over.
    Lost,
    /// They entered and the draw is still to come.
    Pending,
    /// No ticket and no entry.
    Nothing,
    /// No answer (an error, a timeout, a lost connection).
    Unanswered,
}

impl Told {
    /// What a lookup's answer (`Lookup` over the native protocol, `/me`
    /// over HTTP) tells its user.
    pub fn of(body: &LookupBody) -> Told {
        match (body.ticket, body.draw) {
            (Some(ticket), _) => Told::Ticket(ticket),
            (None, Some(entry)) if entry.result == EntryResult::Lost => Told::Lost,
            (None, Some(_)) => Told::Pending,
            (None, None) => Told::Nothing,
        }
    }
}

/// The users of a run and what they were told: user `first_user + i` was
/// told `told[i]`.
#[derive(Debug, Clone, Copy)]
pub struct Results<'a> {
    /// The first user id.
    pub first_user: u64,
    /// Each user's result, in id order.
    pub told: &'a [Told],
}

/// What the check counted, besides its verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// Winners told their ticket.
    pub winners_told: u64,
    /// Entrants told they lost.
    pub losers_told: u64,
    /// Published entrants who are not users of this run.
    pub other_entrants: u64,
    /// Violations found, including those not listed.
    pub violations: u64,
}

/// The verdicts of a draw run, in the order of [`invariant::DRAW`].
///
/// `summary` is the entries' tally, `document` the published draw (`None`
/// when it was not published in time), `commitment` the one read before
/// the window opened.
pub fn check(
    summary: &Summary,
    document: Option<&Document>,
    commitment: &str,
    results: Results<'_>,
) -> (Vec<Verdict>, Counted) {
    let mut found = Found::new(summary);
    if !summary.unentered.is_empty() {
        found.push(
            invariant::ENTERED,
            format!(
                "{} users never answered entered (first: {:?})",
                summary.unentered.len(),
                &summary.unentered[..summary.unentered.len().min(5)]
            ),
        );
    }
    let mut counted = Counted::default();
    let undecided = match document {
        Some(document) => {
            check_document(
                document,
                commitment,
                summary,
                results,
                &mut found,
                &mut counted,
            );
            false
        }
        None => {
            found.push(
                invariant::PUBLISHED,
                "no seed was published in time after the window closed".to_owned(),
            );
            true
        }
    };
    counted.violations = found.total + summary.violation_count;
    let verdicts = invariant::DRAW
        .iter()
        .map(|name| {
            let details = found.lists.remove(name).unwrap_or_default();
            let after_publication = ![invariant::ENTERED, invariant::PUBLISHED].contains(name);
            Verdict {
                invariant: (*name).to_owned(),
                held: details.is_empty(),
                inconclusive: details.is_empty() && undecided && after_publication,
                details,
            }
        })
        .collect();
    (verdicts, counted)
}

/// The checks of a published `document`.
fn check_document(
    document: &Document,
    commitment: &str,
    summary: &Summary,
    results: Results<'_>,
    found: &mut Found,
    counted: &mut Counted,
) {
    if let Err(e) = audit(document, Some(commitment)) {
        found.push(invariant::AUDITED, e.to_string());
    }
    let entrants: HashSet<u64> = document.entrants.iter().copied().collect();
    let expected = entrants.len().min(document.capacity as usize);
    if document.winners.len() != expected {
        found.push(
            invariant::WINNER_COUNT,
            format!(
                "{} winners published, min(capacity {}, entrants {}) = {expected}",
                document.winners.len(),
                document.capacity,
                entrants.len()
            ),
        );
    }
    // A winner's ticket is its place in the list, whatever the list says.
    let mut places: HashMap<u64, u32> = HashMap::with_capacity(document.winners.len());
    for (winner, place) in document.winners.iter().zip(1u32..) {
        if !entrants.contains(&winner.user) {
            found.push(
                invariant::NOBODY_ELSE,
                format!(
                    "winner {} (ticket {place}) is not a published entrant",
                    winner.user
                ),
            );
        }
        if places.insert(winner.user, place).is_some() {
            found.push(
                invariant::NOBODY_ELSE,
                format!("user {} is listed as a winner twice", winner.user),
            );
        }
    }
    let users = results.first_user..results.first_user + results.told.len() as u64;
    counted.other_entrants = entrants.iter().filter(|u| !users.contains(u)).count() as u64;
    for (user, &told) in users.zip(results.told) {
        let acknowledged = summary.unentered.binary_search(&user).is_err();
        let listed = entrants.contains(&user);
        if acknowledged && !listed {
            found.push(
                invariant::LISTED,
                format!("user {user} was answered entered but is not in the published entrants"),
            );
        }
        match (places.get(&user), told) {
            (Some(&place), Told::Ticket(ticket)) if ticket == place => counted.winners_told += 1,
            (Some(&place), other) => found.push(
                invariant::WINNERS_TOLD,
                format!("user {user} is winner {place}, and was told {other:?}"),
            ),
            (None, Told::Ticket(ticket)) => found.push(
                invariant::NOBODY_ELSE,
                format!("user {user} is no published winner, and was told ticket {ticket}"),
            ),
            (None, Told::Lost) if listed => counted.losers_told += 1,
            (None, other) if listed => found.push(
                invariant::LOSERS_TOLD,
                format!("user {user} entered and did not win, and was told {other:?}"),
            ),
            (None, Told::Lost | Told::Pending) => found.push(
                invariant::LISTED,
                format!("user {user} is not in the published entrants, and was told {told:?}"),
            ),
            (None, Told::Nothing | Told::Unanswered) => {}
        }
    }
}

/// Violations found so far, by invariant.
struct Found {
    lists: BTreeMap<&'static str, Vec<String>>,
    total: u64,
}

impl Found {
    /// Starts from the violations the entries' tally folded.
    fn new(summary: &Summary) -> Found {
        Found {
            lists: summary.found_by(&invariant::DRAW),
            total: 0,
        }
    }

    fn push(&mut self, name: &'static str, detail: String) {
        self.total += 1;
        if let Some(list) = self.lists.get_mut(name) {
            if list.len() < KEPT {
                list.push(detail);
            }
        }
    }
}

/// The report's section on the draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrawReport {
    /// The commitment read before the window opened.
    pub commitment: String,
    /// When entries opened, Unix ms.
    pub opens_at: u64,
    /// When entries closed and the draw was made, Unix ms.
    pub draws_at: u64,
    /// Tickets in the sale.
    pub capacity: u32,
    /// Users of the run.
    pub users: u64,
    /// Users answered `entered`.
    pub entries_answered: u64,
    /// Latency of the `entered` answers, from each entry's intended start.
    pub entry_latency_ms: Option<Percentiles>,
    /// From the window's close to the seed seen published.
    pub published_after_close_ms: Option<f64>,
    /// From the window's close to the last user's result checked.
    pub results_checked_after_close_ms: Option<f64>,
    /// Entrants in the published draw.
    pub entrants_published: Option<u64>,
    /// Winners in the published draw.
    pub winners_published: Option<u64>,
    /// Results asked for (one per user).
    pub results_checked: u64,
    /// The audit's verdict: `passed`, or why not.
    pub audit: String,
    /// What the check counted.
    pub counted: Counted,
}

impl DrawReport {
    /// The plain-text lines of the draw.
    pub fn text(&self) -> String {
        let ms = |t: Option<f64>| t.map_or_else(|| "never".to_owned(), |t| format!("{t:.0} ms"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "draw: {} of {} entries answered entered; entry latency p50 {} p99 {}",
            self.entries_answered,
            self.users,
            self.entry_latency_ms
                .map_or_else(|| "-".to_owned(), |p| format!("{:.3} ms", p.p50)),
            self.entry_latency_ms
                .map_or_else(|| "-".to_owned(), |p| format!("{:.3} ms", p.p99)),
        );
        let _ = writeln!(
            out,
            "draw published {} after the window closed; every result checked {} after it",
            ms(self.published_after_close_ms),
            ms(self.results_checked_after_close_ms)
        );
        let _ = writeln!(
            out,
            "draw: {} entrants, {} winners for {} tickets; {} winners told their ticket, {} told they lost, {} results asked; audit {}",
            self.entrants_published.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            self.winners_published.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            self.capacity,
            self.counted.winners_told,
            self.counted.losers_told,
            self.results_checked,
            self.audit
        );
        if self.counted.other_entrants > 0 {
            let _ = writeln!(
                out,
                "draw: {} published entrants are not users of this run",
                self.counted.other_entrants
            );
        }
        out
    }
}

#[cfg(test)]
mod tests;
