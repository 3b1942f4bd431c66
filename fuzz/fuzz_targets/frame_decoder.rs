//! Arbitrary bytes from a peer, through both sides' frame decoders.
//!
//! Input: one byte choosing the maximum frame length, one byte choosing how
//! the stream is cut into reads, then the stream. The stream is fed to a
//! `ServerCodec` (owned `ClientFrame`s), to `decode_body` plus a borrowed
//! `ClientFrameRef` (the server's hot path), and to a `ClientCodec`
//! (`ServerFrame`s), one read at a time, as a connection would.
//!
//! Checked: nothing panics; every frame consumes exactly its prefix and body
//! (and no more than the prefix while the body is incomplete), with the
//! announced length within the maximum, or refused as too large; the
//! borrowed path agrees with the owned one step by step (same frames, same
//! errors, same bytes left); and every decoded frame re-encodes to exactly
//! the bytes it came from (the encoding is canonical), which decode to the
//! same value again.

#![no_main]

use bytes::BytesMut;
use flashsale_protocol::codec::HEADER_LEN;
use flashsale_protocol::{
    encoding, ClientCodec, ClientFrame, ClientFrameRef, FrameCodec, FrameError, ServerCodec,
    ServerFrame, DEFAULT_MAX_FRAME_LEN,
};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// Small maxima make the length check reachable with short inputs.
const MAX_FRAME_LENS: [usize; 8] = [DEFAULT_MAX_FRAME_LEN, 0, 1, 8, 16, 33, 64, 4096];

fuzz_target!(|data: &[u8]| {
    let [max_choice, step_choice, stream @ ..] = data else {
        return;
    };
    let max = MAX_FRAME_LENS[usize::from(max_choice % 8)];
    // 0: the whole stream in one read; otherwise reads of 1..=255 bytes.
    let step = match usize::from(*step_choice) {
        0 => stream.len().max(1),
        n => n,
    };
    server_side(stream, step, max);
    client_side(stream, step, max);
});

/// The server reading a client: owned and borrowed decoding in lock step.
fn server_side(stream: &[u8], step: usize, max: usize) {
    let mut owned = ServerCodec::new(max);
    let mut borrowed = ServerCodec::new(max);
    let mut owned_buf = BytesMut::new();
    let mut borrowed_buf = BytesMut::new();
    let mut cursor = Cursor::default();
    for read in stream.chunks(step) {
        owned_buf.extend_from_slice(read);
        borrowed_buf.extend_from_slice(read);
        cursor.fed += read.len();
        loop {
            let frame = owned.decode(&mut owned_buf);
            let body = borrowed.decode_body(&mut borrowed_buf);
            assert_eq!(owned_buf, borrowed_buf, "both paths leave the same bytes");
            match (frame, body) {
                (Ok(None), Ok(None)) => {
                    cursor.waiting(&owned_buf);
                    break;
                }
                (Ok(Some(frame)), Ok(Some(body))) => {
                    let wire = cursor.frame(stream, &owned_buf, &body, max);
                    let view: ClientFrameRef<'_> = encoding::decode(&body)
                        .expect("the borrowed view decodes every body the owned type does");
                    assert_eq!(view.to_owned_frame(), frame);
                    assert_eq!(ClientFrameRef::from(&frame), view);
                    assert_eq!(encoding::encode(&view).expect("encodes"), body.as_ref());
                    round_trip::<ClientFrame, ServerFrame>(&frame, wire, max);
                }
                (Err(FrameError::Malformed(_)), Ok(Some(body))) => {
                    cursor.frame(stream, &owned_buf, &body, max);
                    assert!(
                        encoding::decode::<ClientFrameRef<'_>>(&body).is_err(),
                        "the borrowed view accepts a body the owned type refuses: {body:02x?}"
                    );
                    return;
                }
                (
                    Err(FrameError::TooLarge { len, max: said }),
                    Err(FrameError::TooLarge {
                        len: len_b,
                        max: said_b,
                    }),
                ) => {
                    assert_eq!((len, said), (len_b, said_b));
                    cursor.too_large(stream, len, said, max);
                    return;
                }
                (frame, body) => panic!(
                    "owned and borrowed decoding disagree: {frame:?} vs {body:?} at {cursor:?}"
                ),
            }
        }
    }
}

