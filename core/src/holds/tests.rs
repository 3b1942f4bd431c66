use proptest::prelude::*;

use super::*;

const HOLD: u64 = 1_000;

fn book(capacity: u32) -> HoldBook {
    HoldBook::new(capacity, HOLD)
}

/// Marks every pending change durable, as the log writer would after a sync,
/// and returns the changes.
fn commit(book: &mut HoldBook) -> Vec<Change> {
    let changes: Vec<Change> = book.drain_changes().collect();
    for change in &changes {
        match change {
            Change::Held { ticket, user, .. } | Change::Confirmed { ticket, user, .. } => {
                book.mark_durable(*ticket, *user);
            }
            Change::Released { ticket, .. } => {
                book.release_durable(*ticket);
            }
        }
    }
    changes
}

#[test]
fn a_hold_then_its_confirmation() {
    let mut book = book(2);
    assert_eq!(
        book.reserve(7, 100),
        Reserve::Held {
            ticket: 1,
            expires_at_ms: 1_100
        }
    );
    assert_eq!(
        book.reserve(7, 200),
        Reserve::AlreadyOwned(Hold {
            ticket: 1,
            status: HoldStatus::Held {
                expires_at_ms: 1_100
            },
            durable: false,
        }),
        "a retry gets the same hold, deadline unchanged"
    );
    assert_eq!(
        commit(&mut book),
        [Change::Held {
            ticket: 1,
            user: 7,
            expires_at_ms: 1_100
        }]
    );
    assert_eq!(
        book.confirm(7, "pay-1", 1_099),
        Confirm::Confirmed {
            ticket: 1,
            durable: false
        }
    );
    commit(&mut book);
    assert_eq!(
        book.confirm(7, "pay-1", 5_000),
        Confirm::Confirmed {
            ticket: 1,
            durable: true
        },
        "the same confirmation again, even after the deadline"
    );
    assert_eq!(
        book.confirm(7, "pay-2", 5_000),
        Confirm::OtherReference { ticket: 1 }
    );
    assert_eq!(book.cancel(7, 5_000), Release::Confirmed { ticket: 1 });
    assert_eq!(
        book.counts(),
        HoldCounts {
            remaining: 1,
            held: 0,
            confirmed: 1,
            releasing: 0
        }
    );
    book.check().unwrap();
}

#[test]
fn an_expired_ticket_is_logged_before_it_is_sold_again() {
    let mut book = book(1);
    assert!(matches!(
        book.reserve(1, 0),
        Reserve::Held { ticket: 1, .. }
    ));
    commit(&mut book);
    assert_eq!(book.reserve(2, 999), Reserve::SoldOut);
    assert_eq!(book.next_expiry(), Some(HOLD));

    assert_eq!(
        book.reserve(2, HOLD),
        Reserve::SoldOut,
        "expired at its deadline, but not back on sale until the log has it"
    );
    assert_eq!(book.counts().releasing, 1);
    assert_eq!(
        book.drain_changes().collect::<Vec<_>>(),
        [Change::Released {
            ticket: 1,
            user: 1,
            reason: ReleaseReason::Expired
        }]
    );
    assert!(book.release_durable(1));
    assert!(!book.release_durable(1), "released once, not twice");
    assert_eq!(book.counts().remaining, 1);
    assert!(matches!(
        book.reserve(2, HOLD),
        Reserve::Held { ticket: 1, .. }
    ));
    book.check().unwrap();
}

#[test]
fn a_confirmation_after_the_deadline_is_expired_even_before_a_sweep() {
    let mut book = book(1);
    let _ = book.reserve(1, 0);
    commit(&mut book);
    assert_eq!(book.confirm(1, "late", HOLD), Confirm::Expired);
    assert_eq!(
        book.drain_changes().collect::<Vec<_>>(),
        [Change::Released {
            ticket: 1,
            user: 1,
            reason: ReleaseReason::Expired
        }],
        "the expiry is decided first, and logged"
    );
    assert_eq!(book.confirm(9, "never held", HOLD), Confirm::NoHold);
}

