//! A sale with a draw window, through the core's API: entries, the draw, its
//! publication, what follows it, and a restart from what it journalled.

use std::sync::{Arc, Mutex, PoisonError};

use flashsale_core::draw::{DrawEvent, DrawPhase};
use flashsale_core::holds::{Change, Hold, HoldStatus};
use flashsale_core::{DrawSpec, History, Holding, Journal, Reservation, Sale, SaleSpec};
use flashsale_protocol::SaleAction;

const OPENS: u64 = 10_000;
const WINDOW: u64 = 5_000;
const DRAWS: u64 = OPENS + WINDOW;
const SEED: [u8; 32] = [0x5a; 32];

/// What the sale journalled, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Logged {
    Change(Change),
    Draw(DrawEvent),
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Logged>>);

impl Journal for Recorder {
    fn write(&self, _sale: &str, change: &Change, _at_ms: u64) {
        self.push(Logged::Change(change.clone()));
    }

    fn draw(&self, sale: &str, event: &DrawEvent, _at_ms: u64) {
        assert_eq!(sale, "drop");
        self.push(Logged::Draw(*event));
    }
}

impl Recorder {
    fn push(&self, logged: Logged) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(logged);
    }

    fn take(&self) -> Vec<Logged> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn spec(capacity: u32, hold_ms: Option<u64>) -> SaleSpec {
    SaleSpec {
        hold_ms,
        draw: Some(DrawSpec {
            window_ms: WINDOW,
            seed: SEED,
        }),
        ..SaleSpec::instant("drop", capacity, OPENS)
    }
}

fn sale(capacity: u32, hold_ms: Option<u64>) -> (Sale, Arc<Recorder>) {
    let journal = Arc::new(Recorder::default());
    let sale = Sale::recover(spec(capacity, hold_ms), History::default(), journal.clone())
        .expect("a valid sale");
    (sale, journal)
}

fn entered(durable: bool) -> Reservation {
    Reservation::Entered {
        draws_at_ms: DRAWS,
        durable,
    }
}

#[test]
fn entries_inside_the_window_are_answered_the_same_each_time() {
    let (sale, journal) = sale(2, None);
    assert_eq!(
        sale.reserve(1, OPENS - 1),
        Reservation::NotOpen { opens_at_ms: OPENS }
    );
    assert_eq!(sale.reserve(1, OPENS), entered(false));
    assert_eq!(sale.reserve(1, DRAWS - 1), entered(false), "a retry");
    sale.entry_durable(1);
    assert_eq!(sale.reserve(1, OPENS + 7), entered(true));
    assert_eq!(
        journal.take(),
        [Logged::Draw(DrawEvent::Entered { user: 1 })],
        "an entry is journalled once"
    );
    let status = sale.draw_status().expect("a draw");
    assert_eq!(status.entrants, 1);
    assert_eq!(status.seed, None, "the seed is secret until published");
    assert_eq!(status.commitment, flashsale_draw::commitment(&SEED));
    assert_eq!(sale.status(OPENS).remaining, 2, "entries sell nothing");
}

#[test]
fn nothing_is_answered_between_the_close_and_the_publication() {
    let (sale, _journal) = sale(1, None);
    assert_eq!(sale.reserve(1, OPENS), entered(false));
    let drawing = Reservation::Drawing { draws_at_ms: DRAWS };
    assert_eq!(sale.reserve(2, DRAWS), drawing, "entries are closed");
    assert!(sale.run_draw(DRAWS - 1).is_none(), "not due yet");
    let result = sale.run_draw(DRAWS + 3).expect("due");
    assert_eq!(result.winners, [1]);
    assert_eq!(result.drawn_at_ms, DRAWS + 3);
    assert!(sale.run_draw(DRAWS + 4).is_none(), "made once");
    assert_eq!(sale.draw_phase(), Some(DrawPhase::Drawn));
    assert_eq!(sale.reserve(1, DRAWS + 5), drawing);
    assert_eq!(sale.reserve(2, DRAWS + 5), drawing);
    assert!(sale.draw_result().is_none());
    assert!(sale.publish_draw());
    assert_eq!(sale.draw_status().and_then(|s| s.seed), Some(SEED));
    assert!(sale.mark_durable(1));
    assert_eq!(
        sale.reserve(1, DRAWS + 6),
        Reservation::AlreadyOwned {
            ticket: 1,
            durable: true
        }
    );
    assert_eq!(sale.reserve(2, DRAWS + 6), Reservation::SoldOut);
}

#[test]
fn the_draw_follows_the_rule_and_journals_in_order() {
    let (sale, journal) = sale(3, None);
    let users: Vec<u64> = (100..120).collect();
    for (i, &user) in users.iter().enumerate() {
        assert_eq!(sale.reserve(user, OPENS + i as u64), entered(false));
    }
    let result = sale.run_draw(DRAWS).expect("due");
    let expected = flashsale_draw::winners(&SEED, &users, 3);
    assert_eq!(result.winners, expected);
    assert_eq!(result.entrants, users, "ascending");
    let logged = journal.take();
    let mut want: Vec<Logged> = users
        .iter()
        .map(|&user| Logged::Draw(DrawEvent::Entered { user }))
        .collect();
    want.push(Logged::Draw(DrawEvent::Drawn));
    want.extend(
        expected
            .iter()
            .zip(1..)
            .map(|(&user, ticket)| Logged::Draw(DrawEvent::Won { user, ticket })),
    );
    assert_eq!(logged, want);
    for (&user, ticket) in expected.iter().zip(1..) {
        assert_eq!(sale.lookup(user), Holding::Pending { ticket });
    }
    assert!(sale.publish_draw());
    let loser = users.iter().find(|u| !expected.contains(u)).copied();
    assert_eq!(
        sale.reserve(loser.expect("17 losers"), DRAWS + 1),
        Reservation::SoldOut
    );
}

