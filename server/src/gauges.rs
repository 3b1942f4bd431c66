//! The gauges that are read rather than pushed.
//!
//! Stock changes on the reserve path, which must not touch a gauge, and the
//! log's health is the log's own flag: copying either into the metrics as
//! it changes would be a second source of truth, or a cost on the hot path.
//! So both are copied when they are read, right before `/metrics` renders.

use flashsale_core::clock::now_ms;
use flashsale_metrics as metrics;

use crate::service::Service;

/// Sets the stock gauges of every sale, and the log's health gauge, to what
/// they are now.
pub fn refresh(service: &Service) {
    let now = now_ms();
    for sale in service.sales().load().iter() {
        let status = sale.status(now);
        metrics::set_stock(&sale.spec().id, status.remaining, status.sold);
    }
    metrics::wal_healthy(service.wal().is_healthy());
}

/// [`refresh`], then the Prometheus text: what `GET /metrics` serves.
pub fn render(service: &Service) -> String {
    refresh(service);
    metrics::render()
}
