//! Log records and their byte encoding: pure functions, no I/O.
//!
//! The layout is specified in `docs/WAL.md`; the golden tests at the bottom
//! of this file pin it byte for byte.

use std::fmt;

pub use flashsale_protocol::{ReleaseReason, SaleAction};

/// The first 8 bytes of every log file.
pub const MAGIC: [u8; 8] = *b"FSALEWAL";
/// The on-disk format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the file header: magic, version, reserved.
pub const FILE_HEADER_LEN: usize = 12;
/// Size of a record's frame header: payload length, CRC, kind.
pub const RECORD_HEADER_LEN: usize = 9;
/// Largest payload a reader accepts. A longer length field is damage, so a
/// garbage length can never make recovery allocate more than this.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;
/// Kinds from here up are optional: readers that do not know them skip them.
/// Unknown kinds below are required: readers must refuse the log.
pub const FIRST_OPTIONAL_KIND: u8 = 0x80;

/// Kind byte of [`Record::SaleDefined`].
pub const KIND_SALE_DEFINED: u8 = 1;
/// Kind byte of [`Record::TicketSold`].
pub const KIND_TICKET_SOLD: u8 = 2;
/// Kind byte of [`Record::SaleWithHolds`].
pub const KIND_SALE_WITH_HOLDS: u8 = 3;
/// Kind byte of [`Record::SaleChanged`].
pub const KIND_SALE_CHANGED: u8 = 4;
/// Kind byte of [`Record::HoldTaken`].
pub const KIND_HOLD_TAKEN: u8 = 5;
/// Kind byte of [`Record::HoldConfirmed`].
pub const KIND_HOLD_CONFIRMED: u8 = 6;
/// Kind byte of [`Record::TicketReleased`].
pub const KIND_TICKET_RELEASED: u8 = 7;
/// Kind byte of [`Record::SaleWithDraw`].
pub const KIND_SALE_WITH_DRAW: u8 = 8;
/// Kind byte of [`Record::DrawEntered`].
pub const KIND_DRAW_ENTERED: u8 = 9;
/// Kind byte of [`Record::DrawMade`].
pub const KIND_DRAW_MADE: u8 = 10;

/// The secret seed of a sale's draw, as the log keeps it. Its `Debug` never
/// shows the bytes: records end up in logs and error messages, and a seed
/// seen before the draw lets anyone pick winning user ids.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DrawSeed(pub [u8; 32]);

impl fmt::Debug for DrawSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DrawSeed(<secret>)")
    }
}

