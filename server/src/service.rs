//! What a request does: the glue between the protocol, the reservation core
//! and the write-ahead log.
//!
//! Most answers are known at once (sold out, not open, already owned, a
//! status) and are returned as [`Answer::Now`]: the connection encodes them
//! in the same pass as it decodes the request. Only a win, or a question
//! about a ticket whose record is still on its way to disk, waits; those are
//! [`Answer::Later`] futures, resolved when the log writer reports the record
//! durable. That split is what lets a loser's answer overtake a winner's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flashsale_protocol::{
    ConfirmOutcome, DrawInfo, DrawPage, EntryInfo, ErrorCode, ErrorFrame, HoldInfo, ReleaseOutcome,
    RequestRef, ReserveOutcome, Response, SaleInfo, SaleState as WireState, SaleStatus,
    DRAW_PAGE_LEN, MAX_PAYMENT_REF_LEN, MAX_SALE_ID_LEN,
};
use tokio::sync::oneshot;

use flashsale_core::clock::now_ms;
use flashsale_core::draw::{DrawPhase, Entry};
use flashsale_core::holds::{self, Confirm, HoldStatus, Release};
use flashsale_core::{Holding, Registry, Reservation, Sale, SaleState};
use flashsale_wal::{Durability, Record, Wal};

/// Longest a request waits for a ticket that is on its way to disk before it
/// is answered `Busy`. Each round of the wait is one log batch, so a ticket
/// normally settles within a round or two; only a disk that stalls for this
/// long (or a win whose thread is starved that long before it reaches the
/// log's queue) runs it out. Bounded in time, not in rounds: rounds of an
/// idle log take microseconds, and a count of them ran out while the win
/// was still on its way to the queue.
pub const PENDING_WAIT: Duration = Duration::from_secs(1);
/// Pause before the next round when a round found the ticket still pending,
/// so a ticket not yet in the log's queue is not polled in a tight loop.
const PENDING_PAUSE: Duration = Duration::from_millis(1);
/// The wait suggested when the core could not settle a user's concurrent
/// claim in time ([`Reservation::Busy`]).
const CLAIM_RETRY_MS: u32 = 50;
/// The wait suggested to a request whose ticket stayed pending for
/// [`PENDING_WAIT`].
const PENDING_RETRY_MS: u32 = 10;
/// Longest a request that arrives after a draw's close waits for the draw
/// to be made and published before it is answered `Busy`: the draw is made
/// within a tick of the close, and published one log batch later.
pub const DRAW_WAIT: Duration = Duration::from_secs(2);
/// The wait suggested to a request whose draw was not published within
/// [`DRAW_WAIT`].
const DRAW_RETRY_MS: u32 = 250;

/// An answer to one request.
pub enum Answer {
    /// Known now.
    Now(Response),
    /// Known once the log has made a record durable.
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// Everything a connection needs to answer requests. Shared by every worker
/// thread; nothing in it takes a lock on the reserve path of a sale without
/// holds.
pub struct Service {
    sales: Arc<Registry>,
    wal: Wal,
    durability: Durability,
}

impl Service {
    /// A service over `sales`, logging wins to `wal`.
    pub fn new(sales: Arc<Registry>, wal: Wal, durability: Durability) -> Arc<Self> {
        Arc::new(Service {
            sales,
            wal,
            durability,
        })
    }

    /// Gives up the service for its log, to shut the log down.
    pub fn into_wal(self) -> Wal {
        self.wal
    }

    /// The sales served.
    pub fn sales(&self) -> &Arc<Registry> {
        &self.sales
    }

