//! [`Draw`]: the entries of a sale with a draw window, and the draw itself.
//!
//! In a sale with a draw window, a reservation between `opens_at` and
//! `opens_at + window` sells nothing: it *enters* the user. When the window
//! closes, the tickets go to entrants by the rule of `flashsale-draw`
//! (lowest `SHA-256(seed || user)` first), in one step, and only then does
//! the sale go on as an ordinary one: unfilled tickets sell first come,
//! first served, and a drawn winner of a sale with holds holds their ticket
//! until the payment deadline like any buyer.
//!
//! # Phases
//!
//! - **Collecting**: entries are taken, under one lock (an entry is a
//!   `HashMap` insert, and the window is seconds long: a lock-free set buys
//!   nothing here), and each new one is queued on the journal under that
//!   lock, so the log holds every entry before the draw's record.
//! - **Drawn**: [`Sale::run_draw`](crate::Sale::run_draw) has, under the
//!   same lock, queued the draw's record and then each winner's ticket
//!   (its `TicketSold` or hold) and given the winners their tickets in the
//!   engine. Nothing about the draw is answered yet: a crash now could
//!   lose an entry that was queued but not synced, and the draw made again
//!   after a restart would then differ.
//! - **Published**: the caller saw everything up to the last winner durable
//!   and called [`Sale::publish_draw`](crate::Sale::publish_draw). Now, and
//!   never before, the seed is shown, the winners are told, and the sale
//!   sells what is left.
//!
//! A restart rebuilds the entries from the log. If the draw's record is
//! there, the draw is made again from the seed and the logged entries, which
//! are exactly the ones it was made from (every entry is logged before the
//! draw's record, and the log is a prefix), so it gives the same winners;
//! the server re-appends any winner's record a crash cut off. If it is not
//! there, the draw was never published, and it is made at the next chance.
//!
//! Entry time plays no part: the set of entrants is all the draw sees.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use flashsale_draw::{commitment, Seed};

use super::held::Journal;

/// Longest draw window a sale accepts: a day, in milliseconds.
pub const MAX_DRAW_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// A sale's draw: how long entries are taken, and the secret that decides.
#[derive(Clone, PartialEq, Eq)]
pub struct DrawSpec {
    /// Entries are taken from `opens_at` for this many milliseconds,
    /// 1..=[`MAX_DRAW_WINDOW_MS`].
    pub window_ms: u64,
    /// The secret seed; published only after the draw.
    pub seed: Seed,
}

impl fmt::Debug for DrawSpec {
    // Never the seed: a spec ends up in logs and panics long before the
    // draw, and a seed seen early lets anyone pick winning user ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrawSpec")
            .field("window_ms", &self.window_ms)
            .field(
                "commitment",
                &flashsale_draw::to_hex(&commitment(&self.seed)),
            )
            .finish_non_exhaustive()
    }
}

/// What the draw of a sale writes to its journal, in this order: every
/// entry, then `Drawn`, then (in a sale without holds) each winner's ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrawEvent {
    /// `user` entered the draw.
    Entered {
        /// The entrant.
        user: u64,
    },
    /// The draw was made; what follows are its winners.
    Drawn,
    /// In a sale without holds: the draw gave `ticket` to `user`.
    Won {
        /// The winner.
        user: u64,
        /// Their ticket.
        ticket: u32,
    },
}

/// Where a draw stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrawPhase {
    /// Entries are taken (or the window closed and the draw is due).
    Collecting,
    /// Drawn, not yet durable: nothing about it may be answered.
    Drawn,
    /// Drawn and durable: the seed and the winners are public.
    Published,
}

/// A user's entry, as [`Sale::entry_of`](crate::Sale::entry_of) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Whether the entry is on disk.
    pub durable: bool,
    /// Where the draw stands.
    pub phase: DrawPhase,
}

/// A draw's public facts, for the sale's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawStatus {
    /// `SHA-256(seed)`.
    pub commitment: [u8; 32],
    /// When entries close and the draw is made, Unix milliseconds.
    pub draws_at_ms: u64,
    /// Entrants so far.
    pub entrants: u32,
    /// The seed, once the draw is published.
    pub seed: Option<Seed>,
}

/// A draw that was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawResult {
    /// When it was made, Unix milliseconds.
    pub drawn_at_ms: u64,
    /// The winners in ticket order: the first has ticket 1.
    pub winners: Vec<u64>,
    /// Every entrant, ascending.
    pub entrants: Vec<u64>,
}

const COLLECTING: u8 = 0;
const DRAWN: u8 = 1;
const PUBLISHED: u8 = 2;

/// The entries and the draw of one sale.
pub(crate) struct Draw {
    spec: DrawSpec,
    draws_at_ms: u64,
    commitment: [u8; 32],
    phase: AtomicU8,
    /// Entrants, readable without the lock (the status of every page).
    count: AtomicU32,
    /// Entrant to "its entry is durable".
    entries: Mutex<HashMap<u64, bool>>,
    result: OnceLock<Arc<DrawResult>>,
    journal: Arc<dyn Journal>,
}

