//! Errors of building sales; the reserve path itself has no error type.

/// Why a sale or the set of sales could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The capacity is zero or above [`MAX_CAPACITY`](super::MAX_CAPACITY).
    #[error("capacity {capacity} is outside 1..={max}", max = super::MAX_CAPACITY)]
    InvalidCapacity {
        /// The rejected capacity.
        capacity: u32,
    },
    /// The sale id is empty or longer than [`MAX_SALE_ID_LEN`](flashsale_protocol::MAX_SALE_ID_LEN) bytes.
    #[error("sale id must be 1..={max} bytes, got {len}", max = flashsale_protocol::MAX_SALE_ID_LEN)]
    InvalidId {
        /// Length of the rejected id in bytes.
        len: usize,
    },
    /// A restored ticket number is outside `1..=capacity`.
    #[error("ticket {ticket} is outside 1..={capacity}")]
    TicketOutOfRange {
        /// The rejected ticket.
        ticket: u32,
        /// The sale's capacity.
        capacity: u32,
    },
    /// Two restored sales carry the same ticket.
    #[error("ticket {ticket} is sold twice")]
    DuplicateTicket {
        /// The repeated ticket.
        ticket: u32,
    },
    /// Two restored sales went to the same user.
    #[error("user {user} holds two tickets")]
    DuplicateUser {
        /// The repeated user.
        user: u64,
    },
    /// The buyer set had no room for a restored user (pathological hashing).
    #[error("no room in the buyer set for user {user}")]
    BuyerSetFull {
        /// The user that did not fit.
        user: u64,
    },
    /// Two sales share an id.
    #[error("sale id {id:?} is used twice")]
    DuplicateSale {
        /// The repeated id.
        id: String,
    },
    /// An opening time after [`MAX_OPENS_AT_MS`](super::sale::MAX_OPENS_AT_MS).
    #[error(
        "opening time {opens_at_ms} is after the year 9999 (at most {max} Unix ms)",
        max = super::sale::MAX_OPENS_AT_MS
    )]
    InvalidOpening {
        /// The rejected opening time.
        opens_at_ms: u64,
    },
    /// A hold length outside `1..=MAX_HOLD_MS`.
    #[error("hold of {hold_ms} ms is outside 1..={max} ms", max = super::sale::MAX_HOLD_MS)]
    InvalidHold {
        /// The rejected hold length.
        hold_ms: u64,
    },
    /// The draw window is out of range.
    #[error("draw window of {window_ms} ms is outside 1..={max} ms", max = super::MAX_DRAW_WINDOW_MS)]
    InvalidDrawWindow {
        /// The window asked for.
        window_ms: u64,
    },
    /// A sale with holds or a draw built without a journal for its
    /// decisions.
    #[error("sale {id:?} has holds or a draw: build it with Sale::recover")]
    NeedsJournal {
        /// The sale id.
        id: String,
    },
    /// A sale without holds built as one with holds.
    #[error("sale {id:?} has no holds")]
    NoHolds {
        /// The sale id.
        id: String,
    },
    /// A logged change that does not fit the state before it.
    #[error("sale {id:?}: {reason}")]
    Replay {
        /// The sale id.
        id: String,
        /// What does not fit.
        reason: String,
    },
}
