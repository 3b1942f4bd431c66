//! The JSON bodies of the HTTP front, as types.
//!
//! The server serializes them and the load generator (or any Rust client of
//! the HTTP API) deserializes the same types, so the two cannot drift apart.
//! `docs/HTTP.md` is their reference in prose. A sale's status is
//! [`SaleStatus`](crate::SaleStatus) itself: its JSON form is the body of
//! `GET /api/sales/{sale}`.

use serde::{Deserialize, Serialize};

use crate::message::{
    ConfirmOutcome, DrawInfo, EntryInfo, HoldInfo, ReleaseOutcome, ReserveOutcome, Response,
    SaleInfo, SaleState, SaleStatus,
};
use crate::outcome::OutcomeKind;

/// The body of every answer to `POST /api/sales/{sale}/reserve` that the
/// core gave: `{"outcome":"won","ticket":7}`, `{"outcome":"sold_out"}`,
/// `{"outcome":"not_open","opens_at":MS}`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveBody {
    /// What the reservation came to.
    pub outcome: OutcomeKind,
    /// The ticket, for `won` and `already_owned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<u32>,
    /// The opening time (Unix ms), for `not_open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<u64>,
    /// In a sale with holds, for `already_owned`: whether the ticket is
    /// still held or already paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HoldStatus>,
    /// The payment deadline (Unix ms), for `held`, and for `already_owned`
    /// while the ticket is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// When the draw is made (Unix ms), for `entered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draws_at: Option<u64>,
}

/// Where a ticket of a sale with holds stands: `"held"` (unpaid, until its
/// `expires_at`) or `"confirmed"` (paid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    /// Held, to be paid by a deadline.
    Held,
    /// Paid.
    Confirmed,
}

impl HoldStatus {
    /// The status a payment deadline implies: held while there is one.
    pub fn of(expires_at: Option<u64>) -> HoldStatus {
        match expires_at {
            Some(_) => HoldStatus::Held,
            None => HoldStatus::Confirmed,
        }
    }
}

impl From<&ReserveOutcome> for ReserveBody {
    fn from(outcome: &ReserveOutcome) -> Self {
        ReserveBody {
            outcome: outcome.kind(),
            ticket: outcome.ticket(),
            opens_at: match outcome {
                ReserveOutcome::NotOpen { opens_at } => Some(*opens_at),
                _ => None,
            },
            status: match outcome {
                ReserveOutcome::AlreadyHeld { expires_at, .. } => Some(HoldStatus::of(*expires_at)),
                _ => None,
            },
            expires_at: match outcome {
                ReserveOutcome::Held { expires_at, .. } => Some(*expires_at),
                ReserveOutcome::AlreadyHeld { expires_at, .. } => *expires_at,
                _ => None,
            },
            draws_at: match outcome {
                ReserveOutcome::Entered { draws_at } => Some(*draws_at),
                _ => None,
            },
        }
    }
}

impl ReserveBody {
    /// The outcome this body describes; `None` when a field its kind needs
    /// is missing. A `busy` body carries no wait (the `Retry-After` header
    /// does): pass it in as `retry_after_ms`.
    pub fn outcome(&self, retry_after_ms: u32) -> Option<ReserveOutcome> {
        Some(match self.outcome {
            OutcomeKind::Won => ReserveOutcome::Won {
                ticket: self.ticket?,
            },
            OutcomeKind::AlreadyOwned => match self.status {
                None => ReserveOutcome::AlreadyOwned {
                    ticket: self.ticket?,
                },
                Some(status) => ReserveOutcome::AlreadyHeld {
                    ticket: self.ticket?,
                    expires_at: match status {
                        HoldStatus::Held => Some(self.expires_at?),
                        HoldStatus::Confirmed => None,
                    },
                },
            },
            OutcomeKind::SoldOut => ReserveOutcome::SoldOut,
            OutcomeKind::NotOpen => ReserveOutcome::NotOpen {
                opens_at: self.opens_at?,
            },
            OutcomeKind::UnknownSale => ReserveOutcome::UnknownSale,
            OutcomeKind::Busy => ReserveOutcome::Busy { retry_after_ms },
            OutcomeKind::Held => ReserveOutcome::Held {
                ticket: self.ticket?,
                expires_at: self.expires_at?,
            },
            OutcomeKind::Paused => ReserveOutcome::Paused,
            OutcomeKind::Closed => ReserveOutcome::Closed,
            OutcomeKind::Entered => ReserveOutcome::Entered {
                draws_at: self.draws_at?,
            },
        })
    }
}

