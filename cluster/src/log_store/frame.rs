//! The bytes of the log and meta files: headers, and the frame around each
//! payload. Pure functions over byte slices, no I/O, so that damage of any
//! shape is tested without a disk.
//!
//! A frame is `[len: u32 LE][crc32 of payload: u32 LE][payload: len bytes]`.
//! Reading never trusts a length: one past [`MAX_PAYLOAD`] or past the end of
//! the bytes is damage, reported as such, never a panic or an allocation.

use std::fmt;

/// The first 8 bytes of `raft.log`: magic, format version 1, reserved 0.
pub(super) const LOG_HEADER: [u8; 8] = *b"FSRAFT\x01\x00";
/// The first 8 bytes of `raft.meta`: magic, format version 1.
pub(super) const META_HEADER: [u8; 8] = *b"FSRMETA\x01";
/// Length of either header.
pub(super) const HEADER_LEN: usize = 8;
/// Length of a frame's head: payload length and CRC.
pub(super) const FRAME_HEAD: usize = 8;
/// Largest payload a frame may carry; a longer length field is damage.
pub(super) const MAX_PAYLOAD: usize = 64 << 20;

/// Appends a frame around `payload` to `out`. The caller has checked that
/// `payload` is at most [`MAX_PAYLOAD`] bytes.
pub(super) fn push(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.reserve(FRAME_HEAD + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What is wrong with the bytes where a frame should start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Damage {
    /// The frame runs past the end of the bytes: `have` of `need` present.
    Short {
        /// Bytes the frame needs (head, or head and payload).
        need: u64,
        /// Bytes left.
        have: u64,
    },
    /// The length field is over [`MAX_PAYLOAD`].
    TooLong(u32),
    /// The payload does not match its checksum.
    Checksum {
        /// The CRC the frame carries.
        stored: u32,
        /// The CRC of the payload as read.
        computed: u32,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Short { need, have } => {
                write!(f, "torn frame: {have} of its {need} bytes present")
            }
            Damage::TooLong(len) => {
                write!(f, "length field {len} over the maximum of {MAX_PAYLOAD}")
            }
            Damage::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: frame says {stored:#010x}, payload has {computed:#010x}"
            ),
        }
    }
}

fn u32_at(bytes: &[u8], pos: usize) -> Option<u32> {
    let field = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes(<[u8; 4]>::try_from(field).ok()?))
}

/// Reads the frame starting at `pos` of `bytes`: `Ok(None)` exactly at the
/// end, `Ok(Some((payload, next)))` for a whole frame whose checksum
/// matches (`next` is where the following frame starts), `Err` otherwise.
pub(super) fn read(bytes: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, Damage> {
    let have = bytes.len().saturating_sub(pos);
    if have == 0 {
        return Ok(None);
    }
    let short = |need: usize| Damage::Short {
        need: need as u64,
        have: have as u64,
    };
    let (Some(len), Some(stored)) = (u32_at(bytes, pos), u32_at(bytes, pos + 4)) else {
        return Err(short(FRAME_HEAD));
    };
    if len as usize > MAX_PAYLOAD {
        return Err(Damage::TooLong(len));
    }
    let need = FRAME_HEAD + len as usize;
    let start = pos + FRAME_HEAD;
    let Some(payload) = bytes.get(start..start + len as usize) else {
        return Err(short(need));
    };
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(Damage::Checksum { stored, computed });
    }
    Ok(Some((payload, pos + need)))
}

/// Whether `bytes` start with `header`; `Err` says what is there instead.
pub(super) fn check_header(bytes: &[u8], header: &[u8; 8]) -> Result<(), String> {
    match bytes.get(..HEADER_LEN) {
        Some(h) if h == header => Ok(()),
        Some(h) if h[..6] == header[..6] && h[6] != header[6] => Err(format!(
            "format version {}, this version reads {}",
            h[6], header[6]
        )),
        Some(h) => Err(format!("unknown header {h:02x?}")),
        None => Err(format!("{} bytes, shorter than the header", bytes.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = LOG_HEADER.to_vec();
        for p in payloads {
            push(&mut out, p);
        }
        out
    }

    fn scan(bytes: &[u8]) -> (Vec<Vec<u8>>, usize, Option<Damage>) {
        let (mut pos, mut got) = (HEADER_LEN, Vec::new());
        loop {
            match read(bytes, pos) {
                Ok(None) => return (got, pos, None),
                Ok(Some((p, next))) => {
                    got.push(p.to_vec());
                    pos = next;
                }
                Err(d) => return (got, pos, Some(d)),
            }
        }
    }

    #[test]
    fn the_layout_is_pinned() {
        let bytes = framed(&[b"abc"]);
        let crc = crc32fast::hash(b"abc").to_le_bytes();
        let mut want = b"FSRAFT\x01\x00\x03\x00\x00\x00".to_vec();
        want.extend_from_slice(&crc);
        want.extend_from_slice(b"abc");
        assert_eq!(bytes, want);
    }

    #[test]
    fn whole_frames_read_back_including_empty_ones() {
        let bytes = framed(&[b"one", b"", b"three"]);
        let (got, end, damage) = scan(&bytes);
        assert_eq!(got, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert_eq!((end, damage), (bytes.len(), None));
    }

    #[test]
    fn every_cut_of_the_last_frame_is_a_torn_tail() {
        let bytes = framed(&[b"first", b"second frame"]);
        let boundary = HEADER_LEN + FRAME_HEAD + 5;
        for cut in boundary + 1..bytes.len() {
            let (got, end, damage) = scan(&bytes[..cut]);
            assert_eq!(got, vec![b"first".to_vec()], "cut at {cut}");
            assert_eq!(end, boundary);
            assert!(matches!(damage, Some(Damage::Short { .. })), "cut at {cut}");
        }
    }

    #[test]
    fn any_flipped_payload_byte_fails_the_checksum() {
        let bytes = framed(&[b"first", b"second frame"]);
        let second = HEADER_LEN + FRAME_HEAD + 5;
        for at in second + FRAME_HEAD..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            let (got, end, damage) = scan(&bad);
            assert_eq!((got.len(), end), (1, second));
            assert!(matches!(damage, Some(Damage::Checksum { .. })), "byte {at}");
        }
    }

    #[test]
    fn a_huge_length_is_damage_not_an_allocation() {
        let mut bytes = framed(&[b"ok"]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        let (got, _, damage) = scan(&bytes);
        assert_eq!(got.len(), 1);
        assert_eq!(damage, Some(Damage::TooLong(u32::MAX)));
    }

    #[test]
    fn headers_are_checked() {
        assert!(check_header(&LOG_HEADER, &LOG_HEADER).is_ok());
        assert!(check_header(b"FSRAFT\x02\x00", &LOG_HEADER)
            .unwrap_err()
            .contains("version 2"));
        assert!(check_header(b"FSRAF", &LOG_HEADER).is_err());
        assert!(check_header(&META_HEADER, &LOG_HEADER).is_err());
    }
}
