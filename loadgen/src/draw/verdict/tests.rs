//! An honest draw told honestly passes; each way a draw or a result can
//! lie fails the invariant that names it.

use flashsale_draw::{commitment, to_hex};
use flashsale_protocol::ReserveOutcome;

use super::*;
use crate::check::{Answer, Tally};

const SEED: [u8; 32] = [7; 32];
const DRAWS_AT: u64 = 1_767_225_600_000;
/// Users 1..=USERS enter a sale of CAPACITY tickets.
const USERS: u64 = 60;
const CAPACITY: u32 = 10;

fn honest() -> Document {
    Document::new("d", CAPACITY, DRAWS_AT, &SEED, 1..=USERS)
}

/// What each user is told by a server that follows `doc`.
fn told_by(doc: &Document) -> Vec<Told> {
    (1..=USERS)
        .map(
            |user| match doc.winners.iter().position(|w| w.user == user) {
                Some(i) => Told::Ticket(i as u32 + 1),
                None => Told::Lost,
            },
        )
        .collect()
}

/// The entries' tally when every user was answered `entered`.
fn entered() -> Summary {
    let mut tally = Tally::for_draw(CAPACITY, 1, USERS, DRAWS_AT);
    for user in 1..=USERS {
        tally.record(
            user,
            Answer::Reserve(ReserveOutcome::Busy { retry_after_ms: 0 }),
        );
        tally.record(
            user,
            Answer::Reserve(ReserveOutcome::Entered { draws_at: DRAWS_AT }),
        );
    }
    tally.into_summary()
}

fn broken(summary: &Summary, doc: Option<&Document>, told: &[Told]) -> Vec<String> {
    let expected = to_hex(&commitment(&SEED));
    let results = Results {
        first_user: 1,
        told,
    };
    check(summary, doc, &expected, results)
        .0
        .into_iter()
        .filter(|v| !v.held)
        .map(|v| v.invariant)
        .collect()
}

#[test]
fn an_honest_draw_told_honestly_holds_everything() {
    let doc = honest();
    let told = told_by(&doc);
    let expected = to_hex(&commitment(&SEED));
    let (verdicts, counted) = check(
        &entered(),
        Some(&doc),
        &expected,
        Results {
            first_user: 1,
            told: &told,
        },
    );
    assert!(
        verdicts.iter().all(|v| v.held && !v.inconclusive),
        "{verdicts:?}"
    );
    assert_eq!(verdicts.len(), invariant::DRAW.len());
    assert_eq!(counted.winners_told, u64::from(CAPACITY));
    assert_eq!(counted.losers_told, USERS - u64::from(CAPACITY));
    assert_eq!(counted.violations, 0);
}

#[test]
fn a_tampered_draw_fails_its_audit() {
    let mut doc = honest();
    doc.winners.swap(0, 1);
    let told = told_by(&doc);
    assert_eq!(broken(&entered(), Some(&doc), &told), [invariant::AUDITED]);

    let mut other_seed = honest();
    other_seed.seed = to_hex(&[8; 32]);
    other_seed.commitment = to_hex(&commitment(&[8; 32]));
    let told = told_by(&honest());
    assert!(broken(&entered(), Some(&other_seed), &told).contains(&invariant::AUDITED.to_owned()));
}

#[test]
fn a_left_out_entrant_is_caught() {
    // The server drops user 5 from the list (and draws honestly among the
    // rest): the audit passes, the user's acknowledgement does not.
    let doc = Document::new(
        "d",
        CAPACITY,
        DRAWS_AT,
        &SEED,
        (1..=USERS).filter(|u| *u != 5),
    );
    let mut told = told_by(&doc);
    told[4] = Told::Nothing;
    assert_eq!(broken(&entered(), Some(&doc), &told), [invariant::LISTED]);
}

#[test]
fn a_wrong_own_result_is_caught() {
    let doc = honest();
    let winner = doc.winners[3].user;
    let loser = (1..=USERS)
        .find(|u| doc.winners.iter().all(|w| w.user != *u))
        .unwrap();
    let at = |user: u64| usize::try_from(user - 1).unwrap();
    let cases: [(u64, Told, &str); 5] = [
        (winner, Told::Ticket(5), invariant::WINNERS_TOLD),
        (winner, Told::Lost, invariant::WINNERS_TOLD),
        (loser, Told::Pending, invariant::LOSERS_TOLD),
        (loser, Told::Unanswered, invariant::LOSERS_TOLD),
        (loser, Told::Ticket(1), invariant::NOBODY_ELSE),
    ];
    for (user, lie, name) in cases {
        let mut told = told_by(&doc);
        told[at(user)] = lie;
        assert_eq!(
            broken(&entered(), Some(&doc), &told),
            [name],
            "{user} {lie:?}"
        );
    }
}

#[test]
fn too_many_winners_and_an_unpublished_draw_fail() {
    let mut doc = honest();
    doc.winners.pop();
    let told = told_by(&honest());
    let failed = broken(&entered(), Some(&doc), &told);
    assert!(
        failed.contains(&invariant::WINNER_COUNT.to_owned()),
        "{failed:?}"
    );

    let told = vec![Told::Pending; USERS as usize];
    let expected = to_hex(&commitment(&SEED));
    let results = Results {
        first_user: 1,
        told: &told,
    };
    let (verdicts, _) = check(&entered(), None, &expected, results);
    for v in verdicts {
        let name = v.invariant.as_str();
        assert_eq!(v.held, name != invariant::PUBLISHED, "{v:?}");
        assert_eq!(
            v.inconclusive,
            name != invariant::PUBLISHED && name != invariant::ENTERED
        );
    }
}

#[test]
fn entries_must_all_be_answered_entered() {
    let mut tally = Tally::for_draw(CAPACITY, 1, 4, DRAWS_AT);
    tally.record(
        1,
        Answer::Reserve(ReserveOutcome::Entered { draws_at: DRAWS_AT }),
    );
    tally.record(2, Answer::Reserve(ReserveOutcome::Won { ticket: 1 }));
    tally.record(3, Answer::Reserve(ReserveOutcome::Entered { draws_at: 5 }));
    tally.record(4, Answer::Timeout);
    let summary = tally.into_summary();
    assert_eq!(summary.unentered, [2, 3, 4]);
    let (verdicts, counted) = check(
        &summary,
        None,
        "",
        Results {
            first_user: 1,
            told: &[],
        },
    );
    let entered = &verdicts[0];
    assert_eq!(entered.invariant, invariant::ENTERED);
    assert!(!entered.held);
    assert_eq!(entered.details.len(), 3, "{entered:?}");
    assert!(counted.violations >= 3);
}

#[test]
fn lookups_read_as_results() {
    use flashsale_protocol::EntryInfo;
    let entry = |drawn| {
        LookupBody::entry(EntryInfo {
            draws_at: DRAWS_AT,
            drawn,
        })
    };
    assert_eq!(Told::of(&LookupBody::ticket(Some(3))), Told::Ticket(3));
    assert_eq!(Told::of(&LookupBody::ticket(None)), Told::Nothing);
    assert_eq!(Told::of(&entry(true)), Told::Lost);
    assert_eq!(Told::of(&entry(false)), Told::Pending);
}
