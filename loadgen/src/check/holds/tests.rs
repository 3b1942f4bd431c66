//! Hand-made histories of a sale with holds, each breaking one invariant,
//! and clean ones (tickets changing hands by expiry and cancel) that must
//! pass; and random histories of a correct server that never raise an
//! alarm.

use proptest::prelude::*;

use super::*;

/// Buyers 1..=users of a sale of `capacity` tickets, fed with explicit
/// times (Unix ms).
struct Sale {
    buyers: Vec<Buyer>,
    summary: Summary,
}

impl Sale {
    fn new(capacity: u32, users: usize) -> Sale {
        Sale {
            buyers: vec![Buyer::default(); users + 1],
            summary: Summary {
                capacity,
                holds: Some(HoldSummary::default()),
                ..Summary::default()
            },
        }
    }

    fn held(&mut self, user: u64, ticket: u32, expires_at: u64, now: u64) -> Option<HoldRef> {
        let outcome = ReserveOutcome::Held { ticket, expires_at };
        self.buyers[user as usize].reserve(user, outcome, now, &mut self.summary)
    }

    fn answered(&mut self, user: u64, outcome: ReserveOutcome, now: u64) {
        self.buyers[user as usize].reserve(user, outcome, now, &mut self.summary);
    }

    fn confirm(&mut self, user: u64, hold: HoldRef, sent: u64, now: u64, answer: ConfirmOutcome) {
        let buyer = &mut self.buyers[user as usize];
        buyer.acting(false, sent, &mut self.summary);
        buyer.confirmed(user, hold, (sent, now), Some(answer), &mut self.summary);
    }

    fn cancel(&mut self, user: u64, hold: HoldRef, sent: u64, now: u64, answer: ReleaseOutcome) {
        let buyer = &mut self.buyers[user as usize];
        buyer.acting(true, sent, &mut self.summary);
        buyer.cancelled(user, hold, now, Some(answer), &mut self.summary);
    }

    fn finish(mut self) -> Summary {
        for (user, buyer) in self.buyers.iter_mut().enumerate() {
            buyer.finish(user as u64, &mut self.summary);
        }
        self.summary
    }
}

/// The names of the invariants that failed, with the server reporting
/// `confirmed` at the end (of a run not expected to confirm every ticket:
/// that verdict has its own test).
fn broken(summary: &Summary, confirmed: u32) -> Vec<String> {
    let ending = Ending {
        confirmed: Some(confirmed),
        short: Some("a hand-made history".to_owned()),
    };
    summary
        .hold_verdicts(&ending)
        .into_iter()
        .filter(|v| !v.held)
        .map(|v| v.invariant)
        .collect()
}

fn hold(ticket: u32, expires_at: u64) -> HoldRef {
    HoldRef { ticket, expires_at }
}

#[test]
fn tickets_change_hands_by_expiry_and_cancel_and_end_paid() {
    let mut sale = Sale::new(2, 4);
    // User 1 holds ticket 1 and lets it expire; user 2 gets it afterwards
    // and pays.
    assert_eq!(sale.held(1, 1, 1_000, 100), Some(hold(1, 1_000)));
    sale.answered(
        1,
        ReserveOutcome::AlreadyHeld {
            ticket: 1,
            expires_at: Some(1_000),
        },
        200,
    );
    sale.answered(3, ReserveOutcome::SoldOut, 300);
    assert!(sale.held(2, 1, 2_050, 1_050).is_some());
    sale.confirm(
        2,
        hold(1, 2_050),
        1_500,
        1_510,
        ConfirmOutcome::Confirmed { ticket: 1 },
    );
    sale.answered(
        2,
        ReserveOutcome::AlreadyHeld {
            ticket: 1,
            expires_at: None,
        },
        1_600,
    );
    // User 1's late payment finds its hold gone.
    sale.confirm(1, hold(1, 1_000), 1_700, 1_710, ConfirmOutcome::Expired);
    // User 3 holds ticket 2, cancels; user 4 gets it right after, and pays.
    assert!(sale.held(3, 2, 5_000, 2_000).is_some());
    sale.cancel(
        3,
        hold(2, 5_000),
        2_100,
        2_110,
        ReleaseOutcome::Released { ticket: 2 },
    );
    assert!(sale.held(4, 2, 5_120, 2_120).is_some());
    sale.confirm(
        4,
        hold(2, 5_120),
        2_500,
        2_510,
        ConfirmOutcome::Confirmed { ticket: 2 },
    );
    sale.answered(1, ReserveOutcome::SoldOut, 6_000);
    // A late answer about a hold since paid for is not a new hold.
    assert_eq!(sale.held(4, 2, 5_120, 2_600), None);
    let summary = sale.finish();
    assert!(broken(&summary, 2).is_empty(), "{:?}", summary.violations);
    let holds = summary.holds.as_ref().unwrap();
    assert_eq!(holds.paid.len(), 2);
    assert_eq!(
        (
            holds.counts.confirmed,
            holds.counts.confirms_expired,
            holds.counts.cancelled
        ),
        (2, 1, 1)
    );
    assert!(holds.held_twice().is_empty());
}

