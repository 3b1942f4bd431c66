//! Every message of the protocol.
//!
//! Variant order is part of the wire format: bincode writes an enum as its
//! variant index (a `u32`), so new variants are only ever appended, and
//! existing ones are never reordered or removed. `docs/PROTOCOL.md` lists the
//! indices, and `tests/golden.rs` pins them.

use serde::{Deserialize, Serialize};

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// The first frame of every connection.
    Hello(Hello),
    /// A request; only valid after the server's [`Welcome`].
    Request(RequestFrame),
}

/// The handshake a client opens a connection with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// The API key, when the server is configured with one.
    pub api_key: Option<String>,
}

/// A request and the id its answer will echo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the client; the server echoes it in the [`ResponseFrame`].
    /// Ids need not be sequential, but a client must not reuse an id while a
    /// request with it is still unanswered.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check, answered by [`Response::Pong`].
    Ping,
    /// Buy one ticket of `sale` for `user`, answered by [`Response::Reserve`].
    Reserve {
        /// The sale id.
        sale: String,
        /// The buyer.
        user: u64,
    },
    /// The state of a sale, answered by [`Response::Status`].
    Status {
        /// The sale id.
        sale: String,
    },
    /// Which ticket `user` holds, answered by [`Response::Lookup`]. This is
    /// how a client whose answer was lost (timeout, dropped connection) learns
    /// the truth.
    Lookup {
        /// The sale id.
        sale: String,
        /// The buyer.
        user: u64,
    },
    /// In a sale with holds, the shop confirms `user`'s hold as paid with
    /// `payment_ref` (1..=[`MAX_PAYMENT_REF_LEN`] bytes); answered by
    /// [`Response::Confirm`]. Idempotent by user and reference.
    Confirm {
        /// The sale id.
        sale: String,
        /// The holder.
        user: u64,
        /// The payment provider's reference.
        payment_ref: String,
    },
    /// In a sale with holds, the buyer gives up their unpaid hold; answered
    /// by [`Response::Release`].
    Cancel {
        /// The sale id.
        sale: String,
        /// The holder.
        user: u64,
    },
    /// In a sale with holds, the operator releases `user`'s held or
    /// confirmed ticket back to stock; answered by [`Response::Release`].
    Release {
        /// The sale id.
        sale: String,
        /// The holder.
        user: u64,
    },
    /// Every sale the server runs, answered by [`Response::Sales`].
    ListSales,
    /// The public facts of a sale's draw, answered by [`Response::Draw`].
    Draw {
        /// The sale id.
        sale: String,
    },
    /// One page of a published draw, answered by [`Response::DrawPage`]:
    /// entrants (ascending user ids) or winners (in ticket order), from
    /// index `from`.
    DrawPage {
        /// The sale id.
        sale: String,
        /// Winners rather than entrants.
        winners: bool,
        /// Index of the first user of the page.
        from: u32,
    },
}

/// Longest payment reference a confirmation accepts, in bytes.
pub const MAX_PAYMENT_REF_LEN: usize = 128;

impl Request {
    /// The sale the request is about, if any.
    pub fn sale(&self) -> Option<&str> {
        match self {
            Request::Ping | Request::ListSales => None,
            Request::Draw { sale } | Request::DrawPage { sale, .. } => Some(sale),
            Request::Reserve { sale, .. }
            | Request::Status { sale }
            | Request::Lookup { sale, .. }
            | Request::Confirm { sale, .. }
            | Request::Cancel { sale, .. }
            | Request::Release { sale, .. } => Some(sale),
        }
    }
}

/// A [`ClientFrame`] read without copying: its sale ids borrow the frame
/// body instead of allocating. Same bytes, same variants, same rules as the
/// owned type (`encoding::decode` accepts and rejects exactly the same
/// bodies for both); this is what a server decodes on its hot path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrameRef<'a> {
    /// The first frame of every connection.
    Hello(Hello),
    /// A request; only valid after the server's [`Welcome`].
    #[serde(borrow)]
    Request(RequestFrameRef<'a>),
}