    /// The log.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Answers `request` at `now_ms` (Unix milliseconds). The request is a
    /// borrowed view of its frame, so answering allocates nothing unless the
    /// answer has to wait (`RequestRef::from(&request)` for an owned one).
    pub fn handle(self: &Arc<Self>, request: RequestRef<'_>, now_ms: u64) -> Answer {
        match request {
            RequestRef::Ping => Answer::Now(Response::Pong),
            RequestRef::Reserve { sale, user } => self.reserve(sale, user, now_ms),
            RequestRef::Status { sale } => Answer::Now(match self.sale(sale) {
                Ok(s) => Response::Status(status(&s, now_ms)),
                Err(e) => Response::Error(e),
            }),
            RequestRef::Lookup { sale, user } => match self.sale(sale) {
                Ok(s) => self.lookup(&s, user, now_ms),
                Err(e) => Answer::Now(Response::Error(e)),
            },
            RequestRef::Confirm {
                sale,
                user,
                payment_ref,
            } => self.confirm(sale, user, payment_ref, now_ms),
            RequestRef::Cancel { sale, user } => self.release(sale, user, now_ms, Sale::cancel),
            RequestRef::Release { sale, user } => self.release(sale, user, now_ms, Sale::release),
            RequestRef::ListSales => Answer::Now(Response::Sales(
                self.sales.load().iter().map(|s| info(s, now_ms)).collect(),
            )),
            RequestRef::Draw { sale } => Answer::Now(match self.sale(sale) {
                Ok(s) => Response::Draw(draw_info(&s).map(Box::new)),
                Err(e) => Response::Error(e),
            }),
            RequestRef::DrawPage {
                sale,
                winners,
                from,
            } => Answer::Now(match self.sale(sale) {
                Ok(s) => Response::DrawPage(draw_page(&s, winners, from)),
                Err(e) => Response::Error(e),
            }),
        }
    }

    fn sale(&self, id: &str) -> Result<Arc<Sale>, ErrorFrame> {
        if id.len() > MAX_SALE_ID_LEN {
            return Err(too_long_sale_id());
        }
        self.sales
            .load()
            .get(id)
            .cloned()
            .ok_or_else(|| ErrorFrame::new(ErrorCode::UNKNOWN_SALE, format!("no sale {id:?}")))
    }

    fn reserve(self: &Arc<Self>, id: &str, user: u64, now_ms: u64) -> Answer {
        // Not through `sale()`: a flood of reservations for a wrong sale id
        // must not format an error message each.
        if id.len() > MAX_SALE_ID_LEN {
            return Answer::Now(Response::Error(too_long_sale_id()));
        }
        let sales = self.sales.load();
        let Some(sale) = sales.get(id) else {
            return Answer::Now(Response::Reserve(ReserveOutcome::UnknownSale));
        };
        if !self.wal.is_healthy() {
            // Nothing new can be made durable; but a user who already holds
            // a durable ticket is told so, not that their purchase failed.
            let known = match sale.hold_of(user, now_ms) {
                Ok(Some(hold)) if hold.durable => Some(already_held(hold)),
                Ok(_) => None,
                Err(_) => match sale.lookup(user) {
                    Holding::Durable { ticket } => Some(ReserveOutcome::AlreadyOwned { ticket }),
                    _ => None,
                },
            };
            return Answer::Now(match known {
                Some(outcome) => Response::Reserve(outcome),
                None => log_refuses(),
            });
        }
        let outcome = match sale.reserve(user, now_ms) {
            Reservation::Won { ticket } => return self.log_win(sale, user, ticket, now_ms),
            Reservation::AlreadyOwned {
                ticket,
                durable: true,
            } => ReserveOutcome::AlreadyOwned { ticket },
            Reservation::AlreadyOwned { durable: false, .. } => {
                return self.after_durable(sale, user, Question::Reserve)
            }
            Reservation::SoldOut => ReserveOutcome::SoldOut,
            Reservation::NotOpen { opens_at_ms } => ReserveOutcome::NotOpen {
                opens_at: opens_at_ms,
            },
            Reservation::Busy => ReserveOutcome::Busy {
                retry_after_ms: CLAIM_RETRY_MS,
            },
            Reservation::Paused => ReserveOutcome::Paused,
            Reservation::Closed => ReserveOutcome::Closed,
            // The hold is in the log's queue: answer once it is on disk.
            Reservation::Held {
                ticket,
                expires_at_ms,
            } => {
                return self.after_barrier(Response::Reserve(ReserveOutcome::Held {
                    ticket,
                    expires_at: expires_at_ms,
                }))
            }
            Reservation::AlreadyHeld(hold) if hold.durable => already_held(hold),
            Reservation::AlreadyHeld(hold) => {
                return self.after_barrier(Response::Reserve(already_held(hold)))
            }
            // The entry is in the log's queue, or on disk.
            Reservation::Entered {
                draws_at_ms,
                durable,
            } => {
                let entered = ReserveOutcome::Entered {
                    draws_at: draws_at_ms,
                };
                if !durable {
                    return self.after_barrier(Response::Reserve(entered));
                }
                entered
            }
            Reservation::Drawing { .. } => {
                return self.after_draw(sale, user, Question::Reserve);
            }
        };
        Answer::Now(Response::Reserve(outcome))
    }