/// One entry of the write-ahead log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A sale exists with this many tickets, opening at this time.
    SaleDefined {
        /// Sale name, unique within the log.
        sale: String,
        /// Number of tickets on sale.
        capacity: u32,
        /// Opening time, milliseconds since the Unix epoch.
        opens_at_ms: u64,
    },
    /// A ticket of a sale went to a user.
    TicketSold {
        /// Sale name, as in its `SaleDefined` record.
        sale: String,
        /// Ticket number, `1..=capacity`.
        ticket: u32,
        /// Buyer.
        user: u64,
        /// Time of sale, milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A sale whose winners hold their ticket for `hold_ms` until the shop
    /// confirms it paid. Defines the sale, like [`Record::SaleDefined`].
    SaleWithHolds {
        /// Sale name, unique within the log.
        sale: String,
        /// Number of tickets on sale.
        capacity: u32,
        /// Opening time, milliseconds since the Unix epoch.
        opens_at_ms: u64,
        /// How long a winner has to pay, milliseconds.
        hold_ms: u64,
    },
    /// The operator paused, resumed or closed a sale.
    SaleChanged {
        /// Sale name.
        sale: String,
        /// What was done.
        action: SaleAction,
        /// When, milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A ticket of a sale with holds went to a user, to pay by a deadline.
    HoldTaken {
        /// Sale name.
        sale: String,
        /// Ticket number, `1..=capacity`.
        ticket: u32,
        /// Holder.
        user: u64,
        /// When, milliseconds since the Unix epoch.
        at_ms: u64,
        /// The payment deadline, milliseconds since the Unix epoch.
        expires_at_ms: u64,
    },
    /// A held ticket was paid.
    HoldConfirmed {
        /// Sale name.
        sale: String,
        /// Ticket number.
        ticket: u32,
        /// Holder.
        user: u64,
        /// When, milliseconds since the Unix epoch.
        at_ms: u64,
        /// The payment provider's reference, 1 to 128 bytes.
        payment_ref: String,
    },
    /// A held or confirmed ticket left its holder and is back on sale.
    TicketReleased {
        /// Sale name.
        sale: String,
        /// Ticket number.
        ticket: u32,
        /// Former holder.
        user: u64,
        /// When, milliseconds since the Unix epoch.
        at_ms: u64,
        /// Why.
        reason: ReleaseReason,
    },
    /// A sale whose first tickets go by a draw among the users who ask in
    /// the `window_ms` after opening. Defines the sale, like
    /// [`Record::SaleDefined`]; written, and durable, before the sale's
    /// commitment is shown to anyone.
    SaleWithDraw {
        /// Sale name, unique within the log.
        sale: String,
        /// Number of tickets on sale.
        capacity: u32,
        /// Opening time, milliseconds since the Unix epoch.
        opens_at_ms: u64,
        /// How long a winner has to pay, milliseconds; `None` for final
        /// wins (written as 0).
        hold_ms: Option<u64>,
        /// How long entries are taken after opening, milliseconds.
        window_ms: u64,
        /// The secret that decides the draw.
        seed: DrawSeed,
    },
    /// A user entered a sale's draw.
    DrawEntered {
        /// Sale name.
        sale: String,
        /// The entrant.
        user: u64,
        /// When, milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A sale's draw was made from the entries before this record. The
    /// winners' `TicketSold` (or `HoldTaken`) records follow it, in ticket
    /// order.
    DrawMade {
        /// Sale name.
        sale: String,
        /// When, milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A record of a kind this version does not know.
    ///
    /// Decoding yields it only for optional kinds (`0x80..=0xFF`); the payload
    /// is kept verbatim so it can be inspected or passed on. Encoding it
    /// writes the payload as is, under its kind, and is refused for kinds
    /// below `0x80`: a known kind has a fixed layout, and an unknown required
    /// kind would make this very version refuse its own log.
    Unknown {
        /// Kind byte.
        kind: u8,
        /// Raw payload bytes.
        payload: Vec<u8>,
    },
}

/// Why a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string field is longer than its u16 length prefix can say.
    #[error("string field is {len} bytes, more than {max}", max = u16::MAX)]
    StringTooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The payload is longer than [`MAX_PAYLOAD_LEN`].
    #[error("payload is {len} bytes, more than {MAX_PAYLOAD_LEN}")]
    PayloadTooLarge {
        /// Length in bytes.
        len: usize,
    },
    /// `Record::Unknown` used with a kind below `0x80` (see [`Record::Unknown`]).
    #[error("kind {kind} is not an optional kind and cannot carry a raw payload")]
    NotOptional {
        /// Kind byte.
        kind: u8,
    },
}

/// Why the bytes at some offset are not a whole, valid record.
///
/// All but [`DecodeError::RequiredKind`] mean the log is damaged from here
/// on (usually a write torn by a crash); that one means the log was written
/// by a newer version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than [`RECORD_HEADER_LEN`] bytes remain.
    #[error("short record header ({available} bytes)")]
    ShortHeader {
        /// Bytes available.
        available: usize,
    },
    /// The length field exceeds [`MAX_PAYLOAD_LEN`].
    #[error("payload length {len} exceeds the maximum {MAX_PAYLOAD_LEN}")]
    TooLong {
        /// The length field.
        len: u32,
    },
    /// The payload is cut short.
    #[error("short payload ({available} of {len} bytes)")]
    ShortPayload {
        /// The length field.
        len: u32,
        /// Payload bytes available.
        available: usize,
    },
    /// The stored CRC does not match the kind and payload.
    #[error("CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc {
        /// CRC from the frame.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The CRC matches but the payload is not valid for its (known) kind.
    #[error("invalid payload for kind {kind}: {reason}")]
    InvalidPayload {
        /// Kind byte.
        kind: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// A required kind this version does not know.
    #[error("required record kind {kind} is unknown (written by a newer version)")]
    RequiredKind {
        /// Kind byte.
        kind: u8,
    },
}

/// Why a file header is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file is shorter than [`FILE_HEADER_LEN`].
    #[error("file is {len} bytes, shorter than the {FILE_HEADER_LEN}-byte header")]
    Short {
        /// File length.
        len: usize,
    },
    /// The magic is not [`MAGIC`].
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// A format version this code cannot read.
    #[error("format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    Version {
        /// The version field.
        found: u16,
    },
    /// The reserved field is not zero.
    #[error("reserved header field is {found:#06x}, expected 0")]
    Reserved {
        /// The reserved field.
        found: u16,
    },
}

