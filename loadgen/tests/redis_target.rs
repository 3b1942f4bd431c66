//! The Redis target against a real `redis-server`, started on a free
//! loopback port for each test and killed afterwards.
//!
//! `redis-server` must be installed (`apt-get install redis-server`); the
//! tests fail, rather than skip, when it is not.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use flashsale_loadgen::check::Answer;
use flashsale_loadgen::config::Target;
use flashsale_loadgen::redis::{reset, snapshot, RedisTransport};
use flashsale_loadgen::transport::{ConnectError, Transport};
use flashsale_protocol::ReserveOutcome::{self, AlreadyOwned, SoldOut, UnknownSale, Won};
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A throwaway `redis-server` without persistence.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        // Another process may take the port between our probe and Redis's
        // bind: try a few ports before giving up.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temporary directory");
            let spawned = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    panic!("redis-server is not installed: install it (apt-get install redis-server) to run these tests")
                }
                Err(e) => panic!("cannot start redis-server: {e}"),
            };
            let mut server = RedisServer {
                child,
                port,
                _dir: dir,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited with {status}"));
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "nothing listening on port {} after {TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn target(&self) -> Target {
        Target::Redis {
            url: format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// Makes Redis forget every loaded script (`SCRIPT FLUSH`), over a
    /// plain client connection: the transport never sends it.
    async fn flush_scripts(&self) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
        let mut admin = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut admin)
            .await
            .unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Best effort: a failure here must not hide the test's own result.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    listener.local_addr().unwrap().port()
}

/// A connection reserving in `sale`.
async fn connect(target: &Target, sale: &str) -> Result<(RedisTransport, usize), ConnectError> {
    let shared = Rc::new(RedisTransport::prepare(target, sale)?);
    RedisTransport::connect(&shared, TIMEOUT).await
}

/// A fresh sale of `capacity` tickets, and a connection reserving in it.
async fn fresh_sale(target: &Target, sale: &str, capacity: u32) -> RedisTransport {
    reset(target, sale, capacity, TIMEOUT).await.unwrap();
    connect(target, sale).await.unwrap().0
}

/// Sends a reservation for each user (request ids are positions in
/// `users`), polls until every one is answered, and returns the outcomes.
async fn reserve_all(conn: &mut RedisTransport, users: &[u64]) -> Vec<ReserveOutcome> {
    for (id, &user) in users.iter().enumerate() {
        conn.send(id as u64, user);
    }
    let deadline = Instant::now() + TIMEOUT;
    let mut got: Vec<Option<ReserveOutcome>> = vec![None; users.len()];
    let mut answers = Vec::new();
    while got.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "unanswered after {TIMEOUT:?}: {got:?}"
        );
        conn.poll(deadline, &mut answers)
            .await
            .expect("connection lost");
        for (id, answer) in answers.drain(..) {
            let Answer::Reserve(outcome) = answer else {
                panic!("request {id} answered {answer:?}");
            };
            let slot = &mut got[id as usize];
            assert!(slot.is_none(), "request {id} answered twice");
            *slot = Some(outcome);
        }
    }
    got.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn sells_exactly_the_stock_once_per_user() {
    let server = RedisServer::start();
    let target = server.target();
    reset(&target, "drop", 5, TIMEOUT).await.unwrap();
    assert_eq!(
        snapshot(&target, "drop", TIMEOUT).await.unwrap().remaining,
        5
    );
    let (mut conn, window) = connect(&target, "drop").await.unwrap();
    assert_eq!(window, usize::MAX);

    // Twenty users, every other one sending twice in the same pipeline;
    // then all of them again once they have their answer.
    let mut first: Vec<u64> = (1..=20).collect();
    first.extend((1..=20).step_by(2));
    let second: Vec<u64> = (1..=20).collect();
    let mut answers = reserve_all(&mut conn, &first).await;
    answers.extend(reserve_all(&mut conn, &second).await);
    let users = first.iter().chain(&second);

    let mut by_user: BTreeMap<u64, Vec<ReserveOutcome>> = BTreeMap::new();
    for (&user, answer) in users.zip(answers) {
        by_user.entry(user).or_default().push(answer);
    }
    let mut tickets = BTreeSet::new();
    for (user, answers) in &by_user {
        let won: Vec<u32> = answers
            .iter()
            .filter_map(|a| match a {
                Won { ticket } => Some(*ticket),
                _ => None,
            })
            .collect();
        match won[..] {
            [] => assert!(
                answers.iter().all(|a| *a == SoldOut),
                "user {user}: {answers:?}"
            ),
            [ticket] => {
                assert!(tickets.insert(ticket), "ticket {ticket} won twice");
                let mut rest = answers.iter().filter(|a| !matches!(a, Won { .. }));
                assert!(
                    rest.all(|a| *a == AlreadyOwned { ticket }),
                    "user {user}: {answers:?}"
                );
            }
            _ => panic!("user {user} won more than once: {answers:?}"),
        }
    }
    assert_eq!(tickets, (1..=5).collect(), "exactly tickets 1..=5 are sold");

    let after = snapshot(&target, "drop", TIMEOUT).await.unwrap();
    assert_eq!((after.capacity, after.remaining), (5, 0));

    // A reset makes a fresh sale.
    reset(&target, "drop", 5, TIMEOUT).await.unwrap();
    assert_eq!(reserve_all(&mut conn, &[7]).await, [Won { ticket: 1 }]);
}

#[tokio::test]
async fn reloads_the_script_when_redis_forgets_it() {
    let server = RedisServer::start();
    let target = server.target();
    let mut conn = fresh_sale(&target, "flush", 3).await;
    assert_eq!(reserve_all(&mut conn, &[1]).await, [Won { ticket: 1 }]);

    server.flush_scripts().await;
    assert_eq!(
        reserve_all(&mut conn, &[2, 1, 3]).await,
        [
            Won { ticket: 2 },
            AlreadyOwned { ticket: 1 },
            Won { ticket: 3 }
        ]
    );

    server.flush_scripts().await;
    assert_eq!(
        reserve_all(&mut conn, &[4, 3]).await,
        [SoldOut, AlreadyOwned { ticket: 3 }]
    );
}

#[tokio::test]
async fn a_sale_that_is_not_set_up_is_reported() {
    let server = RedisServer::start();
    let target = server.target();
    let err = snapshot(&target, "nowhere", TIMEOUT).await.unwrap_err();
    assert!(format!("{err:#}").contains("not set up"), "{err:#}");
    let (mut conn, _) = connect(&target, "nowhere").await.unwrap();
    assert_eq!(reserve_all(&mut conn, &[1]).await, [UnknownSale]);
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails() {
    let target = Target::Redis {
        url: format!("redis://127.0.0.1:{}/", free_port()),
    };
    match connect(&target, "drop").await {
        Err(ConnectError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}")
        }
        Err(e) => panic!("expected a refused connection, got {e}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    assert!(snapshot(&target, "drop", TIMEOUT).await.is_err());
}

#[tokio::test]
async fn a_lost_connection_is_an_error() {
    let mut server = RedisServer::start();
    let target = server.target();
    let mut conn = fresh_sale(&target, "gone", 3).await;
    assert_eq!(reserve_all(&mut conn, &[1]).await, [Won { ticket: 1 }]);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    conn.send(0, 2);
    let mut answers = Vec::new();
    let lost = conn.poll(Instant::now() + TIMEOUT, &mut answers).await;
    assert!(lost.is_err(), "answers {answers:?}");
}
