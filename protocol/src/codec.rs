//! Frames: a 4-byte big-endian body length, then the body.
//!
//! Built on tokio-util's [`LengthDelimitedCodec`], which does the buffering.
//! This adapter adds two things: the length prefix is checked against the
//! configured maximum *before* any of the body is buffered (so a peer cannot
//! make us reserve gigabytes), and the body is decoded into a typed message.
//! A frame error ends the connection: after a bad length or a body that does
//! not parse there is no way to find the next frame boundary.

use std::io;
use std::marker::PhantomData;

use bytes::BytesMut;
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
    scratch: BytesMut,
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
            scratch: BytesMut::new(),
            _types: PhantomData,
        }
    }

    /// The configured maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new(crate::DEFAULT_MAX_FRAME_LEN)
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        // The inner codec checks the length prefix against the maximum before
        // it buffers the body; it leaves the prefix in `src` when it refuses
        // one, so the error can name the offending length.
        let body = match self.inner.decode(src) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(None),
            Err(e) if is_length_error(&e) => {
                return Err(FrameError::TooLarge {
                    len: announced_len(src),
                    max: self.max_frame_len,
                })
            }
            Err(e) => return Err(FrameError::Io(e)),
        };
        Ok(Some(encoding::decode(&body)?))
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

    fn encode(&mut self, item: &Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.scratch.clear();
        encoding::encode_into(item, &mut self.scratch, self.max_frame_len)?;
        let body = self.scratch.split().freeze();
        self.inner.encode(body, dst)?;
        Ok(())
    }
}
