//! `flashsale-server export`: a sale's winners from the log, as CSV, for
//! operators without a database. In a sale with holds, the tickets held or
//! confirmed now (a released ticket is no one's), each with its status.
//!
//! Safe against the data directory of a running server: the log is opened
//! read-only and never locked, truncated or repaired (the pure
//! [`scan`], not the recovering open), and only
//! whole, valid records are printed. A record the server is writing at that
//! moment is simply not there yet. Records written but not yet synced may
//! be printed; they are whole and almost always become durable a moment
//! later.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use flashsale_wal::recovery::scan;
use flashsale_wal::{Record, LOG_FILE_NAME};

/// Writes `sale,ticket,user,sold_at,status` and one line per ticket of
/// `sale` to `out`: in a sale without holds every ticket sold, in log order,
/// with status `sold`; in a sale with holds every ticket held or confirmed
/// now, by ticket number, with status `held` or `confirmed` and the time it
/// was taken. Returns the number of tickets.
///
/// # Errors
/// When the log cannot be read, is not a log this version reads, does not
/// define `sale`, or `out` fails.
pub fn export_csv(data_dir: &Path, sale: &str, out: &mut dyn Write) -> anyhow::Result<usize> {
    let path = data_dir.join(LOG_FILE_NAME);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let scanned = scan(&bytes).with_context(|| format!("cannot read {}", path.display()))?;
    let defined = scanned.records.iter().any(|r| {
        matches!(
            r,
            Record::SaleDefined { sale: s, .. }
                | Record::SaleWithHolds { sale: s, .. }
                | Record::SaleWithDraw { sale: s, .. }
                if s == sale
        )
    });
    anyhow::ensure!(defined, "{} defines no sale {sale:?}", path.display());
    writeln!(out, "sale,ticket,user,sold_at,status")?;
    let mut held: BTreeMap<u32, (u64, u64, &str)> = BTreeMap::new();
    let mut count = 0;
    for record in &scanned.records {
        match record {
            Record::TicketSold {
                sale: s,
                ticket,
                user,
                at_ms,
            } if s == sale => {
                line(out, sale, *ticket, *user, *at_ms, "sold")?;
                count += 1;
            }
            Record::HoldTaken {
                sale: s,
                ticket,
                user,
                at_ms,
                ..
            } if s == sale => {
                held.insert(*ticket, (*user, *at_ms, "held"));
            }
            Record::HoldConfirmed {
                sale: s, ticket, ..
            } if s == sale => {
                if let Some(entry) = held.get_mut(ticket) {
                    entry.2 = "confirmed";
                }
            }
            Record::TicketReleased {
                sale: s, ticket, ..
            } if s == sale => {
                held.remove(ticket);
            }
            _ => {}
        }
    }
    for (ticket, (user, at_ms, status)) in &held {
        line(out, sale, *ticket, *user, *at_ms, status)?;
        count += 1;
    }
    out.flush()?;
    Ok(count)
}

fn line(
    out: &mut dyn Write,
    sale: &str,
    ticket: u32,
    user: u64,
    at_ms: u64,
    status: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{},{ticket},{user},{},{status}",
        csv_field(sale),
        iso8601_utc(at_ms)
    )
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Unix milliseconds as ISO 8601 (RFC 3339) in UTC, to the millisecond:
/// `2024-05-01T12:00:00.123Z`.
pub fn iso8601_utc(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale_wal::{NoHook, WalConfig};
    use std::sync::Arc;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601_utc(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn exports_the_drawn_winners_of_a_sale_with_a_draw() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = WalConfig::default_for(dir.path())
            .open(Arc::new(NoHook))
            .unwrap();
        let records = [
            Record::SaleWithDraw {
                sale: "d".into(),
                capacity: 2,
                opens_at_ms: 0,
                hold_ms: None,
                window_ms: 10,
                seed: flashsale_wal::DrawSeed([1; 32]),
            },
            Record::DrawEntered {
                sale: "d".into(),
                user: 5,
                at_ms: 1,
            },
            Record::DrawMade {
                sale: "d".into(),
                at_ms: 10,
            },
            Record::TicketSold {
                sale: "d".into(),
                ticket: 1,
                user: 5,
                at_ms: 10,
            },
        ];
        for record in records {
            wal.append_durable(record).unwrap();
        }
        wal.shutdown().unwrap();
        let mut out = Vec::new();
        assert_eq!(export_csv(dir.path(), "d", &mut out).unwrap(), 1);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("d,1,5,1970-01-01T00:00:00.010Z,sold\n"));
    }

    #[test]
    fn exports_one_sale_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = WalConfig::default_for(dir.path())
            .open(Arc::new(NoHook))
            .unwrap();
        for sale in ["a", "b"] {
            let def = Record::SaleDefined {
                sale: sale.into(),
                capacity: 5,
                opens_at_ms: 0,
            };
            wal.append_durable(def).unwrap();
        }
        for (sale, ticket, user) in [("a", 1, 10), ("b", 1, 11), ("a", 2, u64::MAX)] {
            let sold = Record::TicketSold {
                sale: sale.into(),
                ticket,
                user,
                at_ms: 1_700_000_000_123,
            };
            wal.append_durable(sold).unwrap();
        }
        wal.shutdown().unwrap();
        // Half a record at the end, as while a server is writing one.
        let path = dir.path().join(LOG_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[20, 0, 0, 0, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();

        let mut out = Vec::new();
        assert_eq!(export_csv(dir.path(), "a", &mut out).unwrap(), 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "sale,ticket,user,sold_at,status\n\
             a,1,10,2023-11-14T22:13:20.123Z,sold\n\
             a,2,18446744073709551615,2023-11-14T22:13:20.123Z,sold\n"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the log is untouched");
        assert!(export_csv(dir.path(), "nope", &mut Vec::new()).is_err());
        assert_eq!(csv_field("x,\"y\""), "\"x,\"\"y\"\"\"");
    }

    #[test]
    fn a_sale_with_holds_exports_who_holds_what_now() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = WalConfig::default_for(dir.path())
            .open(Arc::new(NoHook))
            .unwrap();
        let h = |ticket, user, at_ms| Record::HoldTaken {
            sale: "h".into(),
            ticket,
            user,
            at_ms,
            expires_at_ms: at_ms + 1000,
        };
        for record in [
            Record::SaleWithHolds {
                sale: "h".into(),
                capacity: 3,
                opens_at_ms: 0,
                hold_ms: 1000,
            },
            h(1, 10, 0),
            h(2, 11, 0),
            h(3, 12, 0),
            Record::HoldConfirmed {
                sale: "h".into(),
                ticket: 2,
                user: 11,
                at_ms: 5,
                payment_ref: "p".into(),
            },
            Record::TicketReleased {
                sale: "h".into(),
                ticket: 1,
                user: 10,
                at_ms: 1000,
                reason: flashsale_protocol::ReleaseReason::Expired,
            },
            h(1, 13, 1_700_000_000_123),
        ] {
            wal.append_durable(record).unwrap();
        }
        wal.shutdown().unwrap();
        let mut out = Vec::new();
        assert_eq!(export_csv(dir.path(), "h", &mut out).unwrap(), 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "sale,ticket,user,sold_at,status\n\
             h,1,13,2023-11-14T22:13:20.123Z,held\n\
             h,2,11,1970-01-01T00:00:00.000Z,confirmed\n\
             h,3,12,1970-01-01T00:00:00.000Z,held\n"
        );
    }
}
