//! flashsale-core, the reservation core: lock-free stock and buyer set.
//!
//! A [`Sale`] answers "may user `u` have a ticket?" for tens of thousands of
//! requests in the same second, from every core at once, with no lock on the
//! path. It holds two pieces of shared state:
//!
//! - the **stock**, an `AtomicU32` of tickets left, only ever decremented by
//!   compare-and-swap and never below zero;
//! - the **buyer set**, a sharded open-addressing table mapping each user to a
//!   slot state: *claiming* (a request of this user is deciding), a *pending*
//!   ticket (won, not yet on disk), a *durable* ticket, or *no ticket* (the
//!   claim lost the race for the last tickets). Keys are never removed.
//!
//! # The reserve algorithm
//!
//! 1. Before `opens_at_ms`: [`Reservation::NotOpen`].
//! 2. Read the stock, then look the user up. If the user has a slot, answer
//!    from it ([`Reservation::AlreadyOwned`] or [`Reservation::SoldOut`]),
//!    waiting briefly if a concurrent request of the same user is still
//!    deciding.
//! 3. If the stock read was zero: [`Reservation::SoldOut`].
//! 4. Claim the user's slot (CAS empty to this user). If another request of
//!    the user claimed first, answer from its slot as in step 2.
//! 5. CAS-decrement the stock. The k-th successful decrement takes the k-th
//!    free ticket: publish it in the slot as pending and answer
//!    [`Reservation::Won`]. If the stock hit zero first, publish *no ticket*
//!    and answer [`Reservation::SoldOut`].
//!
//! # Why this order
//!
//! **Claim the user, then take stock.** The claim is what makes "one ticket per
//! user" hold: only the request that owns the claim may decrement. The reverse
//! order (take stock, then find the user already has one, then give the stock
//! back) lets other users read a transient zero and be told "sold out" while a
//! ticket is still to be returned: a sold-out answer no serial order explains.
//!
//! **Read the stock before the buyer set.** Every decrement is a release
//! operation after its request's claim, and the stock read is an acquire: so a
//! zero read happens-after the claim of every winner, and the lookup that
//! follows it sees the user's slot if the user won. Reading the buyer set first
//! would let a request miss its own concurrent twin's claim, then read the
//! zero that twin produced, and answer `SoldOut` to a user who holds a ticket.
//!
//! # Sold out means read-only
//!
//! After the stock reaches zero, a request does an atomic load of the stock and
//! a read-only probe of the buyer set, and nothing else: no CAS, no store, no
//! counter. The flood of late requests after a sell-out therefore shares the
//! stock's and the table's cache lines between cores instead of bouncing them.
//! `tests/core_stress.rs` checks that this path leaves the buyer set unchanged.
//!
//! # The operator's gate
//!
//! Pause and close are two bits above the count in the stock's word, so the
//! step-2 read learns the gate with the count, in the same single load: a
//! paused, closed or sold-out sale costs one atomic load and a read-only probe.
//! A user who already has a slot is answered from it first (a winner still
//! learns their ticket while the sale is paused). A request that read the gate
//! open and claimed its slot finishes even if a pause lands in between; a
//! request that reads the gate after the pause (`tests/loom_reserve.rs`,
//! `pause_stops_every_request_that_sees_it`) is refused and claims nothing.
//! Closed is final.
//!
//! # Sales with holds
//!
//! In a sale with holds (`SaleSpec::hold_ms`) a win is a hold that the shop
//! confirms once paid, and that otherwise expires or is cancelled: stock comes
//! back, and "a stock once zero stays zero" no longer holds. Such a sale does
//! not use the lock-free path at all: its [`holds::HoldBook`] decides every
//! operation under one lock, with time as an argument, and writes each
//! decision to the sale's [`Journal`] in order before it is answered or acted
//! on. The book's module docs state its invariants (each ticket free, held by
//! one user, confirmed for one user, or releasing; a user with at most one);
//! its property tests check them after every operation and that the journal
//! replays to the same state; `tests/holds_sale.rs` races buyers, payers,
//! cancels and expiries on threads; and `tests/loom_reserve.rs`
//! (`confirm_races_with_expiry`) checks that a payment racing the deadline is
//! decided exactly once. Sales without holds are untouched by any of this.
//!
//! # Durability
//!
//! `Won` is not yet a promise to the user: the caller logs the win and, after
//! the log's sync, calls [`Sale::mark_durable`]. A crash can lose wins not yet
//! synced, and wins are numbered at CAS time but logged in whatever order
//! their requests reach the writer, so the durable tickets after a restart may
//! have gaps. [`Sale::restore`] rebuilds a sale from them, and its allocator
//! then sells the free ticket numbers in increasing order.
//!
//! # Layout
//!
//! - `sale`: [`Sale`], [`SaleSpec`], the answers, and the algorithm above.
//! - `stock`: the stock counter with the operator's gate, and the ticket
//!   allocator.
//! - `buyers`: the sharded lock-free buyer set and its slot state encoding.
//! - `holds`: [`holds::HoldBook`], the state machine of a sale with holds.
//! - `held`: a sale with holds, its book behind one lock, and [`Journal`].
//! - `draw`: the entries and the draw of a sale with a draw window
//!   (the rule itself is the `flashsale-draw` crate).
//! - `registry`: [`Sales`], every sale by id, and [`Registry`], which adds
//!   sales at runtime without locking readers.
//! - `sync`: atomics, swapped for loom's under the `loom` feature so that
//!   `tests/loom_reserve.rs` model-checks this exact code.

mod buyers;
pub mod clock;
pub mod draw;
mod error;
mod held;
pub mod holds;
mod registry;
mod sale;
mod stock;
mod sync;

pub use draw::{DrawSpec, MAX_DRAW_WINDOW_MS};
pub use error::CoreError;
pub use held::Journal;
pub use registry::{Registry, Sales};
pub use sale::{
    History, HoldError, Holding, Reservation, Sale, SaleSpec, SaleState, SaleStatus, MAX_CAPACITY,
    MAX_HOLD_MS, MAX_OPENS_AT_MS,
};
