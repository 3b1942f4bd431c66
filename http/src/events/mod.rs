//! `GET /api/sales/{sale}/events`: the stock of a sale, pushed to every open
//! page as Server-Sent Events.
//!
//! Thousands of pages must not mean thousands of pollers. Per sale, one
//! task asks the core for the status every [`POLL_INTERVAL`] and publishes
//! it to a `watch` channel only when it changed; each stream sends the
//! latest value, then waits at least [`MIN_INTERVAL`] before looking again,
//! so a page gets at most a few updates a second whatever the churn, and
//! intermediate values are skipped rather than queued. A poller stops once
//! its sale has no subscriber left; the next page starts a new one.
//!
//! A stream holds a connection for as long as it lasts, and its keep-alive
//! comments keep the idle timeout away, so streams are bounded apart from
//! requests: at most `--http-max-streams` are open at once (past it, 503
//! and `Retry-After`, the page polls instead), and each ends, cleanly,
//! after `--http-stream-lifetime`, less a random part of up to a quarter
//! so that streams opened together do not all come back together. The
//! first event carries a `retry:` hint; `EventSource` reconnects by itself
//! that long after the end.
//!
//! An open stream is written by the connection's task once hyper has sent
//! its head and first event ([`detached`]), so that it holds no hyper
//! buffers while it lasts.
//!
//! A sale with a draw also carries its draw on every event: the live count
//! of entrants while entries are open, then the seed once the draw is
//! published, which tells every open page to ask for its own result. The
//! poller asks for the draw only while it can still change.

mod detached;

pub(crate) use detached::{write_rest, Connection, Ended, Parked};

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Version};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use flashsale_metrics::{self as metrics, Protocol, ShedReason};
use flashsale_protocol::json::{DrawBody, StockEvent};
use flashsale_protocol::{DrawInfo, SaleStatus};
use futures_util::stream::{self, Stream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AppState;

/// How often a sale's poller asks the core.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The least time between two events on one stream.
const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The `retry:` hint: how long `EventSource` waits before reconnecting
/// after a stream ends.
const RECONNECT: Duration = Duration::from_secs(2);
/// What a page over the stream bound is told to wait, in milliseconds.
const STREAMS_FULL_RETRY_MS: u32 = 5000;

/// What a page is told.
type Stock = StockEvent;

fn stock(snapshot: &Snapshot) -> Stock {
    let s = &snapshot.status;
    StockEvent {
        remaining: s.remaining,
        sold: s.sold,
        state: s.state,
        draw: snapshot.draw.as_ref().map(DrawBody::from),
    }
}

/// A sale's status (and draw) as last read from the core, and when. Streams
/// are woken only when its [`Stock`] changes; the time is renewed at every
/// poll, so the hub doubles as a cache of the status ([`recent`]).
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// The sale's status.
    pub(crate) status: SaleStatus,
    /// Its draw, for a sale with one.
    pub(crate) draw: Option<DrawInfo>,
    at: Instant,
}

impl Snapshot {
    pub(crate) fn now(status: SaleStatus, draw: Option<DrawInfo>) -> Self {
        Snapshot {
            status,
            draw,
            at: Instant::now(),
        }
    }
}

/// Whether a draw read from the core can still change: entries are open or
/// the draw is not yet published.
fn draw_may_change(draw: Option<&DrawInfo>) -> bool {
    draw.is_some_and(|d| d.seed.is_none())
}

/// The pollers, one per sale with subscribers.
///
/// A std `Mutex`: it is held only to look up or insert a channel, never
/// across an await, and the same lock lets a poller check "no subscriber
/// left" and remove itself without racing a new subscriber.
#[derive(Default)]
pub struct Hub {
    sales: Mutex<HashMap<String, Arc<watch::Sender<Snapshot>>>>,
}

/// `sale`'s status and draw from its poller, if one runs and read them at
/// most `max_age` ago. Always `None` for a zero `max_age`.
pub(crate) fn recent(state: &AppState, sale: &str, max_age: Duration) -> Option<Snapshot> {
    if max_age.is_zero() {
        return None;
    }
    let sales = state.events.sales.lock().unwrap_or_else(|e| e.into_inner());
    let snapshot = sales.get(sale)?.borrow();
    (snapshot.at.elapsed() <= max_age).then(|| snapshot.clone())
}

/// `sale`'s status and draw, read from the core now (both questions at
/// once).
pub(crate) async fn read(
    state: &AppState,
    sale: &str,
) -> Result<Snapshot, super::backend::BackendError> {
    let (status, draw) = tokio::join!(state.backend.status(sale), state.backend.draw(sale));
    Ok(Snapshot::now(status?, draw?))
}

