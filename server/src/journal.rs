//! The log records of a sale with holds, both ways: the [`Journal`] that
//! writes the core's decisions to the log, and the reading of those records
//! back into the core's [`Change`]s (at startup, and when the log reports
//! them durable). One mapping, so that what is written is what is replayed.

use flashsale_core::draw::DrawEvent;
use flashsale_core::holds::Change;
use flashsale_core::Journal;
use flashsale_wal::{Record, Wal};

/// Queues every decision of a sale with holds on the log, in the order the
/// core took them (the log writer keeps queue order).
pub struct WalJournal {
    wal: Wal,
}

impl WalJournal {
    /// A journal writing to `wal`.
    pub fn new(wal: Wal) -> WalJournal {
        WalJournal { wal }
    }
}

impl Journal for WalJournal {
    fn write(&self, sale: &str, change: &Change, at_ms: u64) {
        // No reply: whoever answers on this change waits for a barrier
        // queued after it, and learns of a failed log from that barrier.
        self.wal.append(record_of(sale, change, at_ms), None);
    }

    fn draw(&self, sale: &str, event: &DrawEvent, at_ms: u64) {
        // Like a hold: whoever answers on it waits for a barrier after it.
        self.wal.append(draw_record_of(sale, event, at_ms), None);
    }
}

/// The record that logs `event` of `sale`'s draw, at `at_ms`.
pub fn draw_record_of(sale: &str, event: &DrawEvent, at_ms: u64) -> Record {
    let sale = sale.to_owned();
    match *event {
        DrawEvent::Entered { user } => Record::DrawEntered { sale, user, at_ms },
        DrawEvent::Drawn => Record::DrawMade { sale, at_ms },
        DrawEvent::Won { user, ticket } => Record::TicketSold {
            sale,
            ticket,
            user,
            at_ms,
        },
    }
}

/// The record that logs `change` of `sale`, decided at `at_ms`.
pub fn record_of(sale: &str, change: &Change, at_ms: u64) -> Record {
    let sale = sale.to_owned();
    match change {
        Change::Held {
            ticket,
            user,
            expires_at_ms,
        } => Record::HoldTaken {
            sale,
            ticket: *ticket,
            user: *user,
            at_ms,
            expires_at_ms: *expires_at_ms,
        },
        Change::Confirmed {
            ticket,
            user,
            payment_ref,
        } => Record::HoldConfirmed {
            sale,
            ticket: *ticket,
            user: *user,
            at_ms,
            payment_ref: payment_ref.to_string(),
        },
        Change::Released {
            ticket,
            user,
            reason,
        } => Record::TicketReleased {
            sale,
            ticket: *ticket,
            user: *user,
            at_ms,
            reason: *reason,
        },
    }
}

/// The sale and the change a hold record logs; `None` for other records.
pub fn change_of(record: &Record) -> Option<(&str, Change)> {
    Some(match record {
        Record::HoldTaken {
            sale,
            ticket,
            user,
            expires_at_ms,
            ..
        } => (
            sale,
            Change::Held {
                ticket: *ticket,
                user: *user,
                expires_at_ms: *expires_at_ms,
            },
        ),
        Record::HoldConfirmed {
            sale,
            ticket,
            user,
            payment_ref,
            ..
        } => (
            sale,
            Change::Confirmed {
                ticket: *ticket,
                user: *user,
                payment_ref: payment_ref.as_str().into(),
            },
        ),
        Record::TicketReleased {
            sale,
            ticket,
            user,
            reason,
            ..
        } => (
            sale,
            Change::Released {
                ticket: *ticket,
                user: *user,
                reason: *reason,
            },
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale_protocol::ReleaseReason;

    #[test]
    fn every_change_reads_back_as_itself() {
        for change in [
            Change::Held {
                ticket: 1,
                user: 2,
                expires_at_ms: 3,
            },
            Change::Confirmed {
                ticket: 1,
                user: 2,
                payment_ref: "pi".into(),
            },
            Change::Released {
                ticket: 1,
                user: 2,
                reason: ReleaseReason::Cancelled,
            },
        ] {
            let record = record_of("gig", &change, 9);
            assert_eq!(change_of(&record), Some(("gig", change)));
        }
        let sold = Record::TicketSold {
            sale: "gig".into(),
            ticket: 1,
            user: 2,
            at_ms: 3,
        };
        assert_eq!(change_of(&sold), None);
    }
}
