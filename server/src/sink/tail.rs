//! Reading the durable part of `wal.log` from a position onwards, through a
//! read-only handle of the drain's own, with the log's pure decoder.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::SinkError;
use flashsale_wal::record::{check_file_header, decode_record, DecodeError, FILE_HEADER_LEN};
use flashsale_wal::Record;

/// Most bytes read from the log at once.
const CHUNK: u64 = 1 << 20;

/// One sold ticket, or one change of a held ticket, read from the log and
/// not yet in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) sale: String,
    pub(crate) ticket: u32,
    pub(crate) user: u64,
    pub(crate) at_ms: u64,
    /// What happened to the ticket.
    pub(crate) event: Event,
    /// File offset just after this row's record.
    pub(crate) end: u64,
}

/// What a row records: a final sale, or a change of a sale with holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Sold for good (`flashsale_tickets`).
    Sold,
    /// Held until the deadline (`flashsale_hold_events`, and the rest).
    Held { expires_at_ms: u64 },
    /// Paid.
    Confirmed { payment_ref: String },
    /// Back in stock.
    Released {
        reason: flashsale_protocol::ReleaseReason,
    },
}

impl Row {
    /// The row a record makes, if it is about a ticket.
    fn of(record: &Record, end: u64) -> Option<Row> {
        let (sale, ticket, user, at_ms) = record.ticket_fields()?;
        let event = match record {
            Record::TicketSold { .. } => Event::Sold,
            Record::HoldTaken { expires_at_ms, .. } => Event::Held {
                expires_at_ms: *expires_at_ms,
            },
            Record::HoldConfirmed { payment_ref, .. } => Event::Confirmed {
                payment_ref: payment_ref.clone(),
            },
            Record::TicketReleased { reason, .. } => Event::Released { reason: *reason },
            _ => return None,
        };
        Some(Row {
            sale: sale.to_owned(),
            ticket,
            user,
            at_ms,
            event,
            end,
        })
    }
}

/// A reader of the log from a position up to its durable end.
pub(crate) struct Tail {
    file: File,
    path: PathBuf,
    /// Offset of the first byte not yet read: always a record boundary.
    pos: u64,
    buf: Vec<u8>,
}