/// An error the HTTP front answers with: the `"error"` code of an
/// [`ErrorBody`], with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiError {
    /// No such route (404).
    NotFound,
    /// A malformed request or a field out of range (400).
    InvalidRequest,
    /// A missing, malformed, expired or forged bearer token (401).
    InvalidToken,
    /// No such sale, for a request other than a reservation (404).
    UnknownSale,
    /// The core's log cannot make records durable (503).
    LogUnavailable,
    /// An unexpected failure (500).
    Internal,
    /// A gateway could not reach the core (502).
    CoreUnavailable,
    /// A gateway got no answer from the core in time (504).
    CoreTimeout,
    /// A missing or wrong operator key on the admin API (401).
    Unauthorized,
    /// The request contradicts the current state, such as a sale created
    /// again with another definition, or resumed after its close (409).
    Conflict,
    /// The request body did not arrive in time (408).
    RequestTimeout,
    /// The request body is over the size limit (413).
    TooLarge,
    /// The client already has as many connections open as one client may
    /// (429).
    TooManyConnections,
    /// The sale's draw is not made (and published) yet: ask again after
    /// `Retry-After` (425).
    DrawPending,
    /// The sale has no draw (404).
    NoDraw,
    /// The client (its address, or the user its token names) is over its
    /// request rate (429, with `Retry-After`). Answered as a bare
    /// [`ErrorCodeBody`]: it is sent to floods, and says all there is.
    RateLimited,
    /// This node of a cluster does not lead it, and no leader could be
    /// reached in its stead (503, with `Retry-After`).
    NotLeader,
}

impl ApiError {
    /// How many codes there are.
    pub const COUNT: usize = 17;

    /// Every code.
    pub const ALL: [ApiError; ApiError::COUNT] = [
        ApiError::NotFound,
        ApiError::InvalidRequest,
        ApiError::InvalidToken,
        ApiError::UnknownSale,
        ApiError::LogUnavailable,
        ApiError::Internal,
        ApiError::CoreUnavailable,
        ApiError::CoreTimeout,
        ApiError::Unauthorized,
        ApiError::Conflict,
        ApiError::RequestTimeout,
        ApiError::TooLarge,
        ApiError::TooManyConnections,
        ApiError::DrawPending,
        ApiError::NoDraw,
        ApiError::RateLimited,
        ApiError::NotLeader,
    ];

    /// The `"error"` code of the body, and the metrics' `outcome` label.
    pub const fn code(self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::InvalidRequest => "invalid_request",
            ApiError::InvalidToken => "invalid_token",
            ApiError::UnknownSale => "unknown_sale",
            ApiError::LogUnavailable => "log_unavailable",
            ApiError::Internal => "internal",
            ApiError::CoreUnavailable => "core_unavailable",
            ApiError::CoreTimeout => "core_timeout",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Conflict => "conflict",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::TooLarge => "too_large",
            ApiError::TooManyConnections => "too_many_connections",
            ApiError::DrawPending => "draw_pending",
            ApiError::NoDraw => "no_draw",
            ApiError::RateLimited => "rate_limited",
            ApiError::NotLeader => "not_leader",
        }
    }

    /// The HTTP status it is answered with.
    pub const fn http_status(self) -> u16 {
        match self {
            ApiError::NotFound | ApiError::UnknownSale | ApiError::NoDraw => 404,
            ApiError::DrawPending => 425,
            ApiError::InvalidRequest => 400,
            ApiError::InvalidToken | ApiError::Unauthorized => 401,
            ApiError::Conflict => 409,
            ApiError::RequestTimeout => 408,
            ApiError::TooLarge => 413,
            ApiError::TooManyConnections | ApiError::RateLimited => 429,
            ApiError::LogUnavailable | ApiError::NotLeader => 503,
            ApiError::Internal => 500,
            ApiError::CoreUnavailable => 502,
            ApiError::CoreTimeout => 504,
        }
    }

    /// Index into per-code arrays, `0..COUNT`.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// `{"error": code, "message": text}`: every error answer of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for programs.
    pub error: ApiError,
    /// What went wrong, for people.
    pub message: String,
}