impl Draw {
    /// A draw for a sale opening at `opens_at_ms`, with the entries its log
    /// holds (all durable) and, if its draw record is there, the time it was
    /// made: the caller then calls [`Draw::set_result`] with the same draw.
    pub(crate) fn restore(
        spec: DrawSpec,
        opens_at_ms: u64,
        entrants: &[u64],
        journal: Arc<dyn Journal>,
    ) -> Draw {
        let entries: HashMap<u64, bool> = entrants.iter().map(|&u| (u, true)).collect();
        Draw {
            draws_at_ms: opens_at_ms.saturating_add(spec.window_ms),
            commitment: commitment(&spec.seed),
            phase: AtomicU8::new(COLLECTING),
            count: AtomicU32::new(u32::try_from(entries.len()).unwrap_or(u32::MAX)),
            entries: Mutex::new(entries),
            result: OnceLock::new(),
            journal,
            spec,
        }
    }

    pub(crate) fn draws_at_ms(&self) -> u64 {
        self.draws_at_ms
    }

    pub(crate) fn phase(&self) -> DrawPhase {
        match self.phase.load(Ordering::Acquire) {
            COLLECTING => DrawPhase::Collecting,
            DRAWN => DrawPhase::Drawn,
            _ => DrawPhase::Published,
        }
    }

    /// Enters `user` at `now_ms` (the caller checked it is inside the
    /// window). `None` once the draw is made: entries are closed.
    pub(crate) fn enter(&self, sale: &str, user: u64, now_ms: u64) -> Option<Entry> {
        let mut entries = self.lock();
        if self.phase() != DrawPhase::Collecting {
            return None;
        }
        let durable = *entries.entry(user).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::Relaxed);
            self.journal
                .draw(sale, &DrawEvent::Entered { user }, now_ms);
            false
        });
        Some(Entry {
            durable,
            phase: DrawPhase::Collecting,
        })
    }

    /// `user`'s entry, if they entered.
    pub(crate) fn entry_of(&self, user: u64) -> Option<Entry> {
        let entries = self.lock();
        let durable = *entries.get(&user)?;
        Some(Entry {
            durable,
            phase: self.phase(),
        })
    }

    /// The log has `user`'s entry on disk.
    pub(crate) fn entry_durable(&self, user: u64) {
        if let Some(durable) = self.lock().get_mut(&user) {
            *durable = true;
        }
    }

    /// Makes the draw at `now_ms` if it is due and not made: under the
    /// entries' lock, journals `Drawn`, lets `grant` give the winners their
    /// tickets (and journal them), and moves to [`DrawPhase::Drawn`].
    pub(crate) fn run(
        &self,
        sale: &str,
        capacity: u32,
        now_ms: u64,
        grant: impl FnOnce(&[u64], &dyn Journal),
    ) -> Option<Arc<DrawResult>> {
        if now_ms < self.draws_at_ms {
            return None;
        }
        let entries = self.lock();
        if self.phase() != DrawPhase::Collecting {
            return None;
        }
        let mut entrants: Vec<u64> = entries.keys().copied().collect();
        let winners = flashsale_draw::winners(&self.spec.seed, &entrants, capacity);
        self.journal.draw(sale, &DrawEvent::Drawn, now_ms);
        grant(&winners, &*self.journal);
        entrants.sort_unstable();
        let result = Arc::new(DrawResult {
            drawn_at_ms: now_ms,
            winners,
            entrants,
        });
        self.set_result(Arc::clone(&result), DrawPhase::Drawn);
        drop(entries);
        Some(result)
    }

    /// Records the draw's result in `phase` (a restart's replay, or
    /// [`Draw::run`]).
    pub(crate) fn set_result(&self, result: Arc<DrawResult>, phase: DrawPhase) {
        let _ = self.result.set(result);
        let code = match phase {
            DrawPhase::Collecting => COLLECTING,
            DrawPhase::Drawn => DRAWN,
            DrawPhase::Published => PUBLISHED,
        };
        self.phase.store(code, Ordering::Release);
    }

    /// The draw is durable: publish it. False if it was not made.
    pub(crate) fn publish(&self) -> bool {
        self.phase
            .compare_exchange(DRAWN, PUBLISHED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            || self.phase() == DrawPhase::Published
    }

    /// The published result; `None` until the draw is published.
    pub(crate) fn published(&self) -> Option<Arc<DrawResult>> {
        (self.phase() == DrawPhase::Published)
            .then(|| self.result.get().cloned())
            .flatten()
    }

    pub(crate) fn status(&self) -> DrawStatus {
        DrawStatus {
            commitment: self.commitment,
            draws_at_ms: self.draws_at_ms,
            entrants: self.count.load(Ordering::Relaxed),
            seed: (self.phase() == DrawPhase::Published).then_some(self.spec.seed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, bool>> {
        // Every change to the map is one insert or one flag: a panic
        // elsewhere under the lock leaves it whole.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
