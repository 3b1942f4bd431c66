//! The client against a scripted fake server.

mod fake;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fake::{FakeServer, Options, BUSY, DROP, GARBAGE, HELD, HELD_UNTIL, KICK, NEVER, UNKNOWN};
use flashsale_client::*;

/// Fails the test instead of hanging it.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("the call finished in time")
}

fn config(server: &FakeServer) -> ClientConfig {
    ClientConfig::new(server.address())
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(10))
        .reconnect(
            ReconnectPolicy::new()
                .attempts(3)
                .initial_backoff(Duration::from_millis(1)),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_each_get_their_own_answer() {
    let server = FakeServer::start(Options::default()).await;
    let client = bounded(Client::connect(config(&server))).await.unwrap();
    assert_eq!(client.max_in_flight(), 1024);

    let tasks: Vec<_> = (0..1000u64)
        .map(|user| {
            let client = client.clone();
            tokio::spawn(async move { (user, client.reserve("d", user).await) })
        })
        .collect();
    for task in tasks {
        let (user, outcome) = bounded(task).await.unwrap();
        assert_eq!(
            outcome.unwrap(),
            ReserveOutcome::Won {
                ticket: user as u32
            }
        );
    }
    assert_eq!(server.stats.connections(), 1);
    assert_eq!(server.stats.total_requests(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_stay_within_the_server_limit() {
    let server = FakeServer::start(Options {
        max_in_flight: 8,
        ..Options::default()
    })
    .await;
    let client = bounded(Client::connect(config(&server))).await.unwrap();
    assert_eq!(client.max_in_flight(), 8);

    let tasks: Vec<_> = (0..200u64)
        .map(|user| {
            let client = client.clone();
            tokio::spawn(async move { client.lookup("d", user).await })
        })
        .collect();
    for (user, task) in tasks.into_iter().enumerate() {
        assert_eq!(bounded(task).await.unwrap().unwrap(), Some(user as u32));
    }
    let max = server
        .stats
        .max_outstanding
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=8).contains(&max),
        "{max} requests were in flight at once"
    );
}

#[tokio::test]
async fn typed_answers_and_request_errors() {
    let server = FakeServer::start(Options::default()).await;
    let client = bounded(Client::connect(config(&server))).await.unwrap();

    bounded(client.ping()).await.unwrap();
    let status = bounded(client.status("d")).await.unwrap();
    assert_eq!(
        (status.sale.as_str(), status.remaining, status.state),
        ("d", 4, SaleState::Open)
    );
    assert_eq!(bounded(client.lookup("d", 3)).await.unwrap(), Some(3));

    let error = bounded(client.status(UNKNOWN)).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Server(e) if e.code == ErrorCode::UNKNOWN_SALE),
        "{error:?}"
    );
    assert!(!error.outcome_unknown());

    let long = "x".repeat(65);
    let error = bounded(client.reserve(&long, 1)).await.unwrap_err();
    assert!(matches!(error, ClientError::InvalidRequest(_)), "{error:?}");
    assert!(!error.outcome_unknown());

    // Neither error cost the connection.
    bounded(client.ping()).await.unwrap();
    assert_eq!(server.stats.connections(), 1);
}

#[tokio::test]
async fn the_lifecycle_calls_and_their_answers() {
    let server = FakeServer::start(Options::default()).await;
    let client = bounded(Client::connect(config(&server))).await.unwrap();

    let me = bounded(client.me(HELD, 4)).await.unwrap();
    assert_eq!(
        (me.ticket, me.expires_at),
        (Some(4), Some(HELD_UNTIL)),
        "a hold's lookup carries its deadline"
    );
    assert_eq!(bounded(client.lookup(HELD, 4)).await.unwrap(), Some(4));
    let plain = bounded(client.me("d", 4)).await.unwrap();
    assert_eq!((plain.ticket, plain.status), (Some(4), None));

    assert_eq!(
        bounded(client.confirm(HELD, 4, "pi")).await.unwrap(),
        ConfirmOutcome::Confirmed { ticket: 4 }
    );
    assert_eq!(
        bounded(client.cancel(HELD, 5)).await.unwrap(),
        ReleaseOutcome::Released { ticket: 5 }
    );
    assert_eq!(
        bounded(client.release(HELD, 5)).await.unwrap(),
        ReleaseOutcome::NoHold
    );
    let sales = bounded(client.sales()).await.unwrap();
    assert_eq!(sales.len(), 1);
    assert_eq!(
        (sales[0].sale.as_str(), sales[0].hold_seconds),
        (HELD, Some(60))
    );
}

