//! The record's judgement of answers, on hand-made steps: each broken
//! promise is caught, and each answer a kill can explain is not.

use std::time::Duration;

use flashsale_client::{ConfirmOutcome, ReleaseOutcome, ReserveOutcome};

use super::super::step::{Asked, Said, Step};
use super::super::tally::Tally;
use super::HoldLedger;

const USER: u64 = 7;
/// When the hold was answered.
const T0: u64 = 1_000_000;
/// Its deadline: a hold of one second.
const E: u64 = T0 + 1000;

fn step(asked: Asked, said: Said, at: u64) -> Step {
    Step {
        asked,
        said,
        sent_ms: at,
        answered_ms: at,
    }
}

/// A ledger in which `USER` was told `Held` of ticket 3 until `E`.
fn held() -> (HoldLedger, Tally) {
    let mut ledger = HoldLedger::new("h".into(), 5, Duration::from_secs(1), 4);
    let mut tally = Tally::default();
    let said = Said::Reserve(ReserveOutcome::Held {
        ticket: 3,
        expires_at: E,
    });
    ledger.told(USER, &[vec![step(Asked::Reserve, said, T0)]], &mut tally);
    assert!(!tally.failed(), "{:?}", tally.problems);
    (ledger, tally)
}

fn confirm(said: ConfirmOutcome, at: u64) -> Step {
    step(Asked::Confirm { expires_at: E }, Said::Confirm(said), at)
}

#[test]
fn a_payment_before_the_deadline_then_one_refused_is_a_lost_confirmation() {
    let (mut ledger, mut tally) = held();
    let paid = confirm(ConfirmOutcome::Confirmed { ticket: 3 }, T0 + 10);
    let refused = confirm(ConfirmOutcome::Expired, T0 + 20);
    ledger.told(USER, &[vec![paid], vec![refused]], &mut tally);
    assert_eq!(tally.confirmed_lost, 1, "{:?}", tally.problems);
}

#[test]
fn a_payment_after_the_deadline_must_be_refused() {
    let (mut ledger, mut tally) = held();
    let late = confirm(ConfirmOutcome::Confirmed { ticket: 3 }, E);
    ledger.told(USER, &[vec![late]], &mut tally);
    assert_eq!(tally.late_confirmed, 1, "{:?}", tally.problems);

    let (mut ledger, mut tally) = held();
    ledger.told(
        USER,
        &[vec![confirm(ConfirmOutcome::Expired, E)]],
        &mut tally,
    );
    assert!(!tally.failed(), "{:?}", tally.problems);
    assert_eq!(tally.holds.late_refused, 1);
}

#[test]
fn a_retried_payment_after_a_cut_one_may_be_confirmed_late() {
    let (mut ledger, mut tally) = held();
    let cut = step(Asked::Confirm { expires_at: E }, Said::Cut, T0 + 10);
    let again = confirm(ConfirmOutcome::Confirmed { ticket: 3 }, E + 10);
    ledger.told(USER, &[vec![cut], vec![again]], &mut tally);
    assert!(!tally.failed(), "{:?}", tally.problems);
}

#[test]
fn a_hold_gone_before_its_deadline_is_lost_unless_a_cancel_may_have_acted() {
    let (mut ledger, mut tally) = held();
    ledger.told(
        USER,
        &[vec![confirm(ConfirmOutcome::Expired, T0 + 10)]],
        &mut tally,
    );
    assert_eq!(tally.lost, 1, "{:?}", tally.problems);

    let (mut ledger, mut tally) = held();
    let race = vec![
        confirm(ConfirmOutcome::Expired, T0 + 10),
        step(
            Asked::Cancel,
            Said::Release(ReleaseOutcome::Released { ticket: 3 }),
            T0 + 10,
        ),
    ];
    ledger.told(USER, &[race], &mut tally);
    assert!(!tally.failed(), "{:?}", tally.problems);
}

#[test]
fn a_payment_and_a_cancel_cannot_both_win() {
    let (mut ledger, mut tally) = held();
    let race = vec![
        confirm(ConfirmOutcome::Confirmed { ticket: 3 }, T0 + 10),
        step(
            Asked::Cancel,
            Said::Release(ReleaseOutcome::Released { ticket: 3 }),
            T0 + 10,
        ),
    ];
    ledger.told(USER, &[race], &mut tally);
    assert!(tally.failed(), "both a payment and a cancel were accepted");
}

#[test]
fn sold_out_to_a_holder_is_a_loss_but_not_to_its_twin() {
    let (mut ledger, mut tally) = held();
    let sold_out = Said::Reserve(ReserveOutcome::SoldOut);
    ledger.told(
        USER,
        &[vec![step(Asked::Reserve, sold_out, T0 + 5)]],
        &mut tally,
    );
    assert_eq!(tally.lost, 1, "{:?}", tally.problems);

    let mut ledger = HoldLedger::new("h".into(), 5, Duration::from_secs(1), 4);
    let mut tally = Tally::default();
    let held = Said::Reserve(ReserveOutcome::Held {
        ticket: 3,
        expires_at: E,
    });
    let twins = vec![
        step(Asked::Reserve, held, T0),
        step(Asked::Reserve, sold_out, T0),
    ];
    ledger.told(USER, &[twins], &mut tally);
    assert!(!tally.failed(), "{:?}", tally.problems);
}

#[test]
fn a_hold_with_a_deadline_outside_the_window_is_flagged() {
    let mut ledger = HoldLedger::new("h".into(), 5, Duration::from_secs(1), 4);
    let mut tally = Tally::default();
    let said = Said::Reserve(ReserveOutcome::Held {
        ticket: 3,
        expires_at: T0 + 5000,
    });
    ledger.told(USER, &[vec![step(Asked::Reserve, said, T0)]], &mut tally);
    assert_eq!(tally.other, 1, "{:?}", tally.problems);
}
