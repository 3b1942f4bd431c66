//! The flashsale wire protocol: message types, their encoding, and framing.
//!
//! This crate is pure: no sockets, no runtime (the handshake helpers are
//! generic over any async byte stream). The server and the client both
//! depend on it, so every message type has exactly one home.
//!
//! # Layout
//!
//! - [`message`]: the request and response types (what is said).
//! - [`encoding`]: how a message body becomes bytes. It is the only module that
//!   knows which serializer is used (bincode 1.3, fixed-width little-endian
//!   integers), so the serializer can be swapped without touching anything else.
//! - [`codec`]: the frame layer (a 4-byte big-endian length, then the body) as a
//!   tokio-util [`Decoder`](tokio_util::codec::Decoder)/[`Encoder`](tokio_util::codec::Encoder)
//!   pair, with the maximum body size checked before a body is buffered.
//! - [`handshake`]: both sides of the handshake: the client's, once for every
//!   client, and the server's judgement of a `Hello`.
//! - [`lifecycle`]: [`SaleAction`] and [`ReleaseReason`], what an operator
//!   does to a sale and why a held ticket goes back on sale, each with its
//!   byte in the log and its label.
//! - [`outcome`]: [`OutcomeKind`], the one list of reservation outcomes with
//!   their labels and HTTP statuses.
//! - [`json`]: the HTTP front's JSON bodies, shared by the server and the
//!   load generator.
//!
//! The byte layout is specified in `docs/PROTOCOL.md`, and pinned by golden byte
//! vectors in this crate's tests.
//!
//! # A conversation
//!
//! The client's first frame is a [`Hello`](message::Hello) naming
//! [`PROTOCOL_VERSION`]; the server answers [`Welcome`](message::Welcome) or an
//! [`ErrorFrame`](message::ErrorFrame) followed by a close. After that the
//! client sends [`RequestFrame`](message::RequestFrame)s, each with its own
//! `u64` id, without waiting for answers. Every answer echoes the id of its
//! request, and answers may arrive out of order: a request that has to wait for
//! the disk (a winning reservation) never holds up one that does not.

pub mod codec;
pub mod encoding;
pub mod handshake;
pub mod json;
pub mod lifecycle;
pub mod message;
pub mod outcome;

pub use codec::{ClientCodec, FrameCodec, FrameError, ServerCodec};
pub use lifecycle::{ReleaseReason, SaleAction};
pub use message::*;
pub use outcome::OutcomeKind;

/// The protocol version this crate speaks. A server refuses a [`Hello`] with
/// another version.
pub const PROTOCOL_VERSION: u16 = 1;

/// Default maximum size of a frame body in bytes (64 KiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Largest frame body a server reads before the handshake is done: room
/// for a `Hello` with an API key of up to 1,000 bytes. A longer first frame
/// is refused on its length prefix, before any of its body is buffered, so a
/// connection that has not authenticated costs little memory.
pub const MAX_HELLO_LEN: usize = 1024;

/// Longest API key that fits in a `Hello` of [`MAX_HELLO_LEN`] bytes: the
/// rest of its body is the variant index (4 bytes), the version (2), the
/// `Some` tag (1) and the key's length (8).
pub const MAX_API_KEY_LEN: usize = MAX_HELLO_LEN - 15;

/// Maximum length of a sale id in bytes.
pub const MAX_SALE_ID_LEN: usize = 64;
