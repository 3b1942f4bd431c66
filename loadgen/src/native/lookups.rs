//! Many users' own results, asked over the native protocol as fast as the
//! server answers them: `Lookup` frames patched from one [`Template`],
//! pipelined up to each connection's window over several connections, and
//! matched to their users by request id (the user id itself).
//!
//! A draw run checks every entrant's result as soon as the draw is
//! published, and the time that takes is a figure of the run. The client
//! library's `Pool` would spend a task, a channel and an allocation per
//! lookup: at 100,000 lookups on the two cores the server also uses, that
//! is the checker's time, not the server's, so this path is built like the
//! rush's ([`super::NativeTransport`]).
//!
//! A `Busy` answer (a ticket still on its way to disk) is asked again after
//! the pause it names, at most [`BUSY_RETRIES`] times. Whatever has no
//! answer when the connection is lost or the deadline passes is left out
//! of the result, and counts against that user's check.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use flashsale_protocol::json::LookupBody;
use flashsale_protocol::Response;
use tokio::time::Instant;

use super::{open, Template, LOOKUP};
use crate::config::Target;
use crate::transport::ConnectError;

/// Times a `busy` lookup is asked again.
pub const BUSY_RETRIES: u32 = 50;
/// The most lookups in flight on one connection, whatever window the
/// server allows: enough to keep it busy, few enough to keep the buffers
/// small.
const MAX_IN_FLIGHT: usize = 1024;
/// The shortest and longest pause before asking a `busy` lookup again.
const PAUSE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(100));

/// What users `first..first + users` of `sale` are told by `target`, in id
/// order (`None`: no answer), asked over `connections` connections, given
/// up on at `deadline`.
///
/// # Errors
///
/// `target` is not a flashsale server, or a connection cannot be opened.
pub async fn ask_all(
    target: &Target,
    sale: &str,
    (first, users): (u64, u64),
    connections: usize,
    deadline: Instant,
) -> Result<Vec<Option<LookupBody>>, ConnectError> {
    let Target::Native { addr, api_key } = target else {
        return Err(ConnectError::Refused("not a native target".into()));
    };
    let template = Template::new(sale, LOOKUP)?;
    let len = usize::try_from(users).unwrap_or(usize::MAX);
    let lanes = connections.clamp(1, len.max(1));
    let asks = (0..lanes).map(|lane| {
        let users = (lane..len).step_by(lanes).map(|i| first + i as u64);
        ask_lane(addr, api_key.clone(), &template, users, deadline)
    });
    let mut told = vec![None; len];
    for lane in futures_util::future::join_all(asks).await {
        for (user, body) in lane? {
            if let Some(slot) = usize::try_from(user - first)
                .ok()
                .and_then(|i| told.get_mut(i))
            {
                *slot = Some(body);
            }
        }
    }
    Ok(told)
}

