//! Frames: a 4-byte big-endian body length, then the body.
//!
//! Built on tokio-util's [`LengthDelimitedCodec`], which does the buffering.
//! This adapter adds two things: the length prefix is checked against the
//! configured maximum *before* any of the body is buffered (so a peer cannot
//! make us reserve gigabytes), and the body is decoded into a typed message
//! (or, through [`FrameCodec::decode_body`], handed over undecoded for a
//! zero-copy view). Encoding writes each frame in place in the destination
//! buffer, with the body's length checked against the same maximum.
//! A frame error ends the connection: after a bad length or a body that does
//! not parse there is no way to find the next frame boundary.

use std::io;
use std::marker::PhantomData;

use bytes::{BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

use crate::encoding::{self, DecodeError, EncodeError};
use crate::message::{ClientFrame, ServerFrame};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A length prefix above the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced body length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// A body that is not a valid message.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// A message that cannot be encoded within the maximum frame size.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Decodes frames into `In` and encodes `Out` into frames.
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    inner: LengthDelimitedCodec,
    max_frame_len: usize,
    _types: PhantomData<fn(Out) -> In>,
}

/// The server's side: reads [`ClientFrame`]s, writes [`ServerFrame`]s.
pub type ServerCodec = FrameCodec<ClientFrame, ServerFrame>;
/// The client's side: reads [`ServerFrame`]s, writes [`ClientFrame`]s.
pub type ClientCodec = FrameCodec<ServerFrame, ClientFrame>;

impl<In, Out> FrameCodec<In, Out> {
    /// A codec accepting bodies of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(HEADER_LEN)
            .big_endian()
            .max_frame_length(max_frame_len)
            .new_codec();
        FrameCodec {
            inner,
            max_frame_len,
            _types: PhantomData,
        }
    }

    /// The configured maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Whether [`decode_body`](Self::decode_body) can answer from `src`
    /// alone: it holds a whole frame, or a length prefix over the maximum
    /// (refused at once). Given a part of a frame, the inner codec would
    /// reserve room for the whole announced body before it arrives; a
    /// caller that decodes only once this holds keeps a buffer no larger
    /// than what it has received.
    pub fn frame_ready(&self, src: &[u8]) -> bool {
        match src.get(..HEADER_LEN) {
            Some(&[a, b, c, d]) => {
                let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
                len > self.max_frame_len || src.len() - HEADER_LEN >= len
            }
            _ => false,
        }
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new(crate::DEFAULT_MAX_FRAME_LEN)
    }
}

impl<In, Out> FrameCodec<In, Out> {
    /// Takes the next complete frame body out of `src`, leaving the message
    /// undecoded: for a caller that decodes a borrowing view of it (see
    /// [`ClientFrameRef`](crate::message::ClientFrameRef)) instead of `In`.
    /// The length prefix is checked exactly as by [`Decoder::decode`].
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] for a length prefix over the maximum.
    pub fn decode_body(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        // The inner codec checks the length prefix against the maximum before
        // it buffers the body; it leaves the prefix in `src` when it refuses
        // one, so the error can name the offending length.
        match self.inner.decode(src) {
            Ok(body) => Ok(body),
            Err(e) if is_length_error(&e) => Err(FrameError::TooLarge {
                len: announced_len(src),
                max: self.max_frame_len,
            }),
            Err(e) => Err(FrameError::Io(e)),
        }
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match self.decode_body(src)? {
            Some(body) => Ok(Some(encoding::decode(&body)?)),
            None => Ok(None),
        }
    }
}

fn is_length_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
}

fn announced_len(src: &[u8]) -> u64 {
    match src.get(..HEADER_LEN) {
        Some(&[a, b, c, d]) => u64::from(u32::from_be_bytes([a, b, c, d])),
        _ => 0,
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&item, dst)
    }
}

impl<In, Out: Serialize> Encoder<&Out> for FrameCodec<In, Out> {
    type Error = FrameError;

    /// Writes the frame straight into `dst`: a placeholder prefix, the body,
    /// then the real prefix once the body's length is known. On any error
    /// `dst` is left as it was.
    fn encode(&mut self, item: &Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        let start = dst.len();
        dst.put_u32(0);
        let written = encoding::append(item, dst).and_then(|()| {
            let len = dst.len() - start - HEADER_LEN;
            match u32::try_from(len) {
                Ok(prefix) if len <= self.max_frame_len => Ok(prefix),
                _ => Err(EncodeError::too_large(len, self.max_frame_len)),
            }
        });
        match written {
            Ok(prefix) => {
                dst[start..start + HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
                Ok(())
            }
            Err(e) => {
                dst.truncate(start);
                Err(e.into())
            }
        }
    }
}

/// One whole frame (length prefix and body) of `message`, with no size
/// limit: for tests and tools that write frames by hand, including ones a
/// server must refuse. Connections use the codecs.
///
/// # Errors
///
/// When the body cannot be encoded, or is longer than `u32::MAX` bytes.
pub fn frame<T: Serialize>(message: &T) -> Result<Vec<u8>, EncodeError> {
    let body = encoding::encode(message)?;
    let len = u32::try_from(body.len())
        .map_err(|_| EncodeError::too_large(body.len(), u32::MAX as usize))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}
