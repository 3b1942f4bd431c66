//! The sale lifecycle's vocabulary: what an operator does to a sale
//! ([`SaleAction`]) and why a held ticket goes back on sale ([`ReleaseReason`]).
//!
//! One definition each for the core that decides, the log that records (as a
//! `code` byte that is never reused) and the fronts that report (as a
//! `label`).

use serde::{Deserialize, Serialize};

/// Why a ticket left its holder and returned to stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The hold reached its payment deadline unpaid.
    Expired,
    /// The buyer gave the hold up.
    Cancelled,
    /// The operator released a held or confirmed ticket (a void or a refund).
    Released,
}

impl ReleaseReason {
    /// Every reason, in code order.
    pub const ALL: [ReleaseReason; 3] = [
        ReleaseReason::Expired,
        ReleaseReason::Cancelled,
        ReleaseReason::Released,
    ];

    /// The byte that stands for this reason on disk. Never reused.
    pub const fn code(self) -> u8 {
        match self {
            ReleaseReason::Expired => 1,
            ReleaseReason::Cancelled => 2,
            ReleaseReason::Released => 3,
        }
    }

    /// The reason a byte stands for, if any.
    pub fn from_code(code: u8) -> Option<ReleaseReason> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Its name in JSON, metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            ReleaseReason::Expired => "expired",
            ReleaseReason::Cancelled => "cancelled",
            ReleaseReason::Released => "released",
        }
    }
}

/// What an operator does to a running sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleAction {
    /// Reservations are refused until the sale is resumed.
    Pause,
    /// A paused sale takes reservations again.
    Resume,
    /// The sale ends for good; open holds may still be confirmed until they
    /// expire.
    Close,
}

impl SaleAction {
    /// Every action, in code order.
    pub const ALL: [SaleAction; 3] = [SaleAction::Pause, SaleAction::Resume, SaleAction::Close];

    /// The byte that stands for this action on disk. Never reused.
    pub const fn code(self) -> u8 {
        match self {
            SaleAction::Pause => 1,
            SaleAction::Resume => 2,
            SaleAction::Close => 3,
        }
    }

    /// The action a byte stands for, if any.
    pub fn from_code(code: u8) -> Option<SaleAction> {
        Self::ALL.into_iter().find(|a| a.code() == code)
    }

    /// Its name in the admin API's paths, metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            SaleAction::Pause => "pause",
            SaleAction::Resume => "resume",
            SaleAction::Close => "close",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_nothing_else_decodes() {
        for reason in ReleaseReason::ALL {
            assert_eq!(ReleaseReason::from_code(reason.code()), Some(reason));
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{}\"", reason.label())
            );
        }
        let known: Vec<u8> = ReleaseReason::ALL.map(ReleaseReason::code).into();
        for code in (0..=u8::MAX).filter(|c| !known.contains(c)) {
            assert_eq!(ReleaseReason::from_code(code), None, "{code}");
        }
    }

    #[test]
    fn actions_round_trip_and_nothing_else_decodes() {
        for action in SaleAction::ALL {
            assert_eq!(SaleAction::from_code(action.code()), Some(action));
            assert_eq!(
                serde_json::to_string(&action).unwrap(),
                format!("\"{}\"", action.label())
            );
        }
        assert_eq!(SaleAction::from_code(0), None);
        assert_eq!(SaleAction::from_code(4), None);
    }
}