/// The 12-byte file header of the current format.
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Checks the file header at the start of `file`.
///
/// # Errors
/// Any deviation from [`file_header`]: short, wrong magic, other version,
/// non-zero reserved field.
pub fn check_file_header(file: &[u8]) -> Result<(), HeaderError> {
    let mut r = Reader(file);
    let (Some(magic), Some(version), Some(reserved)) = (r.array::<8>(), r.u16(), r.u16()) else {
        return Err(HeaderError::Short { len: file.len() });
    };
    if magic != MAGIC {
        return Err(HeaderError::BadMagic { found: magic });
    }
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version { found: version });
    }
    if reserved != 0 {
        return Err(HeaderError::Reserved { found: reserved });
    }
    Ok(())
}

impl Record {
    /// The kind byte this record is written with.
    pub fn kind(&self) -> u8 {
        match self {
            Record::SaleDefined { .. } => KIND_SALE_DEFINED,
            Record::TicketSold { .. } => KIND_TICKET_SOLD,
            Record::SaleWithHolds { .. } => KIND_SALE_WITH_HOLDS,
            Record::SaleChanged { .. } => KIND_SALE_CHANGED,
            Record::HoldTaken { .. } => KIND_HOLD_TAKEN,
            Record::HoldConfirmed { .. } => KIND_HOLD_CONFIRMED,
            Record::TicketReleased { .. } => KIND_TICKET_RELEASED,
            Record::SaleWithDraw { .. } => KIND_SALE_WITH_DRAW,
            Record::DrawEntered { .. } => KIND_DRAW_ENTERED,
            Record::DrawMade { .. } => KIND_DRAW_MADE,
            Record::Unknown { kind, .. } => *kind,
        }
    }

    /// The sale, ticket, user and time of a record about one ticket (a sale,
    /// a hold, a confirmation, a release); `None` for the others.
    pub fn ticket_fields(&self) -> Option<(&str, u32, u64, u64)> {
        match self {
            Record::TicketSold {
                sale,
                ticket,
                user,
                at_ms,
            }
            | Record::HoldTaken {
                sale,
                ticket,
                user,
                at_ms,
                ..
            }
            | Record::HoldConfirmed {
                sale,
                ticket,
                user,
                at_ms,
                ..
            }
            | Record::TicketReleased {
                sale,
                ticket,
                user,
                at_ms,
                ..
            } => Some((sale, *ticket, *user, *at_ms)),
            _ => None,
        }
    }

