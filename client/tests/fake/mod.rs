//! A scripted stand-in for the flashsale server, speaking the real codec.
//!
//! Reservations win the ticket numbered after the user, so every answer is
//! distinguishable. Answers to even request ids are delayed, so answers leave
//! out of order. A few reserved user ids script misbehaviour.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flashsale_protocol::handshake::{accept, check_hello};
use flashsale_protocol::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// A reservation for this user is never answered.
pub const NEVER: u64 = 1 << 40;
/// A reservation for this user makes the server drop the connection.
pub const DROP: u64 = NEVER + 1;
/// A reservation for this user is answered with bytes that do not decode.
pub const GARBAGE: u64 = NEVER + 2;
/// A reservation for this user is answered with a connection-level error.
pub const KICK: u64 = NEVER + 3;

/// A lookup for this user is answered `Busy` (a ticket still being written).
pub const BUSY: u64 = NEVER + 4;

/// The sale that does not exist.
pub const UNKNOWN: &str = "nope";

#[derive(Debug, Clone)]
pub struct Options {
    pub api_key: Option<String>,
    pub max_in_flight: u32,
    /// How long answers to even request ids wait.
    pub delay: Duration,
    /// This many first connections are refused with `OVERLOADED`.
    pub refuse_first: usize,
    /// A node of a cluster that does not lead: every request is answered
    /// `NOT_LEADER` with this message (the leader's address, or empty).
    pub not_leader: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api_key: None,
            max_in_flight: 1024,
            delay: Duration::from_millis(5),
            refuse_first: 0,
            not_leader: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted, handshake or not.
    pub connections: AtomicUsize,
    /// Requests received, per welcomed connection.
    pub requests: Mutex<Vec<usize>>,
    /// The most requests ever unanswered at once on one connection.
    pub max_outstanding: AtomicUsize,
    /// Delayed answers written to their connection.
    pub delayed_sent: AtomicUsize,
    /// While set, every new connection is refused with `OVERLOADED`.
    pub refusing: AtomicBool,
}

impl Stats {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<usize> {
        self.requests.lock().unwrap().clone()
    }

    pub fn total_requests(&self) -> usize {
        self.requests().iter().sum()
    }

    /// Waits (at most 5 s) until the server has received `n` requests.
    pub async fn wait_for_requests(&self, n: usize) {
        self.wait_until(|s| s.total_requests() >= n).await;
    }

    /// Waits (at most 5 s) until the server has written `n` delayed answers.
    pub async fn wait_for_delayed_answers(&self, n: usize) {
        self.wait_until(|s| s.delayed_sent.load(Ordering::SeqCst) >= n)
            .await;
    }

