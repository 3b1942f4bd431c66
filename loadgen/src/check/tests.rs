//! Hand-made histories, each breaking one invariant, and clean ones that
//! must pass.

use super::*;

fn won(ticket: u32) -> Answer {
    Answer::Reserve(ReserveOutcome::Won { ticket })
}

fn owned(ticket: u32) -> Answer {
    Answer::Reserve(ReserveOutcome::AlreadyOwned { ticket })
}

const SOLD_OUT: Answer = Answer::Reserve(ReserveOutcome::SoldOut);

/// Folds `(user, answer)` pairs for users 1..=users of a sale of `capacity`.
fn run(capacity: u32, users: u64, history: &[(u64, Answer)]) -> Summary {
    let mut tally = Tally::new(capacity, 1, users);
    for &(user, answer) in history {
        tally.record(user, answer);
    }
    tally.into_summary()
}

/// The names of the invariants that failed.
fn broken(summary: &Summary, available: u32, remaining: Option<u32>) -> Vec<String> {
    summary
        .verdicts(available, remaining)
        .into_iter()
        .filter(|v| !v.held)
        .map(|v| v.invariant)
        .collect()
}

#[test]
fn a_clean_sale_holds_everything() {
    let history = [
        (1, won(2)),
        (2, won(1)),
        (3, SOLD_OUT),
        (1, owned(2)),
        (4, SOLD_OUT),
        (2, owned(1)),
    ];
    let s = run(2, 4, &history);
    assert_eq!(broken(&s, 2, Some(0)), Vec::<String>::new());
    assert_eq!(
        (s.wins, s.holders, s.definite_users, s.sold_out_users),
        (2, 2, 4, 2)
    );
    assert_eq!(
        s.counts[Kind::Outcome(OutcomeKind::AlreadyOwned).index()],
        2
    );
    assert!(s
        .verdicts(2, Some(0))
        .iter()
        .all(|v| v.held && !v.inconclusive));
}

#[test]
fn overselling_breaks_wins() {
    // Capacity 2, three winners with distinct tickets... the third ticket is
    // also out of range.
    let s = run(2, 3, &[(1, won(1)), (2, won(2)), (3, won(3))]);
    let b = broken(&s, 2, Some(0));
    assert!(b.contains(&invariant::WINS.to_owned()), "{b:?}");
    assert!(b.contains(&invariant::TICKET_RANGE.to_owned()), "{b:?}");
}

#[test]
fn too_few_wins_breaks_wins() {
    // Three users, three tickets, only two sold and one told sold out.
    let s = run(3, 3, &[(1, won(1)), (2, won(2)), (3, SOLD_OUT)]);
    let b = broken(&s, 3, None);
    assert_eq!(b, vec![invariant::WINS.to_owned()]);
}

#[test]
fn a_ticket_told_to_two_users() {
    let s = run(5, 2, &[(1, won(3)), (2, won(3))]);
    assert!(broken(&s, 5, None).contains(&invariant::UNIQUE_TICKETS.to_owned()));
}

#[test]
fn a_ticket_told_to_two_users_across_workers() {
    let mut a = Tally::new(5, 1, 1);
    a.record(1, won(4));
    let mut b = Tally::new(5, 2, 1);
    b.record(2, won(4));
    let mut s = a.into_summary();
    s.merge(b.into_summary());
    assert_eq!(s.users, 2);
    assert!(broken(&s, 5, None).contains(&invariant::UNIQUE_TICKETS.to_owned()));
}

#[test]
fn a_user_with_two_wins() {
    let s = run(5, 1, &[(1, won(1)), (1, won(2))]);
    let b = broken(&s, 5, None);
    assert!(b.contains(&invariant::ONE_PER_USER.to_owned()), "{b:?}");
    assert!(b.contains(&invariant::RETRIES.to_owned()), "{b:?}");
}

#[test]
fn a_retry_naming_another_ticket() {
    let s = run(5, 1, &[(1, won(1)), (1, owned(2))]);
    assert_eq!(broken(&s, 1, None), vec![invariant::RETRIES.to_owned()]);
}

#[test]
fn a_winner_told_sold_out() {
    let s = run(1, 1, &[(1, won(1)), (1, SOLD_OUT)]);
    assert_eq!(broken(&s, 1, Some(0)), vec![invariant::RETRIES.to_owned()]);
}

