//! What a reservation came to, without its data: the one list of outcomes.
//!
//! Every place that names an outcome derives it from here: the JSON
//! `"outcome"` of the HTTP front and its status code, the `outcome` label of
//! the metrics, the load generator's report. A new outcome is added to
//! [`ReserveOutcome`] and [`OutcomeKind`] together, and the compiler then
//! points at every match that must learn it.

use serde::{Deserialize, Serialize};

use crate::message::{ConfirmOutcome, ReleaseOutcome, ReserveOutcome};

/// The kind of a [`ReserveOutcome`], with its label and its HTTP status.
///
/// Serialized as its [`label`](OutcomeKind::label) (`"won"`, `"sold_out"`,
/// ...), which is how the HTTP front's bodies spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A ticket was sold, durably.
    Won,
    /// The user already holds a ticket.
    AlreadyOwned,
    /// No ticket left.
    SoldOut,
    /// The sale has not opened yet.
    NotOpen,
    /// No such sale.
    UnknownSale,
    /// Refused to shed load; retry later.
    Busy,
    /// A ticket is held, to be paid by a deadline.
    Held,
    /// The operator paused the sale.
    Paused,
    /// The operator closed the sale.
    Closed,
    /// The user is in the sale's draw.
    Entered,
}

impl OutcomeKind {
    /// How many kinds there are.
    pub const COUNT: usize = 10;

    /// Every kind, in the order of [`ReserveOutcome`]'s variants. The first
    /// nine kinds' index is their variant's wire index; `AlreadyHeld`
    /// (wire 9) is of kind `AlreadyOwned`, and `Entered` is wire 10.
    pub const ALL: [OutcomeKind; OutcomeKind::COUNT] = [
        OutcomeKind::Won,
        OutcomeKind::AlreadyOwned,
        OutcomeKind::SoldOut,
        OutcomeKind::NotOpen,
        OutcomeKind::UnknownSale,
        OutcomeKind::Busy,
        OutcomeKind::Held,
        OutcomeKind::Paused,
        OutcomeKind::Closed,
        OutcomeKind::Entered,
    ];

    /// The name everywhere outside the binary protocol: the HTTP body's
    /// `"outcome"`, the metrics' `outcome` label, the load generator's report.
    pub const fn label(self) -> &'static str {
        match self {
            OutcomeKind::Won => "won",
            OutcomeKind::AlreadyOwned => "already_owned",
            OutcomeKind::SoldOut => "sold_out",
            OutcomeKind::NotOpen => "not_open",
            OutcomeKind::UnknownSale => "unknown_sale",
            OutcomeKind::Busy => "busy",
            OutcomeKind::Held => "held",
            OutcomeKind::Paused => "paused",
            OutcomeKind::Closed => "closed",
            OutcomeKind::Entered => "entered",
        }
    }

    /// The HTTP status the front answers it with.
    pub const fn http_status(self) -> u16 {
        match self {
            OutcomeKind::Won => 201,
            OutcomeKind::AlreadyOwned => 200,
            OutcomeKind::SoldOut => 410,
            OutcomeKind::NotOpen => 425,
            OutcomeKind::UnknownSale => 404,
            OutcomeKind::Busy => 503,
            OutcomeKind::Held => 201,
            OutcomeKind::Paused => 423,
            OutcomeKind::Closed => 410,
            OutcomeKind::Entered => 202,
        }
    }

    /// Index into per-kind arrays, `0..COUNT`.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl ReserveOutcome {
    /// This outcome's kind.
    pub const fn kind(&self) -> OutcomeKind {
        match self {
            ReserveOutcome::Won { .. } => OutcomeKind::Won,
            ReserveOutcome::AlreadyOwned { .. } => OutcomeKind::AlreadyOwned,
            ReserveOutcome::SoldOut => OutcomeKind::SoldOut,
            ReserveOutcome::NotOpen { .. } => OutcomeKind::NotOpen,
            ReserveOutcome::UnknownSale => OutcomeKind::UnknownSale,
            ReserveOutcome::Busy { .. } => OutcomeKind::Busy,
            ReserveOutcome::Held { .. } => OutcomeKind::Held,
            ReserveOutcome::Paused => OutcomeKind::Paused,
            ReserveOutcome::Closed => OutcomeKind::Closed,
            // A retry in a sale with holds is the same answer as in one
            // without: the ticket is already the user's.
            ReserveOutcome::AlreadyHeld { .. } => OutcomeKind::AlreadyOwned,
            ReserveOutcome::Entered { .. } => OutcomeKind::Entered,
        }
    }

    /// The ticket this outcome names, for `Won`, `AlreadyOwned`, `Held` and
    /// `AlreadyHeld`.
    pub const fn ticket(&self) -> Option<u32> {
        match self {
            ReserveOutcome::Won { ticket }
            | ReserveOutcome::AlreadyOwned { ticket }
            | ReserveOutcome::Held { ticket, .. }
            | ReserveOutcome::AlreadyHeld { ticket, .. } => Some(*ticket),
            _ => None,
        }
    }
}