    async fn wait_until(&self, done: impl Fn(&Stats) -> bool) {
        for _ in 0..500 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the fake server did not get there in 5 s: {self:?}");
    }
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(options: Options) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(accept_loop(listener, options, Arc::clone(&stats)));
        FakeServer { addr, stats, task }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

async fn accept_loop(listener: TcpListener, options: Options, stats: Arc<Stats>) {
    let mut connections = Vec::new();
    while let Ok((stream, _)) = listener.accept().await {
        let index = stats.connections.fetch_add(1, Ordering::SeqCst);
        connections.push(AbortOnDrop(tokio::spawn(serve(
            stream,
            index,
            options.clone(),
            Arc::clone(&stats),
        ))));
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Out {
    Frame(ServerFrame),
}

async fn serve(stream: TcpStream, index: usize, options: Options, stats: Arc<Stats>) {
    let mut framed = Framed::new(stream, ServerCodec::default());
    // Asked once the `Hello` is in: `refusing` as it is at that moment.
    let judge = |hello: &Hello| {
        if index < options.refuse_first || stats.refusing.load(Ordering::SeqCst) {
            return Err(ErrorFrame::new(ErrorCode::OVERLOADED, "try later"));
        }
        check_hello(hello, options.api_key.as_deref())
    };
    if accept(&mut framed, options.max_in_flight, judge)
        .await
        .is_err()
    {
        return;
    }
    let slot = {
        let mut requests = stats.requests.lock().unwrap();
        requests.push(0);
        requests.len() - 1
    };

    let (delayed_tx, mut delayed_rx) = mpsc::unbounded_channel::<Out>();
    let mut outstanding = 0usize;
    loop {
        tokio::select! {
            frame = framed.next() => {
                let Some(Ok(ClientFrame::Request(RequestFrame { id, request }))) = frame else {
                    return;
                };
                stats.requests.lock().unwrap()[slot] += 1;
                outstanding += 1;
                stats.max_outstanding.fetch_max(outstanding, Ordering::SeqCst);
                let response = match request {
                    Request::Reserve { user: NEVER, .. } => continue,
                    Request::Reserve { user: DROP, .. } => return,
                    Request::Reserve { user: GARBAGE, .. } => {
                        let _ = framed.get_mut().write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
                        continue;
                    }
                    Request::Reserve { user: KICK, .. } => {
                        let kick = ErrorFrame::new(ErrorCode::IDLE_TIMEOUT, "idle");
                        let _ = framed.send(ServerFrame::Error(kick)).await;
                        return;
                    }
                    _ if options.not_leader.is_some() => Response::Error(ErrorFrame::new(
                        ErrorCode::NOT_LEADER,
                        options.not_leader.clone().unwrap_or_default(),
                    )),
                    request => answer(request),
                };
                let frame = ServerFrame::Response(ResponseFrame { id, response });
                if id % 2 == 0 {
                    let tx = delayed_tx.clone();
                    let delay = options.delay;
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Out::Frame(frame));
                    });
                } else {
                    outstanding -= 1;
                    if framed.send(frame).await.is_err() {
                        return;
                    }
                }
            }
            Some(Out::Frame(frame)) = delayed_rx.recv() => {
                outstanding -= 1;
                if framed.send(frame).await.is_err() {
                    return;
                }
                stats.delayed_sent.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

fn answer(request: Request) -> Response {
    match request {
        Request::Ping => Response::Pong,
        Request::Reserve { user, .. } => Response::Reserve(ReserveOutcome::Won {
            ticket: user as u32,
        }),
        Request::Status { sale } if sale == UNKNOWN => {
            Response::Error(ErrorFrame::new(ErrorCode::UNKNOWN_SALE, "no such sale"))
        }
        Request::Status { sale } => Response::Status(SaleStatus {
            sale,
            capacity: 10,
            remaining: 4,
            sold: 6,
            state: SaleState::Open,
            opens_at: 0,
        }),
        Request::Lookup { user: BUSY, .. } => Response::Busy { retry_after_ms: 25 },
        Request::Lookup { sale, user } if sale == HELD => Response::Hold(Some(HoldInfo {
            ticket: user as u32,
            expires_at: Some(HELD_UNTIL),
        })),
        Request::Lookup { user, .. } => Response::Lookup {
            ticket: Some(user as u32),
        },
        Request::Confirm { user, .. } => Response::Confirm(ConfirmOutcome::Confirmed {
            ticket: user as u32,
        }),
        Request::Cancel { user, .. } => Response::Release(ReleaseOutcome::Released {
            ticket: user as u32,
        }),
        Request::Release { .. } => Response::Release(ReleaseOutcome::NoHold),
        Request::ListSales => Response::Sales(vec![SaleInfo {
            sale: HELD.into(),
            capacity: 5,
            remaining: 1,
            held: 2,
            confirmed: 2,
            sold: 4,
            state: SaleState::Open,
            opens_at: 0,
            hold_seconds: Some(60),
        }]),
        Request::Draw { .. } => Response::Draw(None),
        Request::DrawPage { .. } => Response::DrawPage(DrawPage {
            total: 0,
            users: Vec::new(),
        }),
    }
}

/// A sale with holds: lookups answer with a hold until [`HELD_UNTIL`].
pub const HELD: &str = "held";
/// The deadline of every hold of [`HELD`].
pub const HELD_UNTIL: u64 = 99;