/// A [`RequestFrame`] whose sale id borrows the frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrameRef<'a> {
    /// Chosen by the client; echoed in the [`ResponseFrame`].
    pub id: u64,
    /// What is asked.
    #[serde(borrow)]
    pub request: RequestRef<'a>,
}

/// A [`Request`] whose sale id borrows the frame body. Variant order is the
/// wire order, as for [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestRef<'a> {
    /// See [`Request::Ping`].
    Ping,
    /// See [`Request::Reserve`].
    Reserve {
        /// The sale id.
        sale: &'a str,
        /// The buyer.
        user: u64,
    },
    /// See [`Request::Status`].
    Status {
        /// The sale id.
        sale: &'a str,
    },
    /// See [`Request::Lookup`].
    Lookup {
        /// The sale id.
        sale: &'a str,
        /// The buyer.
        user: u64,
    },
    /// See [`Request::Confirm`].
    Confirm {
        /// The sale id.
        sale: &'a str,
        /// The holder.
        user: u64,
        /// The payment provider's reference.
        payment_ref: &'a str,
    },
    /// See [`Request::Cancel`].
    Cancel {
        /// The sale id.
        sale: &'a str,
        /// The holder.
        user: u64,
    },
    /// See [`Request::Release`].
    Release {
        /// The sale id.
        sale: &'a str,
        /// The holder.
        user: u64,
    },
    /// See [`Request::ListSales`].
    ListSales,
    /// See [`Request::Draw`].
    Draw {
        /// The sale id.
        sale: &'a str,
    },
    /// See [`Request::DrawPage`].
    DrawPage {
        /// The sale id.
        sale: &'a str,
        /// Winners rather than entrants.
        winners: bool,
        /// Index of the first user of the page.
        from: u32,
    },
}

impl RequestRef<'_> {
    /// The owned request.
    pub fn to_owned_request(&self) -> Request {
        match *self {
            RequestRef::Ping => Request::Ping,
            RequestRef::Reserve { sale, user } => Request::Reserve {
                sale: sale.to_owned(),
                user,
            },
            RequestRef::Status { sale } => Request::Status {
                sale: sale.to_owned(),
            },
            RequestRef::Lookup { sale, user } => Request::Lookup {
                sale: sale.to_owned(),
                user,
            },
            RequestRef::Confirm {
                sale,
                user,
                payment_ref,
            } => Request::Confirm {
                sale: sale.to_owned(),
                user,
                payment_ref: payment_ref.to_owned(),
            },
            RequestRef::Cancel { sale, user } => Request::Cancel {
                sale: sale.to_owned(),
                user,
            },
            RequestRef::Release { sale, user } => Request::Release {
                sale: sale.to_owned(),
                user,
            },
            RequestRef::ListSales => Request::ListSales,
            RequestRef::Draw { sale } => Request::Draw {
                sale: sale.to_owned(),
            },
            RequestRef::DrawPage {
                sale,
                winners,
                from,
            } => Request::DrawPage {
                sale: sale.to_owned(),
                winners,
                from,
            },
        }
    }
}

impl<'a> From<&'a Request> for RequestRef<'a> {
    fn from(request: &'a Request) -> Self {
        match request {
            Request::Ping => RequestRef::Ping,
            Request::Reserve { sale, user } => RequestRef::Reserve { sale, user: *user },
            Request::Status { sale } => RequestRef::Status { sale },
            Request::Lookup { sale, user } => RequestRef::Lookup { sale, user: *user },
            Request::Confirm {
                sale,
                user,
                payment_ref,
            } => RequestRef::Confirm {
                sale,
                user: *user,
                payment_ref,
            },
            Request::Cancel { sale, user } => RequestRef::Cancel { sale, user: *user },
            Request::Release { sale, user } => RequestRef::Release { sale, user: *user },
            Request::ListSales => RequestRef::ListSales,
            Request::Draw { sale } => RequestRef::Draw { sale },
            Request::DrawPage {
                sale,
                winners,
                from,
            } => RequestRef::DrawPage {
                sale,
                winners: *winners,
                from: *from,
            },
        }
    }
}