/// `{"error": code}`: an error answer with no message, for the answers sent
/// to floods ([`ApiError::RateLimited`]), where the code says everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCodeBody {
    /// What went wrong, for programs.
    pub error: ApiError,
}

/// `GET /api/sales/{sale}/me`: the ticket the user durably holds, `null`
/// (with 404) when none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupBody {
    /// The user's ticket.
    pub ticket: Option<u32>,
    /// In a sale with holds: whether the ticket is held or paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HoldStatus>,
    /// In a sale with holds: the payment deadline of a held ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// In a sale with a draw, for an entrant without a ticket: where their
    /// entry stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<EntryBody>,
}

/// An entrant's standing, in `GET /api/sales/{sale}/me`:
/// `{"draws_at":MS,"result":"pending"}` until the draw is published, then
/// `"lost"` for an entrant the draw passed over (a winner's answer is their
/// ticket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    /// When entries close and the draw is made, Unix ms.
    pub draws_at: u64,
    /// Where the entry stands.
    pub result: EntryResult,
}

/// What came of an entry without a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryResult {
    /// The draw is still to come.
    Pending,
    /// The draw was made, and did not pick this entrant.
    Lost,
}

/// The draw of a sale, in `GET /api/sales/{sale}` and on its event stream:
/// `{"commitment":"<hex>","draws_at":MS,"entrants":N,"seed":null}`, the
/// seed set once the draw is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawBody {
    /// `SHA-256(seed)`, lowercase hex.
    pub commitment: String,
    /// When entries close and the draw is made, Unix ms.
    pub draws_at: u64,
    /// Entrants so far.
    pub entrants: u32,
    /// The seed, lowercase hex, once the draw is published; `null` before.
    pub seed: Option<String>,
}

impl From<&DrawInfo> for DrawBody {
    fn from(info: &DrawInfo) -> Self {
        DrawBody {
            commitment: hex::encode(info.commitment),
            draws_at: info.draws_at,
            entrants: info.entrants,
            seed: info.seed.map(hex::encode),
        }
    }
}

/// A sale as the admin API answers it: the [`SaleInfo`] of the native
/// protocol, and the draw of a sale with one (its window, and its public
/// facts, the commitment among them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSaleBody {
    /// The sale, its fields at the top level.
    #[serde(flatten)]
    pub sale: SaleInfo,
    /// The draw window in milliseconds, for a sale with a draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw_window_ms: Option<u64>,
    /// The draw, for a sale with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<DrawBody>,
}

/// `GET /api/sales/{sale}`: the sale's [`SaleStatus`], and its draw if it
/// has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleBody {
    /// The status, its fields at the top level.
    #[serde(flatten)]
    pub status: SaleStatus,
    /// The draw, for a sale with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<DrawBody>,
}

impl LookupBody {
    /// The body for a sale without holds.
    pub fn ticket(ticket: Option<u32>) -> LookupBody {
        LookupBody {
            ticket,
            status: None,
            expires_at: None,
            draw: None,
        }
    }

    /// The body for a sale with holds.
    pub fn hold(hold: Option<HoldInfo>) -> LookupBody {
        LookupBody {
            ticket: hold.map(|h| h.ticket),
            status: hold.map(|h| HoldStatus::of(h.expires_at)),
            expires_at: hold.and_then(|h| h.expires_at),
            draw: None,
        }
    }

    /// The body for an entrant of a draw who holds no ticket.
    pub fn entry(entry: EntryInfo) -> LookupBody {
        LookupBody {
            draw: Some(EntryBody {
                draws_at: entry.draws_at,
                result: if entry.drawn {
                    EntryResult::Lost
                } else {
                    EntryResult::Pending
                },
            }),
            ..LookupBody::ticket(None)
        }
    }

    /// The body for the core's answer to a `Lookup`; `None` for any other
    /// answer.
    pub fn of(response: &Response) -> Option<LookupBody> {
        match response {
            Response::Lookup { ticket } => Some(LookupBody::ticket(*ticket)),
            Response::Hold(hold) => Some(LookupBody::hold(*hold)),
            Response::Entry(entry) => Some(LookupBody::entry(*entry)),
            _ => None,
        }
    }
}