impl Tail {
    /// Opens `wal.log` in `dir` read-only and checks its header. Reading
    /// starts at the first record; see [`Tail::seek`].
    pub(crate) fn open(path: &Path) -> Result<Tail, SinkError> {
        let file = File::open(path).map_err(|e| SinkError::Log {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut header = [0u8; FILE_HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| e.to_string())
            .and_then(|()| check_file_header(&header).map_err(|e| e.to_string()))
            .map_err(|reason| SinkError::Log {
                path: path.to_owned(),
                reason,
            })?;
        Ok(Tail {
            file,
            path: path.to_owned(),
            pos: FILE_HEADER_LEN as u64,
            buf: Vec::new(),
        })
    }

    /// Offset of the next record to read.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Restarts reading at `pos`, a position stored by an earlier drain.
    ///
    /// # Errors
    /// [`SinkError::BeyondEnd`] when `pos` is before the first record or
    /// past `durable`: the log is not the one the position was stored for
    /// (replaced, or cut), and guessing would lose or repeat tickets.
    pub(crate) fn seek(&mut self, pos: u64, durable: u64) -> Result<(), SinkError> {
        if pos < FILE_HEADER_LEN as u64 || pos > durable {
            return Err(SinkError::BeyondEnd {
                path: self.path.clone(),
                stored: pos,
                end: durable,
            });
        }
        self.pos = pos;
        Ok(())
    }

    /// Reads every whole record from the current position up to `durable`
    /// (an offset published by the writer: the end of a whole record) and
    /// appends the sold tickets to `out`.
    ///
    /// # Errors
    /// [`SinkError::Log`] when the file cannot be read up to `durable`, and
    /// [`SinkError::Damaged`] when a record in the durable part does not
    /// decode, or the position is not a record boundary: both mean the file
    /// is not what the writer wrote, and nothing after it can be trusted.
    pub(crate) fn read_to(
        &mut self,
        durable: u64,
        out: &mut VecDeque<Row>,
    ) -> Result<(), SinkError> {
        while self.pos < durable {
            let want = (durable - self.pos).min(CHUNK);
            let capped = want < durable - self.pos;
            // `want` is at most CHUNK, so it fits in usize.
            self.buf.resize(want as usize, 0);
            self.file
                .read_exact_at(&mut self.buf, self.pos)
                .map_err(|e| SinkError::Log {
                    path: self.path.clone(),
                    reason: format!("cannot read {want} bytes at offset {}: {e}", self.pos),
                })?;
            let used = decode_rows(&self.buf, self.pos, capped, out).map_err(|(at, error)| {
                SinkError::Damaged {
                    path: self.path.clone(),
                    offset: at,
                    error,
                }
            })?;
            self.pos += used as u64;
        }
        Ok(())
    }
}

/// Decodes the records of `buf` (read at file offset `base`), pushing sold
/// tickets and hold changes to `out`. Returns the bytes used. With `capped`, `buf` was cut
/// short of the durable end, so a record cut at its end is read next time;
/// otherwise every byte must belong to a whole record.
fn decode_rows(
    buf: &[u8],
    base: u64,
    capped: bool,
    out: &mut VecDeque<Row>,
) -> Result<usize, (u64, DecodeError)> {
    let mut used = 0;
    while let Some(rest) = buf.get(used..).filter(|r| !r.is_empty()) {
        match decode_record(rest) {
            Ok((record, len)) => {
                used += len;
                out.extend(Row::of(&record, base + used as u64));
            }
            Err(DecodeError::ShortHeader { .. } | DecodeError::ShortPayload { .. })
                if capped && used > 0 =>
            {
                break;
            }
            Err(e) => return Err((base + used as u64, e)),
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale_wal::{NoHook, WalConfig};
    use std::sync::Arc;

    fn sold(ticket: u32) -> Record {
        Record::TicketSold {
            sale: "s".into(),
            ticket,
            user: u64::from(ticket) + 1000,
            at_ms: 7,
        }
    }

    #[test]
    fn reads_only_up_to_the_durable_end_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = WalConfig::default_for(dir.path())
            .open(Arc::new(NoHook))
            .unwrap();
        assert_eq!(wal.durable_offset(), FILE_HEADER_LEN as u64);
        let definition = Record::SaleDefined {
            sale: "s".into(),
            capacity: 9,
            opens_at_ms: 0,
        };
        wal.append_durable(definition).unwrap();
        wal.append_durable(sold(1)).unwrap();
        let first = wal.durable_offset();
        let len = std::fs::metadata(dir.path().join("wal.log")).unwrap().len();
        assert_eq!(first, len, "the durable end is the synced length");

        let mut tail = Tail::open(&dir.path().join("wal.log")).unwrap();
        let mut rows = VecDeque::new();
        tail.read_to(first, &mut rows).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].ticket, rows[0].user, rows[0].end),
            (1, 1001, first)
        );

        wal.append_durable(sold(2)).unwrap();
        wal.append_durable(sold(3)).unwrap();
        let end = wal.durable_offset();
        tail.read_to(end, &mut rows).unwrap();
        let tickets: Vec<u32> = rows.iter().map(|r| r.ticket).collect();
        assert_eq!(tickets, [1, 2, 3]);
        assert_eq!(tail.pos(), end);

        // Resuming from a stored position reads only what follows it.
        let mut again = Tail::open(&dir.path().join("wal.log")).unwrap();
        again.seek(first, end).unwrap();
        let mut rest = VecDeque::new();
        again.read_to(end, &mut rest).unwrap();
        assert_eq!(rest.iter().map(|r| r.ticket).collect::<Vec<_>>(), [2, 3]);

        assert!(matches!(
            again.seek(end + 1, end),
            Err(SinkError::BeyondEnd { .. })
        ));
        assert!(matches!(
            again.seek(3, end),
            Err(SinkError::BeyondEnd { .. })
        ));
        wal.shutdown().unwrap();
    }

    #[test]
    fn a_chunk_boundary_inside_a_record_is_read_next_time() {
        let mut bytes = Vec::new();
        for t in 1..=3 {
            sold(t).encode_into(&mut bytes).unwrap();
        }
        let one = bytes.len() / 3;
        let mut rows = VecDeque::new();
        // Cut in the middle of the second record: the first is taken.
        let used = decode_rows(&bytes[..one + 5], 100, true, &mut rows).unwrap();
        assert_eq!((used, rows.len()), (one, 1));
        assert_eq!(rows[0].end, 100 + one as u64);
        // Not capped: a cut record in the durable part is damage.
        let err = decode_rows(&bytes[..one + 5], 100, false, &mut rows).unwrap_err();
        assert_eq!(err.0, 100 + one as u64);
        // A flipped byte is damage, wherever it is.
        let mut bad = bytes.clone();
        bad[one + 12] ^= 1;
        assert!(decode_rows(&bad, 0, true, &mut VecDeque::new()).is_err());
    }
}