/// `users`' results over one connection.
async fn ask_lane(
    addr: &str,
    api_key: Option<String>,
    template: &Template,
    users: impl Iterator<Item = u64>,
    deadline: Instant,
) -> Result<Vec<(u64, LookupBody)>, ConnectError> {
    let patience = deadline.saturating_duration_since(Instant::now());
    let (mut pipe, window) = open(addr, api_key, patience).await?;
    let window = window.clamp(1, MAX_IN_FLIGHT);
    let mut fresh = users;
    // Users answered `busy`, by when they are asked again.
    let mut again: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut busy_answers: HashMap<u64, u32> = HashMap::new();
    let mut told = Vec::new();
    let mut in_flight = 0usize;
    loop {
        let now = Instant::now();
        while in_flight < window {
            let user = match again.peek() {
                Some(Reverse((due, _))) if *due <= now => again.pop().map(|Reverse((_, u))| u),
                _ => fresh.next(),
            };
            let Some(user) = user else { break };
            template.write(user, user, &mut pipe.write_buf);
            in_flight += 1;
        }
        if (in_flight == 0 && again.is_empty()) || now >= deadline {
            return Ok(told);
        }
        let mut settled = 0;
        let read = pipe.flush_some().and_then(|()| {
            pipe.read_some(|user, response| {
                settled += 1;
                match response {
                    Response::Busy { retry_after_ms } => {
                        let asked = busy_answers.entry(user).or_insert(0);
                        *asked += 1;
                        if *asked <= BUSY_RETRIES {
                            let pause = Duration::from_millis(u64::from(retry_after_ms))
                                .clamp(PAUSE.0, PAUSE.1);
                            again.push(Reverse((Instant::now() + pause, user)));
                        }
                    }
                    other => {
                        if let Some(body) = LookupBody::of(&other) {
                            told.push((user, body));
                        }
                    }
                }
            })
        });
        in_flight = in_flight.saturating_sub(settled);
        if let Err(e) = read {
            eprintln!("flashsale-loadgen: lookups: connection lost: {e}");
            return Ok(told);
        }
        if settled == 0 {
            let due = again.peek().map_or(deadline, |Reverse((due, _))| *due);
            if let Err(e) = pipe.wait(due.min(deadline)).await {
                eprintln!("flashsale-loadgen: lookups: connection lost: {e}");
                return Ok(told);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use flashsale_protocol::handshake::{accept, check_hello};
    use flashsale_protocol::{
        ClientFrame, Request, RequestFrame, ResponseFrame, ServerCodec, ServerFrame,
    };
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;

    use super::*;

    /// The window the scripted server sets.
    const WINDOW: u32 = 3;

    /// A server that answers every connection's `Lookup`s by `script` (the
    /// user and how many times it was asked before; `None`: never
    /// answered). Returns its address and the count of lookups it was sent.
    async fn scripted(script: fn(u64, u32) -> Option<Response>) -> (String, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let sent = Arc::new(AtomicU32::new(0));
        let count = Arc::clone(&sent);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut framed = Framed::new(stream, ServerCodec::default());
                    accept(&mut framed, WINDOW, |hello| check_hello(hello, None))
                        .await
                        .expect("a Hello, welcomed");
                    let mut asked: HashMap<u64, u32> = HashMap::new();
                    while let Some(Ok(frame)) = framed.next().await {
                        let ClientFrame::Request(RequestFrame {
                            id,
                            request: Request::Lookup { sale, user },
                        }) = frame
                        else {
                            panic!("not a Lookup: {frame:?}");
                        };
                        assert_eq!((sale.as_str(), id), ("drop", user));
                        count.fetch_add(1, Ordering::Relaxed);
                        let before = asked.entry(user).or_insert(0);
                        let answer = script(user, *before);
                        *before += 1;
                        if let Some(response) = answer {
                            let frame = ServerFrame::Response(ResponseFrame { id, response });
                            framed.send(frame).await.unwrap();
                        }
                    }
                });
            }
        });
        (addr, sent)
    }

    fn target(addr: String) -> Target {
        Target::Native {
            addr,
            api_key: None,
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn every_user_is_told_their_own_answer_over_each_connection() {
        let (addr, _) = scripted(|user, _| {
            let ticket = user.is_multiple_of(2).then(|| u32::try_from(user).unwrap());
            Some(Response::Lookup { ticket })
        })
        .await;
        let told = ask_all(&target(addr), "drop", (100, 50), 4, soon())
            .await
            .unwrap();
        assert_eq!(told.len(), 50);
        for (i, body) in told.iter().enumerate() {
            let user = 100 + i as u64;
            let ticket = user.is_multiple_of(2).then(|| u32::try_from(user).unwrap());
            assert_eq!(body, &Some(LookupBody::ticket(ticket)), "user {user}");
        }
    }

    #[tokio::test]
    async fn busy_is_asked_again_and_given_up_after_the_retries() {
        let (addr, sent) = scripted(|user, before| match user {
            // Busy twice, then answered.
            1 if before < 2 => Some(Response::Busy { retry_after_ms: 1 }),
            // Busy for ever.
            2 => Some(Response::Busy { retry_after_ms: 0 }),
            _ => Some(Response::Lookup { ticket: Some(7) }),
        })
        .await;
        let told = ask_all(&target(addr), "drop", (1, 3), 1, soon())
            .await
            .unwrap();
        let seven = Some(LookupBody::ticket(Some(7)));
        assert_eq!(told, vec![seven, None, seven]);
        // User 1 asked three times, user 2 once and then every retry, user 3 once.
        assert_eq!(sent.load(Ordering::Relaxed), 3 + (1 + BUSY_RETRIES) + 1);
    }

    #[tokio::test]
    async fn no_more_than_the_window_is_in_flight() {
        // Nothing is ever answered: one connection sends its window's worth
        // and waits, until the deadline.
        let (addr, sent) = scripted(|_, _| None).await;
        let deadline = Instant::now() + Duration::from_millis(300);
        let told = ask_all(&target(addr), "drop", (1, 10), 1, deadline)
            .await
            .unwrap();
        assert_eq!(told, vec![None; 10]);
        assert_eq!(sent.load(Ordering::Relaxed), WINDOW);
    }

    #[tokio::test]
    async fn what_is_never_answered_is_left_out_at_the_deadline() {
        // User 5 is never answered: the rest are, and the lookups end at
        // the deadline rather than waiting for it.
        let (addr, _) =
            scripted(|user, _| (user != 5).then_some(Response::Lookup { ticket: None })).await;
        let deadline = Instant::now() + Duration::from_millis(300);
        let told = ask_all(&target(addr), "drop", (1, 8), 2, deadline)
            .await
            .unwrap();
        let answered: Vec<u64> = (1..=8)
            .filter(|u| told[(u - 1) as usize].is_some())
            .collect();
        assert_eq!(answered, vec![1, 2, 3, 4, 6, 7, 8]);
    }

    #[tokio::test]
    async fn no_server_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let refused = ask_all(&target(addr), "drop", (1, 3), 1, soon()).await;
        assert!(refused.is_err());
        let redis = Target::Redis {
            url: "redis://127.0.0.1:1".into(),
        };
        assert!(ask_all(&redis, "drop", (1, 3), 1, soon()).await.is_err());
    }
}