#[tokio::test]
async fn a_refused_api_key_is_a_handshake_error_and_not_retried() {
    let options = Options {
        api_key: Some("right".into()),
        ..Options::default()
    };
    let server = FakeServer::start(options).await;

    let error = bounded(Client::connect(config(&server).api_key("wrong")))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Handshake(e) if e.code == ErrorCode::UNAUTHORIZED),
        "{error:?}"
    );
    assert_eq!(server.stats.connections(), 1);

    let client = bounded(Client::connect(config(&server).api_key("right")))
        .await
        .unwrap();
    bounded(client.ping()).await.unwrap();
}

#[tokio::test]
async fn an_overloaded_server_is_retried_per_policy() {
    let server = FakeServer::start(Options {
        refuse_first: 2,
        ..Options::default()
    })
    .await;
    let client = bounded(Client::connect(config(&server))).await.unwrap();
    bounded(client.ping()).await.unwrap();
    assert_eq!(server.stats.connections(), 3);

    let server = FakeServer::start(Options {
        refuse_first: 5,
        ..Options::default()
    })
    .await;
    let error = bounded(Client::connect(config(&server))).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Handshake(e) if e.code == ErrorCode::OVERLOADED),
        "{error:?}"
    );
    assert_eq!(server.stats.connections(), 3);
}

#[tokio::test]
async fn an_unreachable_server_is_an_io_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let config = ClientConfig::new(address).reconnect(
        ReconnectPolicy::new()
            .attempts(2)
            .initial_backoff(Duration::from_millis(1)),
    );
    let error = bounded(Client::connect(config)).await.unwrap_err();
    assert!(matches!(error, ClientError::Io(_)), "{error:?}");
}

#[tokio::test]
async fn an_unanswered_request_times_out_and_the_connection_survives() {
    let server = FakeServer::start(Options::default()).await;
    let client = bounded(Client::connect(
        config(&server).request_timeout(Duration::from_millis(200)),
    ))
    .await
    .unwrap();

    let error = bounded(client.reserve("d", NEVER)).await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout), "{error:?}");
    assert!(error.outcome_unknown());

    assert_eq!(bounded(client.lookup("d", 9)).await.unwrap(), Some(9));
    assert_eq!(server.stats.connections(), 1);
}

#[tokio::test]
async fn a_late_answer_is_dropped_quietly() {
    // The first request has id 0, an even id: its answer waits 400 ms.
    let options = Options {
        delay: Duration::from_millis(400),
        ..Options::default()
    };
    let server = FakeServer::start(options).await;
    let client = bounded(Client::connect(
        config(&server).request_timeout(Duration::from_millis(100)),
    ))
    .await
    .unwrap();

    let error = bounded(client.reserve("d", 1)).await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout), "{error:?}");
    // The late answer (`Won`, for id 0) reaches the client now.
    server.stats.wait_for_delayed_answers(1).await;

    // Id 1 is answered at once, on the same connection: with its own
    // answer, not the late one, which the client dropped without closing
    // the connection.
    assert_eq!(bounded(client.lookup("d", 2)).await.unwrap(), Some(2));
    assert_eq!(server.stats.connections(), 1);
}

#[tokio::test]
async fn a_busy_answer_is_its_own_error_and_keeps_the_connection() {
    let server = FakeServer::start(Options::default()).await;
    let client = bounded(Client::connect(config(&server))).await.unwrap();
    let error = bounded(client.lookup("d", BUSY)).await.unwrap_err();
    assert!(
        matches!(error, ClientError::Busy { retry_after_ms: 25 }),
        "{error:?}"
    );
    assert!(!error.outcome_unknown(), "the server answered");
    assert_eq!(bounded(client.lookup("d", 3)).await.unwrap(), Some(3));
    assert_eq!(server.stats.connections(), 1);
}

/// Starts `n` reservations that the server never answers, and waits until it
/// has them all.
async fn park(
    client: &Client,
    server: &FakeServer,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<ReserveOutcome, ClientError>>> {
    let before = server.stats.total_requests();
    let parked = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.reserve("d", NEVER).await })
        })
        .collect();
    server.stats.wait_for_requests(before + n).await;
    parked
}

#[tokio::test]
async fn a_lost_connection_fails_pending_requests_and_the_next_call_reconnects() {
    let server = FakeServer::start(Options::default()).await;
    let client = bounded(Client::connect(config(&server))).await.unwrap();
    let parked = park(&client, &server, 5).await;

    let error = bounded(client.reserve("d", DROP)).await.unwrap_err();
    assert!(
        matches!(error, ClientError::Closed | ClientError::Io(_)),
        "{error:?}"
    );
    assert!(error.outcome_unknown());
    for task in parked {
        let error = bounded(task).await.unwrap().unwrap_err();
        assert!(
            matches!(error, ClientError::Closed | ClientError::Io(_)),
            "{error:?}"
        );
    }

    assert_eq!(
        bounded(client.reserve("d", 7)).await.unwrap(),
        ReserveOutcome::Won { ticket: 7 }
    );
    assert_eq!(server.stats.connections(), 2);
}

