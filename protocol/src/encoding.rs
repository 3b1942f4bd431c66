//! How message bodies become bytes, and back.
//!
//! This is the only module that names the serializer. Bodies are bincode 1.3
//! with fixed-width little-endian integers and no trailing bytes allowed:
//! a layout simple enough to be written by hand in another language
//! (`docs/PROTOCOL.md`). bincode is pinned to 1.3.3 because 3.0.0 is an empty
//! release of an unmaintained crate (RUSTSEC-2025-0141); replacing it means
//! changing this module and keeping the golden vectors in `tests/golden.rs`
//! green.

use bincode::Options;
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};

/// A body that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message body: {0}")]
pub struct DecodeError(String);

/// A value that could not be encoded (in practice: larger than the limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode message body: {0}")]
pub struct EncodeError(String);

fn unbounded() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

fn options(limit: u64) -> impl Options {
    unbounded().with_limit(limit)
}

/// Appends the encoding of `value` to `out`, failing if it would exceed
/// `limit` bytes. On failure `out` may hold part of the encoding: the caller
/// truncates it back.
pub fn encode_into<T: Serialize>(
    value: &T,
    out: &mut BytesMut,
    limit: usize,
) -> Result<(), EncodeError> {
    options(limit as u64)
        .serialize_into(out.writer(), value)
        .map_err(|e| EncodeError(e.to_string()))
}

/// Appends the encoding of `value` to `out`, with no size limit: the caller
/// checks the length written (the frame codec does, against its maximum).
///
/// One pass over `value`, where [`encode_into`] takes two (bincode measures
/// a value before writing it under a limit): this is the server's hot path.
pub fn append<T: Serialize>(value: &T, out: &mut BytesMut) -> Result<(), EncodeError> {
    unbounded()
        .serialize_into(out.writer(), value)
        .map_err(|e| EncodeError(e.to_string()))
}

impl EncodeError {
    /// A body of `len` bytes, over the maximum of `max`.
    pub(crate) fn too_large(len: usize, max: usize) -> Self {
        EncodeError(format!(
            "a body of {len} bytes exceeds the maximum of {max}"
        ))
    }
}

/// Encodes `value` into a fresh vector (tests, tools; the codecs use
/// [`encode_into`]).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    unbounded()
        .serialize(value)
        .map_err(|e| EncodeError(e.to_string()))
}

/// Decodes one value that must span all of `bytes`.
///
/// Never panics and never allocates much more than `bytes.len()`: every
/// length inside the body is checked against what remains of it. A type
/// that borrows (such as [`ClientFrameRef`](crate::message::ClientFrameRef))
/// is decoded without copying: its strings point into `bytes`, after the
/// same UTF-8 check an owned `String` gets.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    options(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| DecodeError::of(&e))
}

impl DecodeError {
    /// What was wrong with the body, in the terms of `docs/PROTOCOL.md`
    /// rather than the serializer's: the message reaches the peer.
    fn of(e: &bincode::ErrorKind) -> Self {
        use bincode::ErrorKind as E;
        let why = match e {
            E::Io(_) => "the body ends before the message does".to_owned(),
            E::SizeLimit => "a length inside the body runs past its end".to_owned(),
            E::InvalidUtf8Encoding(_) => "a string is not valid UTF-8".to_owned(),
            E::InvalidBoolEncoding(b) => format!("{b} is not a boolean"),
            E::InvalidTagEncoding(tag) => format!("an Option tag of {tag}, not 0 or 1"),
            E::Custom(m) if m.contains("bytes remaining") => {
                "bytes after the end of the message".to_owned()
            }
            // serde's own words, about the message: an unknown variant
            // index, a length that does not fit.
            E::Custom(m) => m.clone(),
            other => format!("unreadable ({other})"),
        };
        DecodeError(why)
    }
}