#[test]
fn cancel_and_release() {
    let mut book = book(2);
    let _ = book.reserve(1, 0);
    let _ = book.reserve(2, 0);
    commit(&mut book);
    assert_eq!(book.cancel(1, 10), Release::Released { ticket: 1 });
    assert_eq!(book.cancel(1, 10), Release::NoHold, "cancelled once");
    assert_eq!(book.confirm(1, "p", 10), Confirm::Expired);
    let _ = book.confirm(2, "p", 10);
    assert_eq!(
        book.release(2, 20),
        Release::Released { ticket: 2 },
        "the operator releases a paid ticket"
    );
    assert_eq!(book.release(3, 20), Release::NoHold);
    let reasons: Vec<_> = commit(&mut book)
        .into_iter()
        .filter_map(|c| match c {
            Change::Released { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [ReleaseReason::Cancelled, ReleaseReason::Released]);
    assert_eq!(book.counts().remaining, 2);
    assert!(
        matches!(book.reserve(1, 30), Reserve::Held { .. }),
        "a buyer whose hold ended may try again"
    );
    book.check().unwrap();
}

#[test]
fn replay_refuses_changes_that_do_not_fit() {
    let mut book = book(2);
    let held = |ticket, user| Change::Held {
        ticket,
        user,
        expires_at_ms: 5,
    };
    assert!(book.replay(&held(3, 1)).is_err(), "no ticket 3");
    assert!(book.replay(&held(0, 1)).is_err(), "no ticket 0");
    book.replay(&held(1, 1)).unwrap();
    assert!(book.replay(&held(1, 2)).is_err(), "ticket 1 is taken");
    assert!(book.replay(&held(2, 1)).is_err(), "user 1 holds one");
    let confirmed = Change::Confirmed {
        ticket: 1,
        user: 2,
        payment_ref: "p".into(),
    };
    assert!(book.replay(&confirmed).is_err(), "not user 2's hold");
    let released = Change::Released {
        ticket: 2,
        user: 1,
        reason: ReleaseReason::Cancelled,
    };
    assert!(book.replay(&released).is_err(), "user 1 holds ticket 1");
    book.check().unwrap();
    assert_eq!(book.holding(1).map(|h| h.durable), Some(true));
}

#[derive(Debug, Clone)]
enum Op {
    Reserve(u64),
    Confirm(u64, u8),
    Cancel(u64),
    Release(u64),
    Commit,
    /// Time passes by this many milliseconds.
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0u64..8;
    prop_oneof![
        4 => user.clone().prop_map(Op::Reserve),
        2 => (user.clone(), 0u8..2).prop_map(|(u, r)| Op::Confirm(u, r)),
        1 => user.clone().prop_map(Op::Cancel),
        1 => user.prop_map(Op::Release),
        3 => Just(Op::Commit),
        2 => (0u64..2 * HOLD).prop_map(Op::Wait),
    ]
}

proptest! {
    /// Any sequence of operations keeps every invariant; a confirmation never
    /// succeeds after its deadline; and replaying the log gives back the
    /// book's state.
    #[test]
    fn random_operations_keep_the_invariants(
        capacity in 1u32..5,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut book = book(capacity);
        let mut log = Vec::new();
        let mut now = 0;
        for op in ops {
            match op {
                Op::Reserve(user) => {
                    if let Reserve::Held { expires_at_ms, .. } = book.reserve(user, now) {
                        prop_assert_eq!(expires_at_ms, now + HOLD);
                    }
                }
                Op::Confirm(user, r) => {
                    let deadline = match book.holding(user) {
                        Some(Hold { status: HoldStatus::Held { expires_at_ms }, .. }) => {
                            Some(expires_at_ms)
                        }
                        _ => None,
                    };
                    let answer = book.confirm(user, &format!("ref-{r}"), now);
                    if let (Some(deadline), Confirm::Confirmed { .. }) = (deadline, answer) {
                        prop_assert!(now < deadline, "confirmed at {now}, deadline {deadline}");
                    }
                }
                Op::Cancel(user) => {
                    let _ = book.cancel(user, now);
                }
                Op::Release(user) => {
                    let _ = book.release(user, now);
                }
                Op::Commit => log.extend(commit(&mut book)),
                Op::Wait(ms) => now += ms,
            }
            prop_assert_eq!(book.check(), Ok(()));
        }
        log.extend(commit(&mut book));

        let mut replayed = HoldBook::new(capacity, HOLD);
        for change in &log {
            prop_assert_eq!(replayed.replay(change), Ok(()), "{:?}", change);
        }
        prop_assert_eq!(replayed.check(), Ok(()));
        prop_assert_eq!(replayed.counts(), book.counts());
        for user in 0..8 {
            prop_assert_eq!(replayed.holding(user), book.holding(user));
        }
    }
}