#[test]
fn a_confirm_sent_after_the_expiry_and_accepted_is_caught() {
    let mut sale = Sale::new(1, 1);
    sale.held(1, 1, 1_000, 100);
    sale.confirm(
        1,
        hold(1, 1_000),
        1_000,
        1_005,
        ConfirmOutcome::Confirmed { ticket: 1 },
    );
    assert_eq!(
        broken(&sale.finish(), 1),
        vec![invariant::NO_CONFIRM_AFTER_EXPIRY.to_owned()]
    );
}

#[test]
fn a_ticket_given_to_another_while_its_hold_lasts_is_caught() {
    let mut sale = Sale::new(1, 2);
    sale.held(1, 1, 1_000, 100);
    sale.held(2, 1, 1_900, 999);
    assert_eq!(
        broken(&sale.finish(), 0),
        vec![invariant::UNIQUE_TICKETS.to_owned()]
    );

    // The same, seen by two workers: caught once their summaries merge.
    let mut first = Sale::new(1, 2);
    first.held(1, 1, 1_000, 100);
    let mut second = Sale::new(1, 2);
    second.held(2, 1, 1_900, 900);
    let mut merged = first.finish();
    merged.merge(second.finish());
    assert_eq!(
        broken(&merged, 0),
        vec![invariant::UNIQUE_TICKETS.to_owned()]
    );
}

#[test]
fn a_paid_ticket_resold_or_paid_twice_is_caught() {
    let mut sale = Sale::new(1, 2);
    sale.held(1, 1, 1_000, 100);
    sale.confirm(
        1,
        hold(1, 1_000),
        500,
        510,
        ConfirmOutcome::Confirmed { ticket: 1 },
    );
    // Long after user 1's hold would have expired: but it was paid for.
    sale.held(2, 1, 9_000, 8_000);
    sale.confirm(
        2,
        hold(1, 9_000),
        8_500,
        8_510,
        ConfirmOutcome::Confirmed { ticket: 1 },
    );
    let summary = sale.finish();
    let failed = broken(&summary, 1);
    assert_eq!(failed, vec![invariant::UNIQUE_TICKETS.to_owned()]);
    let details = &summary.hold_verdicts(&Ending::default())[0].details;
    assert!(
        details
            .iter()
            .any(|d| d.contains("paid for by users 1 and 2")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("for good")),
        "{details:?}"
    );
}

#[test]
fn a_hold_cut_short_is_caught() {
    // A holder told sold out before the deadline.
    let mut sale = Sale::new(1, 1);
    sale.held(1, 1, 1_000, 100);
    sale.answered(1, ReserveOutcome::SoldOut, 500);
    assert_eq!(
        broken(&sale.finish(), 0),
        vec![invariant::HOLDS_KEPT.to_owned()]
    );
    // A confirm sent in time, answered expired before the deadline.
    let mut sale = Sale::new(1, 1);
    sale.held(1, 1, 1_000, 100);
    sale.confirm(1, hold(1, 1_000), 500, 510, ConfirmOutcome::Expired);
    assert_eq!(
        broken(&sale.finish(), 0),
        vec![invariant::HOLDS_KEPT.to_owned()]
    );
    // After the deadline, both are what a correct server says.
    let mut sale = Sale::new(1, 1);
    sale.held(1, 1, 1_000, 100);
    sale.answered(1, ReserveOutcome::SoldOut, 1_000);
    sale.confirm(1, hold(1, 1_000), 1_200, 1_210, ConfirmOutcome::Expired);
    sale.cancel(1, hold(1, 1_000), 1_300, 1_310, ReleaseOutcome::NoHold);
    assert!(broken(&sale.finish(), 0).is_empty());
}