#[test]
fn sold_out_while_stock_remains() {
    let s = run(3, 2, &[(1, won(1)), (2, SOLD_OUT)]);
    let b = broken(&s, 3, Some(2));
    assert!(
        b.contains(&invariant::NO_FALSE_SOLD_OUT.to_owned()),
        "{b:?}"
    );
}

#[test]
fn timeouts_make_the_count_inconclusive_not_failed() {
    let s = run(
        3,
        3,
        &[
            (1, won(1)),
            (2, Answer::Timeout),
            (3, Answer::ConnectionError),
        ],
    );
    let verdicts = s.verdicts(3, None);
    let wins = verdicts
        .iter()
        .find(|v| v.invariant == invariant::WINS)
        .unwrap();
    assert!(wins.held && wins.inconclusive);
    // A timeout followed by a retry that learns the ticket settles the user.
    let s = run(1, 2, &[(1, Answer::Timeout), (1, owned(1)), (2, SOLD_OUT)]);
    assert!(s
        .verdicts(1, Some(0))
        .iter()
        .all(|v| v.held && !v.inconclusive));
}

#[test]
fn an_answer_for_a_user_never_sent() {
    let s = run(2, 2, &[(9, won(1))]);
    assert!(broken(&s, 2, None).contains(&invariant::RETRIES.to_owned()));
}

#[test]
fn details_are_capped_but_counted() {
    let history: Vec<(u64, Answer)> = (0..200).map(|_| (1, won(1))).collect();
    let s = run(1, 1, &history);
    assert_eq!(s.violation_count, 199);
    assert!(s.violations.len() <= MAX_KEPT);
}

#[test]
fn a_rerun_over_earlier_winners_counts_only_new_wins() {
    // Users 1 and 2 held tickets before the run; none were left.
    let s = run(2, 3, &[(1, owned(1)), (2, owned(2)), (3, SOLD_OUT)]);
    assert_eq!(broken(&s, 0, Some(0)), Vec::<String>::new());
    // One ticket was left and nobody won it: sold out too early.
    assert_eq!(broken(&s, 1, None), vec![invariant::WINS.to_owned()]);
}

#[test]
fn a_win_lost_to_a_timeout_and_learnt_on_retry_counts() {
    let s = run(2, 2, &[(1, won(1)), (2, Answer::Timeout), (2, owned(2))]);
    assert_eq!((s.won_users, s.maybe_lost_wins), (1, 1));
    assert_eq!(broken(&s, 2, Some(0)), Vec::<String>::new());
}

#[test]
fn kinds_keep_their_report_names_and_order() {
    let names = Kind::ALL.map(Kind::name);
    assert_eq!(
        names,
        [
            "won",
            "already_owned",
            "sold_out",
            "not_open",
            "unknown_sale",
            "busy",
            "held",
            "paused",
            "closed",
            "entered",
            "error",
            "timeout",
            "connection_error"
        ]
    );
    // The JSON report's maps are ordered by `Ord`.
    assert!(Kind::ALL.windows(2).all(|w| w[0] < w[1]));
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        assert_eq!(kind.index(), i);
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{}\"", kind.name()));
        assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), kind);
    }
}

#[test]
fn holds_count_as_wins_for_as_long_as_they_last() {
    let held = |ticket| {
        Answer::Reserve(ReserveOutcome::Held {
            ticket,
            expires_at: 9,
        })
    };
    let again = |ticket| {
        Answer::Reserve(ReserveOutcome::AlreadyHeld {
            ticket,
            expires_at: Some(9),
        })
    };
    let s = run(
        2,
        3,
        &[(1, held(1)), (2, held(2)), (1, again(1)), (3, SOLD_OUT)],
    );
    assert_eq!((s.wins, s.won_users, s.holders), (2, 2, 2));
    assert_eq!(broken(&s, 2, Some(0)), Vec::<String>::new());
    // A hold of a ticket already held by someone else is a duplicate.
    let s = run(2, 2, &[(1, held(1)), (2, held(1))]);
    assert_eq!(
        broken(&s, 2, None),
        vec![invariant::UNIQUE_TICKETS.to_owned()]
    );
}