/// The client reading a server.
fn client_side(stream: &[u8], step: usize, max: usize) {
    let mut codec = ClientCodec::new(max);
    let mut buf = BytesMut::new();
    let mut cursor = Cursor::default();
    for read in stream.chunks(step) {
        buf.extend_from_slice(read);
        cursor.fed += read.len();
        loop {
            match codec.decode(&mut buf) {
                Ok(None) => {
                    cursor.waiting(&buf);
                    break;
                }
                Ok(Some(frame)) => {
                    let body_len = cursor.position(&buf) - cursor.frame_start - HEADER_LEN;
                    let body = &stream[cursor.frame_start + HEADER_LEN..][..body_len];
                    let wire = cursor.frame(stream, &buf, body, max);
                    round_trip::<ServerFrame, ClientFrame>(&frame, wire, max);
                }
                Err(FrameError::TooLarge { len, max: said }) => {
                    cursor.too_large(stream, len, said, max);
                    return;
                }
                Err(FrameError::Malformed(_)) => return,
                Err(e) => panic!("unexpected decode error {e:?}"),
            }
        }
    }
}

/// Where a decoder is in the stream. The codec may take a frame's length
/// prefix out of the buffer before its body has arrived, so progress is
/// measured against the stream, not the buffer.
#[derive(Debug, Default)]
struct Cursor {
    /// Bytes of the stream put into the buffer so far.
    fed: usize,
    /// Stream offset of the frame being decoded.
    frame_start: usize,
}

impl Cursor {
    /// Stream offset of the first byte still in `buf`.
    fn position(&self, buf: &[u8]) -> usize {
        self.fed - buf.len()
    }

    /// After "no frame yet": at most the frame's prefix has been taken.
    fn waiting(&self, buf: &[u8]) {
        let taken = self.position(buf) - self.frame_start;
        assert!(
            taken == 0 || taken == HEADER_LEN,
            "{taken} bytes consumed without a frame at {self:?}"
        );
    }

    /// After a frame with `body`: it consumed exactly its prefix and its
    /// body, within the maximum. Returns the frame's bytes.
    fn frame<'s>(&mut self, stream: &'s [u8], buf: &[u8], body: &[u8], max: usize) -> &'s [u8] {
        let end = self.position(buf);
        assert!(
            body.len() <= max,
            "a body of {} bytes over {max}",
            body.len()
        );
        assert_eq!(
            end - self.frame_start,
            HEADER_LEN + body.len(),
            "at {self:?}"
        );
        let wire = &stream[self.frame_start..end];
        assert_eq!(announced(wire), Some(body.len() as u64));
        assert_eq!(&wire[HEADER_LEN..], body);
        self.frame_start = end;
        wire
    }

    /// After "too large": the refused length is the prefix at the frame's
    /// start, and is over the maximum.
    fn too_large(&self, stream: &[u8], len: u64, said: usize, max: usize) {
        assert_eq!(said, max);
        assert!(
            len > max as u64,
            "refused {len} bytes under a maximum of {max}"
        );
        assert_eq!(announced(&stream[self.frame_start..]), Some(len));
    }
}

/// `frame` re-encodes (by the peer's codec) to exactly `wire`, the bytes it
/// was decoded from, and those decode to `frame` again.
fn round_trip<T, Peer>(frame: &T, wire: &[u8], max: usize)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    FrameCodec<Peer, T>: for<'a> Encoder<&'a T, Error = FrameError>,
    FrameCodec<T, Peer>: Decoder<Item = T, Error = FrameError>,
{
    let mut out = BytesMut::new();
    FrameCodec::<Peer, T>::new(max)
        .encode(frame, &mut out)
        .unwrap_or_else(|e| panic!("a decoded frame does not re-encode: {e}: {frame:?}"));
    assert_eq!(&out[..], wire, "re-encoding differs: {frame:?}");
    let again = FrameCodec::<T, Peer>::new(max)
        .decode(&mut out)
        .expect("a re-encoded frame decodes")
        .expect("a re-encoded frame is whole");
    assert_eq!(&again, frame);
    assert!(out.is_empty());
}

fn announced(buf: &[u8]) -> Option<u64> {
    let prefix: [u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    Some(u64::from(u32::from_be_bytes(prefix)))
}