    /// The record's kind as `docs/WAL.md` names it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Record::SaleDefined { .. } => "SaleDefined",
            Record::TicketSold { .. } => "TicketSold",
            Record::SaleWithHolds { .. } => "SaleWithHolds",
            Record::SaleChanged { .. } => "SaleChanged",
            Record::HoldTaken { .. } => "HoldTaken",
            Record::HoldConfirmed { .. } => "HoldConfirmed",
            Record::TicketReleased { .. } => "TicketReleased",
            Record::SaleWithDraw { .. } => "SaleWithDraw",
            Record::DrawEntered { .. } => "DrawEntered",
            Record::DrawMade { .. } => "DrawMade",
            Record::Unknown { .. } => "unknown",
        }
    }

    /// Checks that the record can be encoded, without encoding it.
    ///
    /// # Errors
    /// The same as [`Record::encode_into`].
    pub fn validate(&self) -> Result<(), EncodeError> {
        let len = match self {
            Record::SaleDefined { sale, .. } => str_len(sale)? + 4 + 8,
            Record::TicketSold { sale, .. } => str_len(sale)? + 4 + 8 + 8,
            Record::SaleWithHolds { sale, .. } => str_len(sale)? + 4 + 8 + 8,
            Record::SaleChanged { sale, .. } => str_len(sale)? + 1 + 8,
            Record::HoldTaken { sale, .. } => str_len(sale)? + 4 + 8 + 8 + 8,
            Record::HoldConfirmed {
                sale, payment_ref, ..
            } => str_len(sale)? + 4 + 8 + 8 + str_len(payment_ref)?,
            Record::TicketReleased { sale, .. } => str_len(sale)? + 4 + 8 + 8 + 1,
            Record::SaleWithDraw { sale, .. } => str_len(sale)? + 4 + 8 + 8 + 8 + 32,
            Record::DrawEntered { sale, .. } => str_len(sale)? + 8 + 8,
            Record::DrawMade { sale, .. } => str_len(sale)? + 8,
            Record::Unknown { kind, payload } => {
                if *kind < FIRST_OPTIONAL_KIND {
                    return Err(EncodeError::NotOptional { kind: *kind });
                }
                payload.len()
            }
        };
        if len > MAX_PAYLOAD_LEN {
            return Err(EncodeError::PayloadTooLarge { len });
        }
        Ok(())
    }

    /// Appends the framed record (header, kind, payload) to `out`.
    ///
    /// # Errors
    /// A string longer than `u16::MAX` bytes, a payload over
    /// [`MAX_PAYLOAD_LEN`], or `Unknown` with a kind below `0x80`. `out` is left
    /// unchanged on error.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.validate()?;
        let mut w = Writer(Vec::with_capacity(64));
        match self {
            Record::SaleDefined {
                sale,
                capacity,
                opens_at_ms,
            } => w.str(sale).u32(*capacity).u64(*opens_at_ms),
            Record::TicketSold {
                sale,
                ticket,
                user,
                at_ms,
            } => w.ticket(sale, *ticket, *user, *at_ms),
            Record::SaleWithHolds {
                sale,
                capacity,
                opens_at_ms,
                hold_ms,
            } => w.str(sale).u32(*capacity).u64(*opens_at_ms).u64(*hold_ms),
            Record::SaleChanged {
                sale,
                action,
                at_ms,
            } => w.str(sale).u8(action.code()).u64(*at_ms),
            Record::HoldTaken {
                sale,
                ticket,
                user,
                at_ms,
                expires_at_ms,
            } => w.ticket(sale, *ticket, *user, *at_ms).u64(*expires_at_ms),
            Record::HoldConfirmed {
                sale,
                ticket,
                user,
                at_ms,
                payment_ref,
            } => w.ticket(sale, *ticket, *user, *at_ms).str(payment_ref),
            Record::TicketReleased {
                sale,
                ticket,
                user,
                at_ms,
                reason,
            } => w.ticket(sale, *ticket, *user, *at_ms).u8(reason.code()),
            Record::SaleWithDraw {
                sale,
                capacity,
                opens_at_ms,
                hold_ms,
                window_ms,
                seed,
            } => w
                .str(sale)
                .u32(*capacity)
                .u64(*opens_at_ms)
                .u64(hold_ms.unwrap_or(0))
                .u64(*window_ms)
                .bytes(&seed.0),
            Record::DrawEntered { sale, user, at_ms } => w.str(sale).u64(*user).u64(*at_ms),
            Record::DrawMade { sale, at_ms } => w.str(sale).u64(*at_ms),
            Record::Unknown { payload, .. } => w.bytes(payload),
        };
        let payload = w.0;
        encode_frame(self.kind(), &payload, out)
    }

    /// The framed record as a new buffer.
    ///
    /// # Errors
    /// As [`Record::encode_into`].
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// Appends one frame with any kind byte and payload to `out`.
///
/// This is the raw framing under [`Record::encode_into`]; it does not check
/// that the payload suits the kind, which lets tools and tests write frames
/// this version would never produce.
///
/// # Errors
/// A payload over [`MAX_PAYLOAD_LEN`]; `out` is then unchanged.
pub fn encode_frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(EncodeError::PayloadTooLarge { len: payload.len() });
    }
    // Cannot truncate: MAX_PAYLOAD_LEN fits in u32.
    let len = payload.len() as u32;
    out.reserve(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(kind, payload).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes the record at the start of `buf`.
///
/// Returns the record and the number of bytes it occupies. Never panics,
/// whatever the bytes; never allocates more than [`MAX_PAYLOAD_LEN`].
///
/// # Errors
/// See [`DecodeError`]. The checks run in frame order: header length, length
/// limit, payload length, CRC, then the kind and its payload.
pub fn decode_record(buf: &[u8]) -> Result<(Record, usize), DecodeError> {
    let mut r = Reader(buf);
    let (Some(len), Some(stored), Some(kind)) = (r.u32(), r.u32(), r.u8()) else {
        return Err(DecodeError::ShortHeader {
            available: buf.len(),
        });
    };
    let too_long = DecodeError::TooLong { len };
    let payload_len = usize::try_from(len).map_err(|_| too_long.clone())?;
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(too_long);
    }
    let Some(payload) = r.take(payload_len) else {
        return Err(DecodeError::ShortPayload {
            len,
            available: r.0.len(),
        });
    };
    let computed = frame_crc(kind, payload);
    if computed != stored {
        return Err(DecodeError::Crc { stored, computed });
    }
    let record = decode_payload(kind, payload)?;
    Ok((record, RECORD_HEADER_LEN + payload_len))
}

