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
use serde::{de::DeserializeOwned, Serialize};

/// A body that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message body: {0}")]
pub struct DecodeError(String);

/// A value that could not be encoded (in practice: larger than the limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode message body: {0}")]
pub struct EncodeError(String);

fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(limit)
}

/// Appends the encoding of `value` to `out`, failing if it would exceed
/// `limit` bytes.
pub fn encode_into<T: Serialize>(
    value: &T,
    out: &mut BytesMut,
    limit: usize,
) -> Result<(), EncodeError> {
    options(limit as u64)
        .serialize_into(out.writer(), value)
        .map_err(|e| EncodeError(e.to_string()))
}

/// Encodes `value` into a fresh vector (tests, tools; the codecs use
/// [`encode_into`]).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    options(u64::MAX)
        .serialize(value)
        .map_err(|e| EncodeError(e.to_string()))
}

/// Decodes one value that must span all of `bytes`.
///
/// Never panics and never allocates much more than `bytes.len()`: every
/// length inside the body is checked against what remains of it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    options(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| DecodeError(e.to_string()))
}
