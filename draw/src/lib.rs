//! flashsale-draw: the rule of the fair draw, and the audit of a published one.
//!
//! A sale with a draw window does not sell its first tickets to whoever is a
//! few milliseconds faster. Everyone who asks inside the window is an
//! *entrant*; when the window closes, the tickets go to entrants in an order
//! no one could know or steer in advance, and that anyone can recompute
//! afterwards. The rule, fixed before the sale (and in `docs/FAIRNESS.md`):
//!
//! 1. When the sale is created the server draws a secret 32-byte `seed` and
//!    publishes `commitment = SHA-256(seed)`, in lowercase hex.
//! 2. At the draw, every entrant gets
//!    `score = SHA-256(seed || user_id as 8 bytes big-endian)`.
//! 3. Entrants are sorted by score ascending (the 32 bytes compared as one
//!    big-endian number); the first `capacity` win, and get tickets 1, 2, …
//!    in that order.
//! 4. The seed is published after the draw. Whoever holds the document
//!    checks that the seed hashes to the commitment published before the
//!    sale, and recomputes the winners from the seed and the entrants.
//!
//! The commitment binds the server to its seed before anyone enters, so it
//! cannot pick a seed that favours someone once it has seen the entrants;
//! the seed stays secret until the entries are closed, so no one can compute
//! in advance which user id would win. Entry time plays no part.
//!
//! This crate is that rule and nothing else: pure functions over bytes, no
//! I/O, no clock. The core draws with [`winners`], the server publishes a
//! [`Document`], and `flashsale-server audit --draw` and the load generator
//! check one with [`audit`].

mod document;
mod rule;

pub use document::{audit, Audit, AuditError, Document, Winner};
pub use rule::{commitment, parse_hex32, score, to_hex, winners, Seed, SEED_LEN};
