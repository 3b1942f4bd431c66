//! The sweep that ends unpaid holds on time, and makes draws when due.
//!
//! Every operation on a sale with holds first expires what is due, so no
//! answer ever reflects a hold past its deadline. But a sale nobody touches
//! must still give its tickets back: this thread looks at every sale with
//! holds a few times a second, and each expiry it triggers goes through the
//! same path (logged first, offered again once durable).
//!
//! The same thread makes each draw when its window closes (`drawer`): it
//! sleeps no later than the next close, so a draw is made within a
//! scheduler's tick of it.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use flashsale_core::clock::now_ms;
use tokio_util::sync::CancellationToken;

use crate::drawer;
use crate::serving::Serving;

/// How often the sweep runs: a hold outlives its deadline by at most this
/// much when nothing else touches its sale.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The running sweep.
pub struct Expiry {
    thread: JoinHandle<()>,
}

impl Expiry {
    /// Starts sweeping the sales of the service `serving` holds (on a node
    /// of a cluster, those of the term it leads) until `shutdown` is
    /// cancelled.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn start(serving: Arc<Serving>, shutdown: CancellationToken) -> anyhow::Result<Expiry> {
        let thread = std::thread::Builder::new()
            .name("flashsale-expiry".into())
            .spawn(move || {
                while !shutdown.is_cancelled() {
                    let Some(service) = serving.current() else {
                        std::thread::sleep(SWEEP_INTERVAL);
                        continue;
                    };
                    let now = now_ms();
                    for sale in service.sales().load().iter() {
                        let _next = sale.expire_due(now);
                    }
                    let next_draw = drawer::make_due(&service, now);
                    drop(service);
                    let until_draw =
                        next_draw.map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
                    std::thread::sleep(
                        until_draw.map_or(SWEEP_INTERVAL, |d| d.min(SWEEP_INTERVAL)),
                    );
                }
            })
            .context("cannot start the expiry thread")?;
        Ok(Expiry { thread })
    }

    /// Waits for the sweep to stop (after its shutdown token is cancelled).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the expiry thread panicked");
        }
    }
}