#[test]
fn unfilled_tickets_sell_first_come_first_served_after_the_draw() {
    let (sale, _journal) = sale(5, None);
    for user in [7, 3] {
        assert_eq!(sale.reserve(user, OPENS + 1), entered(false));
    }
    let result = sale.run_draw(DRAWS).expect("due");
    assert_eq!(result.winners.len(), 2);
    assert!(sale.publish_draw());
    let tickets: Vec<Reservation> = (50..54).map(|u| sale.reserve(u, DRAWS + 1)).collect();
    assert_eq!(
        tickets,
        [
            Reservation::Won { ticket: 3 },
            Reservation::Won { ticket: 4 },
            Reservation::Won { ticket: 5 },
            Reservation::SoldOut
        ]
    );
}

#[test]
fn a_paused_sale_takes_no_entries_but_still_tells_entrants() {
    let (sale, _journal) = sale(2, None);
    assert_eq!(sale.reserve(1, OPENS), entered(false));
    assert!(sale.apply(SaleAction::Pause));
    assert_eq!(sale.reserve(2, OPENS + 1), Reservation::Paused);
    assert_eq!(sale.reserve(1, OPENS + 1), entered(false));
    assert!(sale.apply(SaleAction::Close));
    assert_eq!(sale.reserve(2, OPENS + 1), Reservation::Closed);
}

#[test]
fn drawn_winners_of_a_sale_with_holds_hold_until_the_deadline() {
    let (sale, journal) = sale(2, Some(60_000));
    for user in [1, 2, 3, 4] {
        assert_eq!(sale.reserve(user, OPENS), entered(false));
    }
    journal.take();
    let result = sale.run_draw(DRAWS + 10).expect("due");
    let logged = journal.take();
    assert_eq!(logged[0], Logged::Draw(DrawEvent::Drawn));
    for (i, &user) in result.winners.iter().enumerate() {
        let ticket = i as u32 + 1;
        let expires_at_ms = DRAWS + 10 + 60_000;
        assert_eq!(
            logged[i + 1],
            Logged::Change(Change::Held {
                ticket,
                user,
                expires_at_ms
            })
        );
        assert_eq!(
            sale.hold_of(user, DRAWS + 11),
            Ok(Some(Hold {
                ticket,
                status: HoldStatus::Held { expires_at_ms },
                durable: false
            }))
        );
    }
}

#[test]
fn a_restart_makes_the_same_draw_from_the_journal() {
    let (sale, journal) = sale(3, None);
    let users: Vec<u64> = (0..50).map(|i| i * 7919 + 1).collect();
    for &user in &users {
        let _ = sale.reserve(user, OPENS + 1);
    }
    let result = sale.run_draw(DRAWS).expect("due");
    let logged = journal.take();
    let entrants: Vec<u64> = logged
        .iter()
        .filter_map(|l| match l {
            Logged::Draw(DrawEvent::Entered { user }) => Some(*user),
            _ => None,
        })
        .collect();
    let sold: Vec<(u64, u32)> = logged
        .iter()
        .filter_map(|l| match l {
            Logged::Draw(DrawEvent::Won { user, ticket }) => Some((*user, *ticket)),
            _ => None,
        })
        .collect();
    let history = History {
        sold: &sold,
        entrants: &entrants,
        drawn_at_ms: Some(DRAWS),
        ..History::default()
    };
    let again = Sale::recover(spec(3, None), history, Arc::new(Recorder::default()))
        .expect("the same draw");
    assert_eq!(again.draw_phase(), Some(DrawPhase::Published));
    let replayed = again.draw_result().expect("published");
    assert_eq!(replayed.winners, result.winners);
    assert_eq!(replayed.entrants, result.entrants);

    // A log cut between the draw's record and its last winner is refused
    // until the missing winner is appended.
    let cut = History {
        sold: &sold[..2],
        ..history
    };
    assert!(Sale::recover(spec(3, None), cut, Arc::new(Recorder::default())).is_err());

    // Entries without the draw's record: the draw is still to be made.
    let undrawn = History {
        entrants: &entrants,
        ..History::default()
    };
    let pending =
        Sale::recover(spec(3, None), undrawn, Arc::new(Recorder::default())).expect("entries only");
    assert_eq!(pending.draw_phase(), Some(DrawPhase::Collecting));
    assert_eq!(
        pending.run_draw(DRAWS + 99).map(|r| r.winners.clone()),
        Some(result.winners.clone())
    );
}

#[test]
fn a_bad_window_is_refused() {
    let mut bad = spec(1, None);
    if let Some(draw) = &mut bad.draw {
        draw.window_ms = 0;
    }
    assert!(Sale::recover(bad, History::default(), Arc::new(Recorder::default())).is_err());
    assert!(Sale::new(spec(1, None)).is_err(), "a draw needs a journal");
    let debug = format!("{:?}", spec(1, None));
    assert!(
        !debug.contains(&flashsale_draw::to_hex(&SEED)) && !debug.contains("90, 90"),
        "the seed never shows in Debug: {debug}"
    );
}