fn decode_payload(kind: u8, payload: &[u8]) -> Result<Record, DecodeError> {
    if kind >= FIRST_OPTIONAL_KIND {
        return Ok(Record::Unknown {
            kind,
            payload: payload.to_vec(),
        });
    }
    let mut r = Reader(payload);
    let record = match kind {
        KIND_SALE_DEFINED => (|| {
            Ok(Record::SaleDefined {
                sale: r.string()?,
                capacity: r.need_u32("short capacity")?,
                opens_at_ms: r.need_u64("short opens_at_ms")?,
            })
        })(),
        KIND_TICKET_SOLD => r
            .ticket()
            .map(|(sale, ticket, user, at_ms)| Record::TicketSold {
                sale,
                ticket,
                user,
                at_ms,
            }),
        KIND_SALE_WITH_HOLDS => (|| {
            Ok(Record::SaleWithHolds {
                sale: r.string()?,
                capacity: r.need_u32("short capacity")?,
                opens_at_ms: r.need_u64("short opens_at_ms")?,
                hold_ms: r.need_u64("short hold_ms")?,
            })
        })(),
        KIND_SALE_CHANGED => (|| {
            Ok(Record::SaleChanged {
                sale: r.string()?,
                action: r
                    .u8()
                    .and_then(SaleAction::from_code)
                    .ok_or("unknown sale action")?,
                at_ms: r.need_u64("short at_ms")?,
            })
        })(),
        KIND_HOLD_TAKEN => (|| {
            let (sale, ticket, user, at_ms) = r.ticket()?;
            let expires_at_ms = r.need_u64("short expires_at_ms")?;
            Ok(Record::HoldTaken {
                sale,
                ticket,
                user,
                at_ms,
                expires_at_ms,
            })
        })(),
        KIND_HOLD_CONFIRMED => (|| {
            let (sale, ticket, user, at_ms) = r.ticket()?;
            let payment_ref = r.string()?;
            Ok(Record::HoldConfirmed {
                sale,
                ticket,
                user,
                at_ms,
                payment_ref,
            })
        })(),
        KIND_TICKET_RELEASED => (|| {
            let (sale, ticket, user, at_ms) = r.ticket()?;
            let reason = r
                .u8()
                .and_then(ReleaseReason::from_code)
                .ok_or("unknown release reason")?;
            Ok(Record::TicketReleased {
                sale,
                ticket,
                user,
                at_ms,
                reason,
            })
        })(),
        KIND_SALE_WITH_DRAW => (|| {
            Ok(Record::SaleWithDraw {
                sale: r.string()?,
                capacity: r.need_u32("short capacity")?,
                opens_at_ms: r.need_u64("short opens_at_ms")?,
                hold_ms: Some(r.need_u64("short hold_ms")?).filter(|&ms| ms != 0),
                window_ms: r.need_u64("short window_ms")?,
                seed: DrawSeed(r.array::<32>().ok_or("short seed")?),
            })
        })(),
        KIND_DRAW_ENTERED => (|| {
            Ok(Record::DrawEntered {
                sale: r.string()?,
                user: r.need_u64("short user")?,
                at_ms: r.need_u64("short at_ms")?,
            })
        })(),
        KIND_DRAW_MADE => (|| {
            Ok(Record::DrawMade {
                sale: r.string()?,
                at_ms: r.need_u64("short at_ms")?,
            })
        })(),
        _ => return Err(DecodeError::RequiredKind { kind }),
    };
    let invalid = |reason| DecodeError::InvalidPayload { kind, reason };
    let record = record.map_err(invalid)?;
    // New fields mean a new kind, so extra bytes are damage, not data.
    if !r.0.is_empty() {
        return Err(invalid("trailing bytes"));
    }
    Ok(record)
}