#[test]
fn a_user_holding_two_tickets_at_once_is_caught() {
    let mut sale = Sale::new(2, 1);
    sale.held(1, 1, 1_000, 100);
    sale.held(1, 2, 1_400, 400);
    assert_eq!(
        broken(&sale.finish(), 0),
        vec![invariant::ONE_PER_USER.to_owned()]
    );
    // Two grants of one hold are a second win.
    let mut sale = Sale::new(2, 1);
    sale.held(1, 1, 1_000, 100);
    assert_eq!(sale.held(1, 1, 1_000, 150), None);
    assert_eq!(
        broken(&sale.finish(), 0),
        vec![invariant::ONE_PER_USER.to_owned()]
    );
    // After a cancel was sent, a new hold is no contradiction.
    let mut sale = Sale::new(2, 1);
    sale.held(1, 1, 1_000, 100);
    let buyer = &mut sale.buyers[1];
    buyer.acting(true, 300, &mut sale.summary);
    sale.held(1, 2, 1_400, 400);
    sale.confirm(
        1,
        hold(1, 1_000),
        500,
        510,
        ConfirmOutcome::Confirmed { ticket: 2 },
    );
    sale.confirm(
        1,
        hold(1, 1_000),
        600,
        610,
        ConfirmOutcome::Confirmed { ticket: 2 },
    );
    assert!(broken(&sale.finish(), 2).is_empty());
}

/// A cancel releases whatever its user holds at the server: when the hold
/// it meant has expired and a newer one was granted, it releases the newer
/// one, whose answer may arrive after the cancel's.
#[test]
fn a_cancel_that_overtakes_the_answer_of_a_newer_hold_is_no_alarm() {
    let mut sale = Sale::new(2, 2);
    sale.held(1, 1, 1_000, 100);
    // Ticket 1 expires at 1,000; the user gets ticket 2 at 1,050, and the
    // cancel meant for ticket 1 (sent late, at 1,100) releases it.
    sale.cancel(
        1,
        hold(1, 1_000),
        1_100,
        1_110,
        ReleaseOutcome::Released { ticket: 2 },
    );
    // The answer granting ticket 2 comes last: nothing to act on.
    assert_eq!(sale.held(1, 2, 2_050, 1_120), None);
    // Ticket 2 is free again at once: user 2 holds it from 1,130.
    assert!(sale.held(2, 2, 2_130, 1_130).is_some());
    let summary = sale.finish();
    assert!(broken(&summary, 0).is_empty(), "{:?}", summary.violations);
    assert!(summary.holds.as_ref().unwrap().held_twice().is_empty());
}

/// The other order: the cancel releases the hold it meant, the user gets a
/// new one at once, and that answer arrives before the cancel's.
#[test]
fn a_cancel_answered_after_the_next_hold_is_no_alarm() {
    let mut sale = Sale::new(2, 1);
    sale.held(1, 1, 1_000, 100);
    let buyer = &mut sale.buyers[1];
    buyer.acting(true, 300, &mut sale.summary);
    assert!(sale.held(1, 2, 1_320, 320).is_some());
    sale.buyers[1].cancelled(
        1,
        hold(1, 1_000),
        330,
        Some(ReleaseOutcome::Released { ticket: 1 }),
        &mut sale.summary,
    );
    let summary = sale.finish();
    assert!(broken(&summary, 0).is_empty(), "{:?}", summary.violations);
}

#[test]
fn a_cancel_releasing_a_ticket_no_answer_named_is_caught() {
    let mut sale = Sale::new(2, 1);
    sale.held(1, 1, 1_000, 100);
    sale.cancel(
        1,
        hold(1, 1_000),
        300,
        310,
        ReleaseOutcome::Released { ticket: 2 },
    );
    assert_eq!(
        broken(&sale.finish(), 0),
        vec![invariant::RETRIES.to_owned()]
    );
    // Unless a reservation of the user went unanswered: its answer may
    // have been that hold.
    let mut sale = Sale::new(2, 1);
    sale.held(1, 1, 1_000, 100);
    sale.buyers[1].unanswered();
    sale.cancel(
        1,
        hold(1, 1_000),
        1_100,
        1_110,
        ReleaseOutcome::Released { ticket: 2 },
    );
    assert!(broken(&sale.finish(), 0).is_empty());
}