    /// A payment confirmation, answered once it is durable.
    fn confirm(&self, id: &str, user: u64, payment_ref: &str, now_ms: u64) -> Answer {
        if payment_ref.is_empty() || payment_ref.len() > MAX_PAYMENT_REF_LEN {
            return Answer::Now(Response::Error(ErrorFrame::new(
                ErrorCode::INVALID_REQUEST,
                format!("payment_ref must be 1..={MAX_PAYMENT_REF_LEN} bytes"),
            )));
        }
        let sale = match self.sale(id) {
            Ok(sale) => sale,
            Err(e) if e.code == ErrorCode::UNKNOWN_SALE => {
                return Answer::Now(Response::Confirm(ConfirmOutcome::UnknownSale))
            }
            Err(e) => return Answer::Now(Response::Error(e)),
        };
        let outcome = match sale.confirm(user, payment_ref, now_ms) {
            Err(_) => ConfirmOutcome::NoHolds,
            Ok(Confirm::Confirmed { ticket, durable }) => {
                let confirmed = Response::Confirm(ConfirmOutcome::Confirmed { ticket });
                if durable {
                    return Answer::Now(confirmed);
                }
                return self.after_barrier(confirmed);
            }
            // A refusal rests on a change that may still be on its way to
            // the log (the cancel, release or expiry that ended the hold, or
            // the other payment): answered once it is durable, so that a
            // crash cannot bring back a hold its payer was told is gone.
            Ok(Confirm::OtherReference { ticket }) => ConfirmOutcome::OtherReference { ticket },
            Ok(Confirm::Expired) => ConfirmOutcome::Expired,
            Ok(Confirm::NoHold) => ConfirmOutcome::NoHold,
        };
        self.after_barrier(Response::Confirm(outcome))
    }

    /// A buyer's cancel or an operator's release, answered once durable.
    fn release(
        &self,
        id: &str,
        user: u64,
        now_ms: u64,
        op: fn(&Sale, u64, u64) -> Result<Release, flashsale_core::HoldError>,
    ) -> Answer {
        let sale = match self.sale(id) {
            Ok(sale) => sale,
            Err(e) if e.code == ErrorCode::UNKNOWN_SALE => {
                return Answer::Now(Response::Release(ReleaseOutcome::UnknownSale))
            }
            Err(e) => return Answer::Now(Response::Error(e)),
        };
        let outcome = match op(&sale, user, now_ms) {
            Err(_) => return Answer::Now(Response::Release(ReleaseOutcome::NoHolds)),
            Ok(Release::Released { ticket }) => ReleaseOutcome::Released { ticket },
            // Like a confirm's refusals: the payment or the end of the hold
            // it rests on is durable before the buyer hears of it.
            Ok(Release::Confirmed { ticket }) => ReleaseOutcome::Confirmed { ticket },
            Ok(Release::NoHold) => ReleaseOutcome::NoHold,
        };
        self.after_barrier(Response::Release(outcome))
    }