/// `POST /admin/sales`: a sale to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSaleBody {
    /// The sale id, 1..=64 bytes.
    pub sale: String,
    /// Number of tickets.
    pub capacity: u32,
    /// Opening time, Unix milliseconds; `null` opens it now.
    #[serde(default)]
    pub opens_at: Option<u64>,
    /// The payment window of a hold, seconds; `null` for final wins.
    #[serde(default)]
    pub hold_seconds: Option<u32>,
    /// The draw window, milliseconds: the first tickets go by a draw among
    /// the users who ask within it after opening (docs/FAIRNESS.md);
    /// `null` sells first come, first served.
    #[serde(default)]
    pub draw_window_ms: Option<u64>,
}

/// `POST /admin/sales/{sale}/confirm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// The holder.
    pub user: u64,
    /// The payment provider's reference, 1..=128 bytes.
    pub payment_ref: String,
}

/// `POST /admin/sales/{sale}/release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    /// The holder.
    pub user: u64,
}

/// The answer to a confirm, a cancel or a release:
/// `{"outcome":"confirmed","ticket":7}`, `{"outcome":"expired"}`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldOutcomeBody {
    /// What it came to: the outcome's label.
    pub outcome: String,
    /// The ticket, when the outcome names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<u32>,
}

impl From<ConfirmOutcome> for HoldOutcomeBody {
    fn from(outcome: ConfirmOutcome) -> Self {
        HoldOutcomeBody {
            outcome: outcome.label().into(),
            ticket: outcome.ticket(),
        }
    }
}

impl From<ReleaseOutcome> for HoldOutcomeBody {
    fn from(outcome: ReleaseOutcome) -> Self {
        HoldOutcomeBody {
            outcome: outcome.label().into(),
            ticket: outcome.ticket(),
        }
    }
}

/// One event of `GET /api/sales/{sale}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockEvent {
    /// Tickets left.
    pub remaining: u32,
    /// Tickets sold.
    pub sold: u32,
    /// The sale's phase.
    pub state: SaleState,
    /// The draw of a sale with one: its live entrant count, and its seed
    /// once published (the page then asks `/me` for its result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<DrawBody>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The core can sell (200).
    Ok,
    /// It cannot (503).
    Unavailable,
}

/// The body of `GET /healthz`: `{"status":"ok"}`; on a node of a cluster,
/// with its place in it: `{"status":"ok","role":"leader","leader":1,"term":4}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthBody {
    /// Whether the core can sell (a follower: whether it follows).
    pub status: Health,
    /// A cluster node's role; absent on a single node.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterRole>,
}

/// A node's place in its cluster, as `/healthz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRole {
    /// Whether this node leads.
    pub role: NodeRole,
    /// The leader's node id, while one is known (`null` otherwise).
    pub leader: Option<u64>,
    /// The Raft term this node is in.
    pub term: u64,
}

/// `"leader"` or `"follower"` (a node standing for election, or waiting
/// for a leader, is a follower with `"leader": null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Serves the sales.
    Leader,
    /// Sends clients to the leader.
    Follower,
}

/// `GET /api/config`: what the page needs to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigBody {
    /// Whether `POST /demo/token` exists.
    pub demo: bool,
    /// The sales the page may show.
    pub sales: Vec<String>,
}

/// The body of `POST /demo/token`: a user id, or nothing for a random one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoTokenRequest {
    /// The user to mint a token for.
    pub user: Option<u64>,
}

/// The body of `POST /demo/pay`: the sale whose hold the caller pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoPayRequest {
    /// The sale id.
    pub sale: String,
}

