//! `flashsale-server export`: a sale's winners from the log, as CSV, for
//! operators without a database.
//!
//! Safe against the data directory of a running server: the log is opened
//! read-only and never locked, truncated or repaired (the pure
//! [`scan`], not the recovering open), and only
//! whole, valid records are printed. A record the server is writing at that
//! moment is simply not there yet. Records written but not yet synced may
//! be printed; they are whole and almost always become durable a moment
//! later.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use flashsale_wal::recovery::scan;
use flashsale_wal::{Record, LOG_FILE_NAME};

/// Writes `sale,ticket,user,sold_at` and one line per ticket sold in
/// `sale`, in log order, to `out`. Returns the number of tickets.
///
/// # Errors
/// When the log cannot be read, is not a log this version reads, does not
/// define `sale`, or `out` fails.
pub fn export_csv(data_dir: &Path, sale: &str, out: &mut dyn Write) -> anyhow::Result<usize> {
    let path = data_dir.join(LOG_FILE_NAME);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let scanned = scan(&bytes).with_context(|| format!("cannot read {}", path.display()))?;
    let defined = scanned
        .records
        .iter()
        .any(|r| matches!(r, Record::SaleDefined { sale: s, .. } if s == sale));
    anyhow::ensure!(defined, "{} defines no sale {sale:?}", path.display());
    writeln!(out, "sale,ticket,user,sold_at")?;
    let mut count = 0;
    for record in &scanned.records {
        if let Record::TicketSold {
            sale: s,
            ticket,
            user,
            at_ms,
        } = record
        {
            if s == sale {
                writeln!(
                    out,
                    "{},{ticket},{user},{}",
                    csv_field(s),
                    iso8601_utc(*at_ms)
                )?;
                count += 1;
            }
        }
    }
    out.flush()?;
    Ok(count)
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
            "sale,ticket,user,sold_at\n\
             a,1,10,2023-11-14T22:13:20.123Z\n\
             a,2,18446744073709551615,2023-11-14T22:13:20.123Z\n"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the log is untouched");
        assert!(export_csv(dir.path(), "nope", &mut Vec::new()).is_err());
        assert_eq!(csv_field("x,\"y\""), "\"x,\"\"y\"\"\"");
    }
}