    /// `answer` once everything queued on the log so far is durable: the
    /// change it reports was queued before this call, by the core's journal.
    fn after_barrier(&self, answer: Response) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.wal.barrier(tx);
        Answer::Later(Box::pin(async move {
            match rx.await {
                Ok(Ok(())) => answer,
                Ok(Err(e)) => log_unavailable(&e.to_string()),
                Err(_) => log_unavailable("the log writer stopped"),
            }
        }))
    }

    /// Appends a win to the log; the answer is `Won` once it is durable.
    fn log_win(&self, sale: &Arc<Sale>, user: u64, ticket: u32, now_ms: u64) -> Answer {
        let record = Record::TicketSold {
            sale: sale.spec().id.clone(),
            ticket,
            user,
            at_ms: now_ms,
        };
        let won = Response::Reserve(ReserveOutcome::Won { ticket });
        if self.durability == Durability::None {
            sale.mark_durable(user);
            self.wal.append(record, None);
            return Answer::Now(won);
        }
        let (tx, rx) = oneshot::channel();
        self.wal.append(record, Some(tx));
        Answer::Later(Box::pin(async move {
            match rx.await {
                Ok(Ok(())) => won,
                Ok(Err(e)) => log_unavailable(&e.to_string()),
                Err(_) => log_unavailable("the log writer stopped"),
            }
        }))
    }

    fn lookup(self: &Arc<Self>, sale: &Arc<Sale>, user: u64, now_ms: u64) -> Answer {
        if let Some(entry) = sale.entry_of(user) {
            return self.entrant_lookup(sale, user, entry, now_ms);
        }
        self.holder_lookup(sale, user, now_ms)
    }

    /// A lookup of an entrant of a sale's draw: their entry until the draw
    /// is published, then their ticket, or that the draw passed them over.
    fn entrant_lookup(
        self: &Arc<Self>,
        sale: &Arc<Sale>,
        user: u64,
        entry: Entry,
        now_ms: u64,
    ) -> Answer {
        let draws_at = sale.draws_at_ms().unwrap_or_default();
        let waiting = Response::Entry(EntryInfo {
            draws_at,
            drawn: false,
        });
        match entry.phase {
            DrawPhase::Collecting if now_ms >= draws_at => {
                self.after_draw(sale, user, Question::Lookup)
            }
            DrawPhase::Collecting if entry.durable => Answer::Now(waiting),
            DrawPhase::Collecting => self.after_barrier(waiting),
            DrawPhase::Drawn => self.after_draw(sale, user, Question::Lookup),
            DrawPhase::Published => {
                let won = sale
                    .draw_result()
                    .is_some_and(|result| result.winners.contains(&user));
                if won {
                    return self.holder_lookup(sale, user, now_ms);
                }
                Answer::Now(Response::Entry(EntryInfo {
                    draws_at,
                    drawn: true,
                }))
            }
        }
    }

