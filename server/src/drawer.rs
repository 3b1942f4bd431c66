//! Makes each sale's draw when its window closes, and publishes it once
//! durable.
//!
//! The draw is made by the clock, not by a request: a request that arrives
//! after the close waits for it (see `service`), and a sale nobody asks
//! about is still drawn on time. Making a draw is one call into the core
//! (which journals the draw and its winners under the draw's lock); the
//! draw is then published only once the log has all of it on disk, so that
//! a crash before that point restarts into a draw no one was told about,
//! made again from the same durable entries.

use flashsale_core::draw::DrawPhase;
use flashsale_core::Sale;
use tokio::sync::oneshot;

use crate::service::Service;

/// Makes every draw due at `now_ms`, and publishes it once durable.
/// Returns the earliest draw still to come, so the caller can wake for it.
pub fn make_due(service: &Service, now_ms: u64) -> Option<u64> {
    let mut next: Option<u64> = None;
    for sale in service.sales().load().iter() {
        let Some(draws_at) = sale.draws_at_ms() else {
            continue;
        };
        if sale.draw_phase() != Some(DrawPhase::Collecting) {
            continue;
        }
        if draws_at > now_ms {
            next = Some(next.map_or(draws_at, |n| n.min(draws_at)));
            continue;
        }
        if let Some(result) = sale.run_draw(now_ms) {
            tracing::info!(
                sale = %sale.spec().id,
                entrants = result.entrants.len(),
                winners = result.winners.len(),
                "draw made"
            );
            publish(service, sale);
        }
    }
    next
}

/// Waits until the log has everything the draw journalled, then publishes
/// it. A log that fails leaves the draw unpublished: nothing about it is
/// answered, and a restart on a working log makes it again.
fn publish(service: &Service, sale: &Sale) {
    let (tx, rx) = oneshot::channel();
    service.wal().barrier(tx);
    match rx.blocking_recv() {
        Ok(Ok(())) => {
            sale.publish_draw();
            tracing::info!(sale = %sale.spec().id, "draw published");
        }
        Ok(Err(e)) => {
            tracing::error!(sale = %sale.spec().id, error = %e, "the draw could not be made durable; it stays unpublished");
        }
        Err(_) => {
            tracing::error!(sale = %sale.spec().id, "the log writer stopped before the draw was durable")
        }
    }
}
