//! Atomics and waiting, swapped for loom's under the `loom` feature.
//!
//! Everything in `core` that touches shared state goes through this module, so
//! `tests/loom_reserve.rs` can explore every interleaving of the reserve path
//! with the very code the server runs.

#[cfg(feature = "loom")]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(feature = "loom")]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Spin-then-yield backoff for the short wait on a concurrent claim.
///
/// The wait it serves is bounded by a few instructions of another thread
/// (see `BuyerSlot::resolve`), so it spins first; yielding only matters when
/// that thread was preempted inside the window.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    step: u32,
}

/// Doublings of the spin phase before [`Backoff`] starts yielding.
#[cfg(not(feature = "loom"))]
const SPIN_STEPS: u32 = 6;

impl Backoff {
    /// Waits a little longer than the previous call did.
    pub(crate) fn snooze(&mut self) {
        #[cfg(feature = "loom")]
        {
            // loom needs every busy-wait to yield, or it would explore an
            // unbounded number of spins of the waiting thread.
            self.step = self.step.saturating_add(1);
            loom::thread::yield_now();
        }
        #[cfg(not(feature = "loom"))]
        {
            if self.step < SPIN_STEPS {
                for _ in 0..(1u32 << self.step) {
                    std::hint::spin_loop();
                }
                self.step += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}