    /// Waits until `sale`'s draw is published, then asks `question` again:
    /// nothing about a draw is answered before it is durable. Bounded by
    /// [`DRAW_WAIT`]; a draw still unpublished then is answered busy.
    fn after_draw(self: &Arc<Self>, sale: &Arc<Sale>, user: u64, question: Question) -> Answer {
        let this = Arc::clone(self);
        let sale = Arc::clone(sale);
        let published = async move {
            while sale.draw_phase() != Some(DrawPhase::Published) {
                let (tx, rx) = oneshot::channel();
                this.wal.barrier(tx);
                match rx.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return log_unavailable(&e.to_string()),
                    Err(_) => return log_unavailable("the log writer stopped"),
                }
                if sale.draw_phase() != Some(DrawPhase::Published) {
                    tokio::time::sleep(PENDING_PAUSE).await;
                }
            }
            let answer = match question {
                Question::Reserve => this.reserve(&sale.spec().id, user, now_ms()),
                Question::Lookup => this.lookup(&sale, user, now_ms()),
            };
            match answer {
                Answer::Now(response) => response,
                Answer::Later(later) => later.await,
            }
        };
        Answer::Later(Box::pin(async move {
            tokio::time::timeout(DRAW_WAIT, published)
                .await
                .unwrap_or(question.busy(DRAW_RETRY_MS))
        }))
    }

    /// A lookup of what `user` holds, outside any draw.
    fn holder_lookup(self: &Arc<Self>, sale: &Arc<Sale>, user: u64, now_ms: u64) -> Answer {
        if let Ok(hold) = sale.hold_of(user, now_ms) {
            let answer = Response::Hold(hold.map(hold_info));
            return match hold {
                Some(hold) if !hold.durable => self.after_barrier(answer),
                _ => Answer::Now(answer),
            };
        }
        match sale.lookup(user) {
            Holding::Durable { ticket } => Answer::Now(Response::Lookup {
                ticket: Some(ticket),
            }),
            Holding::None => Answer::Now(Response::Lookup { ticket: None }),
            Holding::Pending { .. } => self.after_durable(sale, user, Question::Lookup),
        }
    }

    /// Waits until `user`'s ticket is durable, then answers `question`.
    ///
    /// The ticket may be visible in the buyer set a moment before its record
    /// has even reached the log's queue (its request's thread may be
    /// preempted in between), so one barrier is not always enough: re-check
    /// after each, pausing between rounds, for at most [`PENDING_WAIT`]. A
    /// ticket still not durable then is answered busy, in the request's own
    /// terms.
    fn after_durable(self: &Arc<Self>, sale: &Arc<Sale>, user: u64, question: Question) -> Answer {
        let this = Arc::clone(self);
        let sale = Arc::clone(sale);
        let settled = async move {
            loop {
                let (tx, rx) = oneshot::channel();
                this.wal.barrier(tx);
                match rx.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return pending_unknown(&e.to_string()),
                    Err(_) => return pending_unknown("the log writer stopped"),
                }
                match sale.lookup(user) {
                    Holding::Durable { ticket } => return question.answer(Some(ticket)),
                    Holding::None => return question.answer(None),
                    Holding::Pending { .. } => tokio::time::sleep(PENDING_PAUSE).await,
                }
            }
        };
        Answer::Later(Box::pin(async move {
            tokio::time::timeout(PENDING_WAIT, settled)
                .await
                .unwrap_or(question.busy(PENDING_RETRY_MS))
        }))
    }
}

/// A question about a ticket that was still on its way to disk.
#[derive(Debug, Clone, Copy)]
enum Question {
    /// A reservation of a user whose ticket was pending.
    Reserve,
    /// A lookup of a pending ticket.
    Lookup,
}

impl Question {
    /// The answer once the ticket is durable (`Some`), or known not to be
    /// the user's after all (`None`).
    fn answer(self, ticket: Option<u32>) -> Response {
        match (self, ticket) {
            (Question::Reserve, Some(ticket)) => {
                Response::Reserve(ReserveOutcome::AlreadyOwned { ticket })
            }
            (Question::Reserve, None) => Response::Reserve(ReserveOutcome::SoldOut),
            (Question::Lookup, ticket) => Response::Lookup { ticket },
        }
    }

    /// The answer when the ticket stayed pending: a reservation is answered
    /// with its own `Busy` outcome, any other request with `Response::Busy`.
    fn busy(self, retry_after_ms: u32) -> Response {
        match self {
            Question::Reserve => Response::Reserve(ReserveOutcome::Busy { retry_after_ms }),
            Question::Lookup => Response::Busy { retry_after_ms },
        }
    }
}

fn too_long_sale_id() -> ErrorFrame {
    ErrorFrame::new(
        ErrorCode::INVALID_REQUEST,
        format!("sale id longer than {MAX_SALE_ID_LEN} bytes"),
    )
}

/// The answer to a change whose record was sent to the log and not made
/// durable: it may still be on disk.
fn log_unavailable(why: &str) -> Response {
    Response::Error(ErrorFrame::new(
        ErrorCode::LOG_UNAVAILABLE,
        format!(
            "the change could not be made durable ({why}); it may still be recorded: \
             once the server restarts on a working log, Lookup tells"
        ),
    ))
}