#[tokio::test]
async fn a_failed_reconnect_fails_calls_at_once_for_the_cooldown() {
    let server = FakeServer::start(Options::default()).await;
    let policy = ReconnectPolicy::no_retry().cooldown(Duration::from_secs(3600));
    let client = bounded(Client::connect(config(&server).reconnect(policy)))
        .await
        .unwrap();
    server.stats.refusing.store(true, Ordering::SeqCst);
    bounded(client.reserve("d", DROP)).await.unwrap_err();

    let overloaded =
        |e: &ClientError| matches!(e, ClientError::Handshake(f) if f.code == ErrorCode::OVERLOADED);
    let error = bounded(client.ping()).await.unwrap_err();
    assert!(overloaded(&error), "the reconnect's own error: {error:?}");
    assert_eq!(server.stats.connections(), 2);
    for _ in 0..10 {
        let error = bounded(client.reserve("d", 7)).await.unwrap_err();
        assert!(overloaded(&error), "{error:?}");
    }
    assert_eq!(
        server.stats.connections(),
        2,
        "no connection attempt while the breaker is open"
    );

    // Without a cooldown, each call after a failure tries again.
    let policy = ReconnectPolicy::no_retry();
    let error = bounded(Client::connect(config(&server).reconnect(policy)))
        .await
        .unwrap_err();
    assert!(overloaded(&error), "{error:?}");
    server.stats.refusing.store(false, Ordering::SeqCst);
    let client = bounded(Client::connect(config(&server).reconnect(policy)))
        .await
        .unwrap();
    server.stats.refusing.store(true, Ordering::SeqCst);
    bounded(client.reserve("d", DROP)).await.unwrap_err();
    let before = server.stats.connections();
    for _ in 0..3 {
        bounded(client.ping()).await.unwrap_err();
    }
    assert_eq!(server.stats.connections(), before + 3);
    server.stats.refusing.store(false, Ordering::SeqCst);
    bounded(client.ping()).await.unwrap();
}

#[tokio::test]
async fn a_breaker_closes_once_its_cooldown_has_passed() {
    let server = FakeServer::start(Options::default()).await;
    let cooldown = Duration::from_millis(50);
    let policy = ReconnectPolicy::no_retry().cooldown(cooldown);
    let client = bounded(Client::connect(config(&server).reconnect(policy)))
        .await
        .unwrap();
    server.stats.refusing.store(true, Ordering::SeqCst);
    bounded(client.reserve("d", DROP)).await.unwrap_err();
    bounded(client.ping()).await.unwrap_err();
    server.stats.refusing.store(false, Ordering::SeqCst);
    // Past the cooldown (however late this task runs), the next call
    // connects again.
    tokio::time::sleep(cooldown * 2).await;
    bounded(client.ping()).await.unwrap();
    assert_eq!(server.stats.connections(), 3);
}

#[tokio::test]
async fn garbage_from_the_server_is_a_protocol_error() {
    let server = FakeServer::start(Options::default()).await;
    let client = bounded(Client::connect(config(&server))).await.unwrap();
    let parked = park(&client, &server, 3).await;

    let error = bounded(client.reserve("d", GARBAGE)).await.unwrap_err();
    assert!(matches!(error, ClientError::Protocol(_)), "{error:?}");
    for task in parked {
        let error = bounded(task).await.unwrap().unwrap_err();
        assert!(matches!(error, ClientError::Protocol(_)), "{error:?}");
    }

    bounded(client.ping()).await.unwrap();
    assert_eq!(server.stats.connections(), 2);
}

#[tokio::test]
async fn a_connection_error_from_the_server_reaches_pending_requests() {
    let server = FakeServer::start(Options::default()).await;
    let client = bounded(Client::connect(config(&server))).await.unwrap();
    let parked = park(&client, &server, 2).await;

    let error = bounded(client.reserve("d", KICK)).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Disconnected(e) if e.code == ErrorCode::IDLE_TIMEOUT),
        "{error:?}"
    );
    assert_eq!(error.code(), Some(ErrorCode::IDLE_TIMEOUT));
    for task in parked {
        let error = bounded(task).await.unwrap().unwrap_err();
        assert!(matches!(error, ClientError::Disconnected(_)), "{error:?}");
    }
    bounded(client.ping()).await.unwrap();
}