impl ConfirmOutcome {
    /// The `"outcome"` of the admin API's answer, and the metrics' label.
    pub const fn label(self) -> &'static str {
        match self {
            ConfirmOutcome::Confirmed { .. } => "confirmed",
            ConfirmOutcome::OtherReference { .. } => "other_reference",
            ConfirmOutcome::Expired => "expired",
            ConfirmOutcome::NoHold => "no_hold",
            ConfirmOutcome::UnknownSale => "unknown_sale",
            ConfirmOutcome::NoHolds => "no_holds",
        }
    }

    /// The HTTP status the admin API answers it with.
    pub const fn http_status(self) -> u16 {
        match self {
            ConfirmOutcome::Confirmed { .. } => 200,
            ConfirmOutcome::OtherReference { .. } | ConfirmOutcome::NoHolds => 409,
            ConfirmOutcome::Expired => 410,
            ConfirmOutcome::NoHold | ConfirmOutcome::UnknownSale => 404,
        }
    }

    /// The ticket this outcome names.
    pub const fn ticket(self) -> Option<u32> {
        match self {
            ConfirmOutcome::Confirmed { ticket } | ConfirmOutcome::OtherReference { ticket } => {
                Some(ticket)
            }
            _ => None,
        }
    }
}

impl ReleaseOutcome {
    /// The `"outcome"` of the answer, and the metrics' label.
    pub const fn label(self) -> &'static str {
        match self {
            ReleaseOutcome::Released { .. } => "released",
            ReleaseOutcome::Confirmed { .. } => "confirmed",
            ReleaseOutcome::NoHold => "no_hold",
            ReleaseOutcome::UnknownSale => "unknown_sale",
            ReleaseOutcome::NoHolds => "no_holds",
        }
    }

    /// The HTTP status it is answered with: a buyer cannot cancel a paid
    /// ticket (409).
    pub const fn http_status(self) -> u16 {
        match self {
            ReleaseOutcome::Released { .. } => 200,
            ReleaseOutcome::Confirmed { .. } | ReleaseOutcome::NoHolds => 409,
            ReleaseOutcome::NoHold | ReleaseOutcome::UnknownSale => 404,
        }
    }

    /// The ticket this outcome names.
    pub const fn ticket(self) -> Option<u32> {
        match self {
            ReleaseOutcome::Released { ticket } | ReleaseOutcome::Confirmed { ticket } => {
                Some(ticket)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serde_name_is_the_label() {
        for kind in OutcomeKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.label()));
            assert_eq!(serde_json::from_str::<OutcomeKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn all_is_in_index_order() {
        for (i, kind) in OutcomeKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn kinds_follow_the_wire_variants() {
        let outcomes = [
            ReserveOutcome::Won { ticket: 1 },
            ReserveOutcome::AlreadyOwned { ticket: 1 },
            ReserveOutcome::SoldOut,
            ReserveOutcome::NotOpen { opens_at: 1 },
            ReserveOutcome::UnknownSale,
            ReserveOutcome::Busy { retry_after_ms: 1 },
            ReserveOutcome::Held {
                ticket: 1,
                expires_at: 2,
            },
            ReserveOutcome::Paused,
            ReserveOutcome::Closed,
        ];
        assert_eq!(outcomes.len(), OutcomeKind::COUNT - 1);
        for (outcome, kind) in outcomes.iter().zip(OutcomeKind::ALL) {
            assert_eq!(outcome.kind(), kind);
            // The wire's variant index is the kind's index.
            let bytes = crate::encoding::encode(outcome).unwrap();
            assert_eq!(
                u32::from_le_bytes(bytes[..4].try_into().unwrap()),
                kind as u32
            );
        }
        let retry = ReserveOutcome::AlreadyHeld {
            ticket: 1,
            expires_at: None,
        };
        assert_eq!(retry.kind(), OutcomeKind::AlreadyOwned);
        assert_eq!(retry.ticket(), Some(1));
        let entered = ReserveOutcome::Entered { draws_at: 5 };
        assert_eq!(entered.kind(), OutcomeKind::Entered);
        assert_eq!(entered.ticket(), None);
        let bytes = crate::encoding::encode(&entered).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()), 10);
    }
}