/// CRC-32 (IEEE, as `crc32fast` computes it) over the kind byte then the payload.
pub fn frame_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

fn str_len(s: &str) -> Result<usize, EncodeError> {
    if s.len() > usize::from(u16::MAX) {
        return Err(EncodeError::StringTooLong { len: s.len() });
    }
    Ok(2 + s.len())
}

/// Little-endian writes of a payload's fields, in order.
struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// A u16 length, then the bytes. Cannot truncate: `validate` bounds
    /// every string by `u16::MAX`.
    fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(&(s.len() as u16).to_le_bytes())
            .bytes(s.as_bytes())
    }

    /// The fields every record about one ticket starts with.
    fn ticket(&mut self, sale: &str, ticket: u32, user: u64, at_ms: u64) -> &mut Self {
        self.str(sale).u32(ticket).u64(user).u64(at_ms)
    }
}

/// Checked little-endian reads from a shrinking slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn need_u32(&mut self, short: &'static str) -> Result<u32, &'static str> {
        self.u32().ok_or(short)
    }

    fn need_u64(&mut self, short: &'static str) -> Result<u64, &'static str> {
        self.u64().ok_or(short)
    }

    /// The fields every record about one ticket starts with: sale, ticket,
    /// user, time.
    fn ticket(&mut self) -> Result<(String, u32, u64, u64), &'static str> {
        Ok((
            self.string()?,
            self.need_u32("short ticket")?,
            self.need_u64("short user")?,
            self.need_u64("short at_ms")?,
        ))
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let len = self.u16().ok_or("short string length")?;
        let bytes = self.take(usize::from(len)).ok_or("short string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8")
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::SaleDefined {
                sale,
                capacity,
                opens_at_ms,
            } => {
                write!(
                    f,
                    "sale {sale:?}: {capacity} tickets, opens at {opens_at_ms} ms"
                )
            }
            Record::TicketSold {
                sale,
                ticket,
                user,
                at_ms,
            } => {
                write!(
                    f,
                    "sale {sale:?}: ticket {ticket} to user {user} at {at_ms} ms"
                )
            }
            Record::SaleWithHolds {
                sale,
                capacity,
                opens_at_ms,
                hold_ms,
            } => write!(
                f,
                "sale {sale:?}: {capacity} tickets, opens at {opens_at_ms} ms, holds of {hold_ms} ms"
            ),
            Record::SaleChanged {
                sale,
                action,
                at_ms,
            } => write!(f, "sale {sale:?}: {} at {at_ms} ms", action.label()),
            Record::HoldTaken {
                sale,
                ticket,
                user,
                at_ms,
                expires_at_ms,
            } => write!(
                f,
                "sale {sale:?}: ticket {ticket} held by user {user} at {at_ms} ms until {expires_at_ms} ms"
            ),
            Record::HoldConfirmed {
                sale,
                ticket,
                user,
                at_ms,
                payment_ref,
            } => write!(
                f,
                "sale {sale:?}: ticket {ticket} of user {user} paid ({payment_ref:?}) at {at_ms} ms"
            ),
            Record::TicketReleased {
                sale,
                ticket,
                user,
                at_ms,
                reason,
            } => write!(
                f,
                "sale {sale:?}: ticket {ticket} of user {user} {} at {at_ms} ms",
                reason.label()
            ),
            Record::SaleWithDraw {
                sale,
                capacity,
                opens_at_ms,
                hold_ms,
                window_ms,
                ..
            } => {
                write!(
                    f,
                    "sale {sale:?}: {capacity} tickets, opens at {opens_at_ms} ms, drawn among entries of the first {window_ms} ms"
                )?;
                match hold_ms {
                    Some(hold_ms) => write!(f, ", holds of {hold_ms} ms"),
                    None => Ok(()),
                }
            }
            Record::DrawEntered { sale, user, at_ms } => {
                write!(f, "sale {sale:?}: user {user} entered the draw at {at_ms} ms")
            }
            Record::DrawMade { sale, at_ms } => {
                write!(f, "sale {sale:?}: draw made at {at_ms} ms")
            }
            Record::Unknown { kind, payload } => {
                write!(f, "record kind {kind:#04x} ({} bytes)", payload.len())
            }
        }
    }
}

#[cfg(test)]
mod tests;