#[tokio::test]
async fn an_oversized_frame_from_the_server_is_refused() {
    let server = FakeServer::start(Options::default()).await;
    // A status answer is over 16 bytes: too large for this client.
    let client = bounded(Client::connect(config(&server).max_frame_len(16)))
        .await
        .unwrap();
    let error = bounded(client.status("d")).await.unwrap_err();
    assert!(matches!(error, ClientError::Protocol(_)), "{error:?}");
    // Small answers still fit on the next connection.
    bounded(client.ping()).await.unwrap();
}

#[tokio::test]
async fn a_pool_spreads_requests_over_its_connections() {
    let server = FakeServer::start(Options::default()).await;
    let pool = bounded(Pool::connect(config(&server), 4)).await.unwrap();
    assert_eq!(pool.clients().len(), 4);
    assert_eq!(pool.max_in_flight(), 4 * 1024);

    for user in 0..40u64 {
        assert_eq!(
            bounded(pool.lookup("d", user)).await.unwrap(),
            Some(user as u32)
        );
    }
    let requests = server.stats.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|&n| n > 0), "{requests:?}");
    assert_eq!(requests.iter().sum::<usize>(), 40);

    let tasks: Vec<_> = (0..200u64)
        .map(|user| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.reserve("d", user).await })
        })
        .collect();
    for (user, task) in tasks.into_iter().enumerate() {
        assert_eq!(
            bounded(task).await.unwrap().unwrap(),
            ReserveOutcome::Won {
                ticket: user as u32
            }
        );
    }
}

/// A fake node of a cluster that does not lead and names `leader`.
async fn follower(leader: &str) -> FakeServer {
    FakeServer::start(Options {
        not_leader: Some(leader.to_owned()),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_node_that_does_not_lead_sends_the_client_to_the_leader() {
    let leader = FakeServer::start(Options::default()).await;
    let follower = follower(&leader.address()).await;
    let client = bounded(Client::connect(config(&follower))).await.unwrap();
    assert_eq!(
        bounded(client.reserve("d", 7)).await.unwrap(),
        ReserveOutcome::Won { ticket: 7 }
    );
    assert_eq!(bounded(client.lookup("d", 8)).await.unwrap(), Some(8));
    // The follower was asked once; everything after went to the leader.
    assert_eq!(follower.stats.total_requests(), 1);
    assert_eq!(leader.stats.total_requests(), 2);
    assert_eq!(leader.stats.connections(), 1);
}

#[tokio::test]
async fn a_client_told_not_to_follow_gets_the_nodes_answer() {
    let leader = FakeServer::start(Options::default()).await;
    let follower = follower(&leader.address()).await;
    let client = bounded(Client::connect(config(&follower).follow_leader(false)))
        .await
        .unwrap();
    match bounded(client.reserve("d", 7)).await {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, flashsale_protocol::ErrorCode::NOT_LEADER);
            assert_eq!(e.message, leader.address());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(leader.stats.connections(), 0);
}

#[tokio::test]
async fn while_no_leader_is_known_the_next_node_is_asked() {
    let leader = FakeServer::start(Options::default()).await;
    let electing = follower("").await;
    let client = bounded(Client::connect(config(&electing).nodes([leader.address()])))
        .await
        .unwrap();
    assert_eq!(
        bounded(client.reserve("d", 3)).await.unwrap(),
        ReserveOutcome::Won { ticket: 3 }
    );
    assert_eq!(electing.stats.total_requests(), 1);
    assert_eq!(leader.stats.total_requests(), 1);
}

#[tokio::test]
async fn a_node_that_is_down_is_passed_over() {
    let leader = FakeServer::start(Options::default()).await;
    let down = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let config = config(&leader).address(down).nodes([leader.address()]);
    let client = bounded(Client::connect(config)).await.unwrap();
    assert_eq!(
        bounded(client.reserve("d", 5)).await.unwrap(),
        ReserveOutcome::Won { ticket: 5 }
    );
}

#[tokio::test]
async fn no_leader_within_the_request_timeout_is_the_nodes_answer() {
    let electing = FakeServer::start(Options {
        not_leader: Some(String::new()),
        delay: Duration::ZERO,
        ..Options::default()
    })
    .await;
    let client = bounded(Client::connect(
        config(&electing).request_timeout(Duration::from_millis(300)),
    ))
    .await
    .unwrap();
    match bounded(client.reserve("d", 1)).await {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, flashsale_protocol::ErrorCode::NOT_LEADER)
        }
        // The time ran out during a retry: as far as the client knows, a
        // leader may have taken that one.
        Err(ClientError::Timeout) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        electing.stats.total_requests() > 1,
        "the client asked again while it had time"
    );
}