impl ClientFrameRef<'_> {
    /// The owned frame.
    pub fn to_owned_frame(&self) -> ClientFrame {
        match self {
            ClientFrameRef::Hello(hello) => ClientFrame::Hello(hello.clone()),
            ClientFrameRef::Request(RequestFrameRef { id, request }) => {
                ClientFrame::Request(RequestFrame {
                    id: *id,
                    request: request.to_owned_request(),
                })
            }
        }
    }
}

impl<'a> From<&'a ClientFrame> for ClientFrameRef<'a> {
    fn from(frame: &'a ClientFrame) -> Self {
        match frame {
            ClientFrame::Hello(hello) => ClientFrameRef::Hello(hello.clone()),
            ClientFrame::Request(RequestFrame { id, request }) => {
                ClientFrameRef::Request(RequestFrameRef {
                    id: *id,
                    request: request.into(),
                })
            }
        }
    }
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The handshake was accepted.
    Welcome(Welcome),
    /// The answer to one request.
    Response(ResponseFrame),
    /// A connection-level error. The server closes the connection after it.
    Error(ErrorFrame),
}

/// The server's answer to an accepted [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the server speaks on this connection.
    pub version: u16,
    /// The most requests the server keeps in progress on one connection;
    /// beyond it, the server stops reading until answers have gone out.
    pub max_in_flight: u32,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The id of the request this answers.
    pub id: u64,
    /// The answer.
    pub response: Response,
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::Reserve`].
    Reserve(ReserveOutcome),
    /// Answer to [`Request::Status`].
    Status(SaleStatus),
    /// Answer to [`Request::Lookup`]: the user's ticket, or `None`.
    Lookup {
        /// The ticket the user holds, durably.
        ticket: Option<u32>,
    },
    /// The request could not be answered (unknown sale for `Status` or
    /// `Lookup`, the log is unavailable, ...). The connection stays open.
    Error(ErrorFrame),
    /// The server could not settle the answer now (a `Lookup` of a ticket
    /// still on its way to disk after many log rounds): ask again after this
    /// many milliseconds. A reservation that is shed answers
    /// [`ReserveOutcome::Busy`] instead, so a `Reserve` always gets a
    /// `Reserve` answer.
    Busy {
        /// Suggested wait before asking again.
        retry_after_ms: u32,
    },
    /// Answer to [`Request::Confirm`].
    Confirm(ConfirmOutcome),
    /// Answer to [`Request::Cancel`] and [`Request::Release`].
    Release(ReleaseOutcome),
    /// Answer to [`Request::ListSales`]: every sale, in the server's order.
    Sales(Vec<SaleInfo>),
    /// Answer to [`Request::Lookup`] in a sale with holds: the user's held or
    /// confirmed ticket, durably, or `None`.
    Hold(Option<HoldInfo>),
    /// Answer to [`Request::Lookup`] for an entrant of a sale's draw who
    /// holds no ticket: still waiting for the draw, or not drawn.
    Entry(EntryInfo),
    /// Answer to [`Request::Draw`]: the draw's public facts; `None` for a
    /// sale without a draw. Boxed (the same bytes on the wire): every
    /// answer is as large as the largest variant, and this rare one would
    /// otherwise make every reservation's answer half as large again.
    Draw(Option<Box<DrawInfo>>),
    /// Answer to [`Request::DrawPage`].
    DrawPage(DrawPage),
}

/// An entrant's standing in a sale's draw, when they hold no ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    /// When entries close and the draw is made, Unix milliseconds.
    pub draws_at: u64,
    /// False: the draw is still to come (or not yet durable). True: the
    /// draw was made and this entrant was not among its winners.
    pub drawn: bool,
}

/// The public facts of a sale's draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawInfo {
    /// `SHA-256(seed)`, published from the moment the sale exists.
    pub commitment: [u8; 32],
    /// When entries close and the draw is made, Unix milliseconds.
    pub draws_at: u64,
    /// Entrants so far.
    pub entrants: u32,
    /// Winners of the published draw (0 before).
    pub winners: u32,
    /// The sale's tickets.
    pub capacity: u32,
    /// The seed: `None` until the draw is made and durable.
    pub seed: Option<[u8; 32]>,
}

/// Most users in one [`DrawPage`]: 4,096 ids, 32 KiB, well inside a frame.
pub const DRAW_PAGE_LEN: u32 = 4096;

/// One page of a published draw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawPage {
    /// Users in the whole list (entrants or winners).
    pub total: u32,
    /// Up to [`DRAW_PAGE_LEN`] users from the page's `from`: entrants
    /// ascending, or winners in ticket order (the winner at index `i` holds
    /// ticket `i + 1`). Empty past the end, and before the draw is
    /// published.
    pub users: Vec<u64>,
}

/// A user's ticket in a sale with holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldInfo {
    /// The ticket.
    pub ticket: u32,
    /// The payment deadline (Unix milliseconds) of an unpaid hold; `None`
    /// once the ticket is confirmed.
    pub expires_at: Option<u64>,
}

/// The outcome of a payment confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfirmOutcome {
    /// The hold is confirmed (now, or earlier with the same reference).
    Confirmed {
        /// The ticket.
        ticket: u32,
    },
    /// The ticket is already confirmed with another payment reference.
    OtherReference {
        /// The ticket.
        ticket: u32,
    },
    /// The hold expired, or was cancelled or released, before this
    /// confirmation: the user holds nothing now.
    Expired,
    /// The user never held a ticket in this sale.
    NoHold,
    /// No sale has this id.
    UnknownSale,
    /// The sale sells final tickets, without holds.
    NoHolds,
}

/// The outcome of a cancel or a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseOutcome {
    /// The ticket is back in stock.
    Released {
        /// The ticket.
        ticket: u32,
    },
    /// A buyer cannot cancel a paid ticket (the operator can release it).
    Confirmed {
        /// The ticket.
        ticket: u32,
    },
    /// The user holds nothing.
    NoHold,
    /// No sale has this id.
    UnknownSale,
    /// The sale sells final tickets, without holds.
    NoHolds,
}

/// Everything about a sale: [`SaleStatus`] with the counters and options of
/// the sale lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleInfo {
    /// The sale id.
    pub sale: String,
    /// Tickets in the sale.
    pub capacity: u32,
    /// Tickets on sale now.
    pub remaining: u32,
    /// Tickets held, unpaid.
    pub held: u32,
    /// Tickets paid.
    pub confirmed: u32,
    /// Tickets taken: `capacity - remaining`.
    pub sold: u32,
    /// The phase.
    pub state: SaleState,
    /// Opening time, Unix milliseconds.
    pub opens_at: u64,
    /// Length of a hold in seconds; `None` for a sale whose wins are final.
    pub hold_seconds: Option<u32>,
}

/// The outcome of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReserveOutcome {
    /// The user bought this ticket, and the purchase is durable.
    Won {
        /// Ticket number, in `1..=capacity`.
        ticket: u32,
    },
    /// The user already holds this ticket (a retry): the same number as the
    /// original win, never a second ticket.
    AlreadyOwned {
        /// Ticket number, in `1..=capacity`.
        ticket: u32,
    },
    /// Every ticket is gone.
    SoldOut,
    /// The sale opens at `opens_at` (Unix time in milliseconds).
    NotOpen {
        /// Opening time, Unix milliseconds.
        opens_at: u64,
    },
    /// No sale has this id.
    UnknownSale,
    /// The server is shedding load: retry after this many milliseconds.
    Busy {
        /// Suggested wait before retrying.
        retry_after_ms: u32,
    },
    /// In a sale with holds: the user holds this ticket until `expires_at`
    /// (Unix milliseconds), durably, and must pay before then.
    Held {
        /// Ticket number, in `1..=capacity`.
        ticket: u32,
        /// The payment deadline, Unix milliseconds.
        expires_at: u64,
    },
    /// The operator paused the sale; it may resume.
    Paused,
    /// The operator closed the sale, for good.
    Closed,
    /// In a sale with holds, a retry: the user already holds this ticket
    /// (`expires_at` set: unpaid, until then) or owns it (`None`: confirmed).
    AlreadyHeld {
        /// Ticket number.
        ticket: u32,
        /// The payment deadline of an unpaid hold.
        expires_at: Option<u64>,
    },
    /// In a sale with a draw, inside its window: the user is in the draw,
    /// durably, made at `draws_at` (Unix milliseconds). Asking again before
    /// then gives the same answer.
    Entered {
        /// When entries close and the draw is made, Unix milliseconds.
        draws_at: u64,
    },
}

/// A snapshot of a sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleStatus {
    /// The sale id.
    pub sale: String,
    /// Tickets in the sale.
    pub capacity: u32,
    /// Tickets not yet sold.
    pub remaining: u32,
    /// Tickets sold (`capacity - remaining`).
    pub sold: u32,
    /// Whether the sale has opened, and whether it is sold out.
    pub state: SaleState,
    /// Opening time, Unix milliseconds.
    pub opens_at: u64,
}

/// The phase a sale is in.
///
/// Its JSON name (the HTTP front's `"state"`) is snake case: `"upcoming"`,
/// `"open"`, `"sold_out"`, `"paused"`, `"closed"`. The binary encoding uses the variant index and is
/// not affected by the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    /// Not open yet.
    Upcoming,
    /// Open, with tickets left.
    Open,
    /// Every ticket is sold.
    SoldOut,
    /// Paused by the operator (JSON `"paused"`).
    Paused,
    /// Closed by the operator, for good (JSON `"closed"`).
    Closed,
}

/// An error: a machine-readable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorFrame {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.name(),
            self.code.0,
            self.message
        )
    }
}

impl std::error::Error for ErrorFrame {}

/// A numeric error code.
///
/// A plain `u16` on the wire rather than an enum, so that a server can add
/// codes without breaking older clients: an unknown code is still an error
/// with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The client speaks another protocol version.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(1);
    /// The API key is missing or wrong.
    pub const UNAUTHORIZED: ErrorCode = ErrorCode(2);
    /// The first frame was not a `Hello`, or a second `Hello` was sent.
    pub const HANDSHAKE_REQUIRED: ErrorCode = ErrorCode(3);
    /// A frame body could not be decoded.
    pub const MALFORMED: ErrorCode = ErrorCode(4);
    /// A frame's length prefix exceeds the server's maximum.
    pub const FRAME_TOO_LARGE: ErrorCode = ErrorCode(5);
    /// The server is at its connection limit; retry later.
    pub const OVERLOADED: ErrorCode = ErrorCode(6);
    /// No sale has the requested id.
    pub const UNKNOWN_SALE: ErrorCode = ErrorCode(7);
    /// A field is out of range (for example an over-long sale id).
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(8);
    /// The write-ahead log cannot make records durable: no purchase can be
    /// acknowledged until the server is repaired.
    pub const LOG_UNAVAILABLE: ErrorCode = ErrorCode(9);
    /// The connection was idle for longer than the server's idle timeout.
    pub const IDLE_TIMEOUT: ErrorCode = ErrorCode(10);
    /// The server is shutting down.
    pub const SHUTTING_DOWN: ErrorCode = ErrorCode(11);
    /// An unexpected server-side failure.
    pub const INTERNAL: ErrorCode = ErrorCode(12);
    /// This node of a cluster is not its leader and serves no sale: the
    /// message is the leader's native address (`host:port`), or empty
    /// while no leader is known.
    pub const NOT_LEADER: ErrorCode = ErrorCode(13);

    /// A short name for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::UNSUPPORTED_VERSION => "unsupported_version",
            Self::UNAUTHORIZED => "unauthorized",
            Self::HANDSHAKE_REQUIRED => "handshake_required",
            Self::MALFORMED => "malformed",
            Self::FRAME_TOO_LARGE => "frame_too_large",
            Self::OVERLOADED => "overloaded",
            Self::UNKNOWN_SALE => "unknown_sale",
            Self::INVALID_REQUEST => "invalid_request",
            Self::LOG_UNAVAILABLE => "log_unavailable",
            Self::IDLE_TIMEOUT => "idle_timeout",
            Self::SHUTTING_DOWN => "shutting_down",
            Self::INTERNAL => "internal",
            Self::NOT_LEADER => "not_leader",
            _ => "unknown",
        }
    }
}