/// A receiver of `sale`'s status, starting its poller if none runs.
/// `current` is a status just read, to seed a new channel.
fn subscribe(state: &AppState, sale: &str, current: Snapshot) -> watch::Receiver<Snapshot> {
    let mut sales = state.events.sales.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = sales.get(sale) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel(current);
    let tx = Arc::new(tx);
    sales.insert(sale.to_owned(), Arc::clone(&tx));
    tokio::spawn(poll(sale.to_owned(), tx, Arc::clone(state)));
    rx
}

/// Publishes `sale`'s stock while anyone listens.
async fn poll(sale: String, tx: Arc<watch::Sender<Snapshot>>, state: AppState) {
    let shutdown = state.shutdown.clone();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        {
            let mut sales = state.events.sales.lock().unwrap_or_else(|e| e.into_inner());
            if tx.receiver_count() == 0 {
                sales.remove(&sale);
                return;
            }
        }
        let last_draw = tx.borrow().draw;
        let read = if draw_may_change(last_draw.as_ref()) {
            read(&state, &sale).await
        } else {
            state
                .backend
                .status(&sale)
                .await
                .map(|status| Snapshot::now(status, last_draw))
        };
        match read {
            Ok(snapshot) => {
                tx.send_if_modified(|old| {
                    let changed = stock(old) != stock(&snapshot);
                    *old = snapshot;
                    changed
                });
            }
            Err(e) => tracing::debug!(%sale, ?e, "cannot poll the sale's status"),
        }
    }
    let mut sales = state.events.sales.lock().unwrap_or_else(|e| e.into_inner());
    sales.remove(&sale);
}

/// The event stream of one sale; 404 for an unknown sale, 503 past the
/// bound on open streams. No token is needed (`EventSource` cannot send
/// one), but a stream opened with a valid one counts against its user's
/// rate limit. Written on by the connection's task ([`detached`]) when the
/// front put its [`Connection`] on the request and hyper would answer in
/// chunks; by hyper otherwise.
pub async fn stream(
    State(state): State<AppState>,
    Path(sale): Path<String>,
    version: Version,
    connection: Option<Extension<Connection>>,
    headers: HeaderMap,
) -> Response {
    if let Some(limited) = super::auth::User::over_rate(&headers, &state) {
        return limited;
    }
    if let Some(refused) = super::api::invalid_sale(&sale) {
        return refused;
    }
    let Ok(permit) = Arc::clone(&state.streams).try_acquire_owned() else {
        metrics::shed(Protocol::Http, ShedReason::Streams);
        return super::api::busy(STREAMS_FULL_RETRY_MS);
    };
    let current = match recent(&state, &sale, state.status_max_age) {
        Some(snapshot) => snapshot,
        None => match read(&state, &sale).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                return super::api::status_error(&e);
            }
        },
    };
    let rx = subscribe(&state, &sale, current);
    let open = Open {
        rx,
        ends_at: Instant::now() + jittered(state.stream_lifetime),
        _permit: permit,
    };
    let mut response = match connection.filter(|_| detached::can_detach(version, &headers)) {
        Some(Extension(connection)) => {
            let body = axum::body::Body::new(detached::Detaching::new(open, connection));
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            response
        }
        None => Sse::new(events(open, state.shutdown.clone()))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response(),
    };
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The latest stock, as the `data` of one event.
fn latest(open: &mut Open) -> String {
    serde_json::to_string(&stock(&open.rx.borrow_and_update())).unwrap_or_default()
}

/// An open stream's state: what it forwards, when it ends, and its place
/// under the bound, given back when the stream is dropped (it ends, or the
/// client goes away).
struct Open {
    rx: watch::Receiver<Snapshot>,
    ends_at: Instant,
    _permit: OwnedSemaphorePermit,
}

/// `lifetime`, less a random part of up to a quarter of it.
fn jittered(lifetime: Duration) -> Duration {
    let fraction = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
    lifetime - lifetime.div_f64(4.0).mul_f64(fraction)
}

fn events(
    open: Open,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((open, true), move |(mut open, first)| {
        let shutdown = shutdown.clone();
        async move {
            let mut event = Event::default();
            if first {
                event = event.retry(RECONNECT);
            } else {
                let next = async {
                    tokio::time::sleep(MIN_INTERVAL).await;
                    open.rx.changed().await
                };
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep_until(open.ends_at) => return None,
                    changed = next => changed.ok()?,
                }
            }
            let data = latest(&mut open);
            Some((Ok(event.data(data)), (open, false)))
        }
    })
}