/// The answer, to a retry or a `Lookup`, when the log failed while the
/// user's ticket was on its way to disk. The reservation's own record
/// failed earlier and was answered then; no request can learn more than
/// that its fate is unknown until a restart, so this does not send the
/// client back to `Lookup`.
fn pending_unknown(why: &str) -> Response {
    Response::Error(ErrorFrame::new(
        ErrorCode::LOG_UNAVAILABLE,
        format!(
            "this user's ticket was on its way to disk when the log failed ({why}); \
             whether it was recorded is known only once the server restarts on a working log"
        ),
    ))
}

/// The answer to a reservation refused because the log had already failed:
/// nothing was attempted.
fn log_refuses() -> Response {
    Response::Error(ErrorFrame::new(
        ErrorCode::LOG_UNAVAILABLE,
        "the log has failed and records nothing more; nothing was bought",
    ))
}

/// The wire answer for a user's existing ticket in a sale with holds.
fn already_held(hold: holds::Hold) -> ReserveOutcome {
    let info = hold_info(hold);
    ReserveOutcome::AlreadyHeld {
        ticket: info.ticket,
        expires_at: info.expires_at,
    }
}

fn hold_info(hold: holds::Hold) -> HoldInfo {
    HoldInfo {
        ticket: hold.ticket,
        expires_at: match hold.status {
            HoldStatus::Held { expires_at_ms } => Some(expires_at_ms),
            HoldStatus::Confirmed => None,
        },
    }
}

fn wire_state(state: SaleState) -> WireState {
    match state {
        SaleState::Upcoming => WireState::Upcoming,
        SaleState::Open => WireState::Open,
        SaleState::SoldOut => WireState::SoldOut,
        SaleState::Paused => WireState::Paused,
        SaleState::Closed => WireState::Closed,
    }
}

/// The wire status of `sale` at `now_ms`.
pub fn status(sale: &Sale, now_ms: u64) -> SaleStatus {
    let s = sale.status(now_ms);
    SaleStatus {
        sale: sale.spec().id.clone(),
        capacity: s.capacity,
        remaining: s.remaining,
        sold: s.sold,
        state: wire_state(s.state),
        opens_at: s.opens_at_ms,
    }
}

/// The public facts of `sale`'s draw, if it has one.
pub fn draw_info(sale: &Sale) -> Option<DrawInfo> {
    let status = sale.draw_status()?;
    let winners = sale
        .draw_result()
        .map_or(0, |r| u32::try_from(r.winners.len()).unwrap_or(u32::MAX));
    Some(DrawInfo {
        commitment: status.commitment,
        draws_at: status.draws_at_ms,
        entrants: status.entrants,
        winners,
        capacity: sale.spec().capacity,
        seed: status.seed,
    })
}

/// One page of `sale`'s published draw; empty before it is published.
pub fn draw_page(sale: &Sale, winners: bool, from: u32) -> DrawPage {
    let Some(result) = sale.draw_result() else {
        return DrawPage {
            total: 0,
            users: Vec::new(),
        };
    };
    let list = if winners {
        &result.winners
    } else {
        &result.entrants
    };
    let from = (from as usize).min(list.len());
    let to = from.saturating_add(DRAW_PAGE_LEN as usize).min(list.len());
    DrawPage {
        total: u32::try_from(list.len()).unwrap_or(u32::MAX),
        users: list[from..to].to_vec(),
    }
}

/// Everything about `sale` at `now_ms`, as [`Response::Sales`] lists it.
pub fn info(sale: &Sale, now_ms: u64) -> SaleInfo {
    let s = sale.status(now_ms);
    SaleInfo {
        sale: sale.spec().id.clone(),
        capacity: s.capacity,
        remaining: s.remaining,
        held: s.held,
        confirmed: s.confirmed,
        sold: s.sold,
        state: wire_state(s.state),
        opens_at: s.opens_at_ms,
        hold_seconds: sale
            .spec()
            .hold_ms
            .map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX)),
    }
}