#[test]
fn the_end_state_is_judged_against_the_capacity_and_the_demand() {
    let summary = Sale::new(3, 1).finish();
    let verdict = |confirmed, short: Option<&str>| {
        let ending = Ending {
            confirmed,
            short: short.map(str::to_owned),
        };
        let all = summary.hold_verdicts(&ending);
        let of = |name: &str| all.iter().find(|v| v.invariant == name).cloned().unwrap();
        (
            of(invariant::END_CONFIRMED),
            of(invariant::CONFIRMED_WITHIN_CAPACITY).held,
        )
    };
    let (end, within) = verdict(Some(3), None);
    assert!(end.held && !end.inconclusive && within);
    let (end, _) = verdict(Some(2), None);
    assert!(!end.held);
    let (end, _) = verdict(Some(2), Some("the run stopped at --duration"));
    assert!(end.held && end.inconclusive);
    assert!(end.details[0].contains("--duration"), "{:?}", end.details);
    let (end, _) = verdict(None, None);
    assert!(end.held && end.inconclusive);
    let (_, within) = verdict(Some(4), None);
    assert!(!within);
}

/// One buyer's dealings with a correct server: its holds one after the
/// other, each answered some time after it was granted, then paid,
/// cancelled or left to expire.
#[derive(Debug, Clone)]
struct Story {
    /// Per hold: delay of its answer, what the buyer does (0 pay, 1 cancel,
    /// 2 abandon) and when, relative to the grant.
    holds: Vec<(u64, u8, u64)>,
}

fn story() -> impl Strategy<Value = Story> {
    prop::collection::vec((0u64..50, 0u8..3, 0u64..1_500), 1..4).prop_map(|holds| Story { holds })
}

proptest! {
    /// A correct server, simulated ticket by ticket, with answers delayed
    /// at random: the checker never complains.
    #[test]
    fn a_correct_server_raises_no_alarm(
        stories in prop::collection::vec(story(), 1..6),
        hold_ms in 200u64..1_000,
    ) {
        const PAID: u64 = u64::MAX / 2;
        let capacity = 2u32;
        let mut sale = Sale::new(capacity, stories.len());
        // When each ticket is free again; the buyers take turns.
        let mut free_at = [0u64; 2];
        for (i, story) in stories.iter().enumerate() {
            let user = i as u64 + 1;
            // A buyer asks again only after its last answer.
            let mut ready = 0;
            for &(delay, act, after) in &story.holds {
                let t = if free_at[0] <= free_at[1] { 0 } else { 1 };
                if free_at[t] == PAID || ready == PAID {
                    break;
                }
                let granted = free_at[t].max(ready);
                let expires_at = granted + hold_ms;
                let ticket = t as u32 + 1;
                sale.held(user, ticket, expires_at, granted + delay);
                let sent = granted + delay + after;
                let now = sent + delay;
                let end = match act {
                    0 if sent < expires_at => {
                        sale.confirm(user, hold(ticket, expires_at), sent, now, ConfirmOutcome::Confirmed { ticket });
                        PAID
                    }
                    1 if sent < expires_at => {
                        sale.cancel(user, hold(ticket, expires_at), sent, now, ReleaseOutcome::Released { ticket });
                        sent
                    }
                    0 => {
                        sale.confirm(user, hold(ticket, expires_at), sent, now.max(expires_at), ConfirmOutcome::Expired);
                        expires_at
                    }
                    _ => expires_at,
                };
                free_at[t] = end;
                ready = if end == PAID { PAID } else { end.max(now) };
            }
        }
        let summary = sale.finish();
        let paid = summary.holds.as_ref().map_or(0, |h| h.paid.len()) as u32;
        prop_assert!(broken(&summary, paid).is_empty(), "{:?}", summary.violations);
    }
}
