//! What the server does when the log writer reports a batch: the
//! [`DurableHook`] that connects the log to the core and the metrics, so
//! that neither the log nor the core knows of the other.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flashsale_core::Registry;
use flashsale_wal::{DurableHook, Record};

use crate::journal::change_of;

/// Marks buyers durable when the log writer reports their records synced,
/// before any waiter is told (and, in a sale with holds, puts a released
/// ticket back on sale only then); and records each group commit in the
/// metrics.
///
/// The hook exists before the sales do (the log is opened, and its records
/// read, to build them), so it starts with none and is given them once, by
/// [`LogHook::track`]; until then it marks nothing.
#[derive(Default)]
pub struct LogHook {
    sales: OnceLock<Arc<Registry>>,
}

impl LogHook {
    /// Marks the buyers of `sales` from now on. Only the first call counts.
    pub fn track(&self, sales: Arc<Registry>) {
        let _ = self.sales.set(sales);
    }
}

impl DurableHook for LogHook {
    fn committed(&self, records: usize, fsync: Option<Duration>) {
        flashsale_metrics::wal_batch(records, fsync);
    }

    fn durable(&self, records: &[Record]) {
        let Some(registry) = self.sales.get() else {
            return;
        };
        let sales = registry.load();
        for record in records {
            if let Record::TicketSold { sale, user, .. } = record {
                if let Some(sale) = sales.get(sale) {
                    sale.mark_durable(*user);
                }
            } else if let Record::DrawEntered { sale, user, .. } = record {
                if let Some(sale) = sales.get(sale) {
                    sale.entry_durable(*user);
                }
            } else if let Some((sale, change)) = change_of(record) {
                if let Some(sale) = sales.get(sale) {
                    sale.change_durable(&change);
                }
            }
        }
    }
}