/// The answer of `POST /demo/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoTokenBody {
    /// A bearer token for `user`.
    pub token: String,
    /// The user it names.
    pub user: u64,
    /// When it expires, Unix seconds.
    pub expires_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SaleInfo, SaleStatus};

    #[test]
    fn admin_bodies_are_the_documented_ones() {
        let info = SaleInfo {
            sale: "gig".into(),
            capacity: 5,
            remaining: 2,
            held: 1,
            confirmed: 2,
            sold: 3,
            state: SaleState::Open,
            opens_at: 7,
            hold_seconds: None,
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"sale":"gig","capacity":5,"remaining":2,"held":1,"confirmed":2,"sold":3,"state":"open","opens_at":7,"hold_seconds":null}"#
        );
        let create: CreateSaleBody = serde_json::from_str(
            r#"{"sale":"gig","capacity":200,"opens_at":null,"hold_seconds":600}"#,
        )
        .unwrap();
        assert_eq!(create.hold_seconds, Some(600));
        assert!(
            serde_json::from_str::<CreateSaleBody>(r#"{"sale":"gig","capacity":1,"extra":1}"#)
                .is_err()
        );
        for (outcome, json) in [
            (
                HoldOutcomeBody::from(ConfirmOutcome::Confirmed { ticket: 4 }),
                r#"{"outcome":"confirmed","ticket":4}"#,
            ),
            (
                HoldOutcomeBody::from(ConfirmOutcome::Expired),
                r#"{"outcome":"expired"}"#,
            ),
            (
                HoldOutcomeBody::from(ConfirmOutcome::NoHold),
                r#"{"outcome":"no_hold"}"#,
            ),
            (
                HoldOutcomeBody::from(ReleaseOutcome::Released { ticket: 4 }),
                r#"{"outcome":"released","ticket":4}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&outcome).unwrap(), json);
        }
        assert_eq!(ConfirmOutcome::Expired.http_status(), 410);
        assert_eq!(ConfirmOutcome::NoHold.http_status(), 404);
        assert_eq!(
            ConfirmOutcome::OtherReference { ticket: 1 }.http_status(),
            409
        );
        let me = LookupBody::hold(Some(HoldInfo {
            ticket: 2,
            expires_at: Some(10),
        }));
        assert_eq!(
            serde_json::to_string(&me).unwrap(),
            r#"{"ticket":2,"status":"held","expires_at":10}"#
        );
        assert_eq!(
            serde_json::to_string(&LookupBody::ticket(None)).unwrap(),
            r#"{"ticket":null}"#
        );
    }

    #[test]
    fn reserve_bodies_are_the_documented_ones() {
        let cases = [
            (
                ReserveOutcome::Won { ticket: 7 },
                r#"{"outcome":"won","ticket":7}"#,
            ),
            (
                ReserveOutcome::AlreadyOwned { ticket: 7 },
                r#"{"outcome":"already_owned","ticket":7}"#,
            ),
            (ReserveOutcome::SoldOut, r#"{"outcome":"sold_out"}"#),
            (
                ReserveOutcome::NotOpen { opens_at: 5 },
                r#"{"outcome":"not_open","opens_at":5}"#,
            ),
            (ReserveOutcome::UnknownSale, r#"{"outcome":"unknown_sale"}"#),
            (
                ReserveOutcome::Busy {
                    retry_after_ms: 1000,
                },
                r#"{"outcome":"busy"}"#,
            ),
            (
                ReserveOutcome::Held {
                    ticket: 3,
                    expires_at: 9,
                },
                r#"{"outcome":"held","ticket":3,"expires_at":9}"#,
            ),
            (
                ReserveOutcome::AlreadyHeld {
                    ticket: 3,
                    expires_at: Some(9),
                },
                r#"{"outcome":"already_owned","ticket":3,"status":"held","expires_at":9}"#,
            ),
            (
                ReserveOutcome::AlreadyHeld {
                    ticket: 3,
                    expires_at: None,
                },
                r#"{"outcome":"already_owned","ticket":3,"status":"confirmed"}"#,
            ),
            (ReserveOutcome::Paused, r#"{"outcome":"paused"}"#),
            (ReserveOutcome::Closed, r#"{"outcome":"closed"}"#),
        ];
        for (outcome, json) in cases {
            let body = ReserveBody::from(&outcome);
            assert_eq!(serde_json::to_string(&body).unwrap(), json);
            let back: ReserveBody = serde_json::from_str(json).unwrap();
            assert_eq!(back.outcome(1000), Some(outcome));
        }
    }

    #[test]
    fn a_body_missing_its_ticket_is_no_outcome() {
        let body: ReserveBody = serde_json::from_str(r#"{"outcome":"won"}"#).unwrap();
        assert_eq!(body.outcome(0), None);
    }

    #[test]
    fn status_json_spells_states_in_snake_case() {
        let status = SaleStatus {
            sale: "gig".into(),
            capacity: 2,
            remaining: 0,
            sold: 2,
            state: SaleState::SoldOut,
            opens_at: 9,
        };
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            r#"{"sale":"gig","capacity":2,"remaining":0,"sold":2,"state":"sold_out","opens_at":9}"#
        );
    }

    #[test]
    fn error_codes_serialize_as_their_code() {
        for e in ApiError::ALL {
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.code())
            );
            assert_eq!(
                e.index(),
                ApiError::ALL.iter().position(|x| *x == e).unwrap()
            );
        }
    }
}
