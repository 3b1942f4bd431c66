//! The Prometheus metrics, read back from `render()`: answers counted per
//! connection and flushed in batches, shed connections, the connection and
//! in-flight gauges, the log's batches and health, and the stock gauges.
//!
//! Every test installs the one process-wide recorder and compares values
//! before and after, so the tests share a lock: each sees only its own
//! changes.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flashsale_client::{ClientConfig, ReserveOutcome};
use flashsale_server::core::{Sale, SaleSpec, Sales};
use flashsale_server::metrics::{self, Op, Outcome, OutcomeCounts, Protocol};
use flashsale_server::net::{bind_listeners, ConnectionLimits, Workers};
use flashsale_server::service::Service;
use flashsale_server::wal::{Durability, LogFile, NoHook, Record, Wal, WalConfig};
use tokio_util::sync::CancellationToken;

static SERIAL: Mutex<()> = Mutex::new(());

/// Installs the recorder and keeps the other tests out until dropped.
fn exclusive() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    metrics::install().expect("the recorder installs");
    guard
}

/// The value of the series `name` whose labels include `labels`, or 0 when
/// it has not been recorded yet.
fn value(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = metrics::render();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .map_or(0.0, |(_, v)| v.parse().expect("a number"))
}

fn requests(protocol: &str, op: &str, outcome: &str) -> f64 {
    value(
        metrics::REQUESTS,
        &[("protocol", protocol), ("op", op), ("outcome", outcome)],
    )
}

fn shed(protocol: &str, reason: &str) -> f64 {
    value(metrics::SHED, &[("protocol", protocol), ("reason", reason)])
}

fn wal_batches() -> f64 {
    value(&format!("{}_count", metrics::WAL_BATCH_RECORDS), &[])
}

fn wal_records() -> f64 {
    value(&format!("{}_sum", metrics::WAL_BATCH_RECORDS), &[])
}

fn fsyncs() -> f64 {
    value(&format!("{}_count", metrics::WAL_FSYNC_SECONDS), &[])
}

/// A snapshot of every `flashsale_requests_total` series, to diff.
fn all_requests() -> Vec<(String, f64)> {
    let mut series: Vec<(String, f64)> = metrics::render()
        .lines()
        .filter(|line| line.starts_with(metrics::REQUESTS))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, v)| (series.to_owned(), v.parse().expect("a number")))
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    series
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn counts_are_local_until_flushed() {
    let _serial = exclusive();
    let before = (
        requests("http", "reserve", "sold_out"),
        requests("http", "reserve", "busy"),
        requests("http", "ping", "ok"),
        shed("http", "busy"),
    );
    let mut counts = OutcomeCounts::new();
    for _ in 0..3 {
        counts.record(Op::Reserve, Outcome::SoldOut);
    }
    counts.record(Op::Reserve, Outcome::Busy);
    counts.record(Op::Ping, Outcome::Ok);
    assert_eq!(counts.get(Op::Reserve, Outcome::SoldOut), 3);
    assert_eq!(
        requests("http", "reserve", "sold_out"),
        before.0,
        "nothing reaches the metrics before the flush"
    );

    counts.flush(Protocol::Http);
    assert_eq!(counts.get(Op::Reserve, Outcome::SoldOut), 0);
    assert_eq!(requests("http", "reserve", "sold_out"), before.0 + 3.0);
    assert_eq!(requests("http", "reserve", "busy"), before.1 + 1.0);
    assert_eq!(requests("http", "ping", "ok"), before.2 + 1.0);
    assert_eq!(
        shed("http", "busy"),
        before.3 + 1.0,
        "a Busy answer is shed load"
    );

    let snapshot = all_requests();
    counts.flush(Protocol::Http);
    assert_eq!(all_requests(), snapshot, "a second flush adds nothing");
}

#[test]
fn outcomes_follow_the_answers() {
    use flashsale_protocol::{ErrorCode, ErrorFrame, Response};
    let reserve = |o| Outcome::of(Op::Reserve, &Response::Reserve(o));
    assert_eq!(reserve(ReserveOutcome::Won { ticket: 1 }), Outcome::Won);
    assert_eq!(
        reserve(ReserveOutcome::AlreadyOwned { ticket: 1 }),
        Outcome::AlreadyOwned
    );
    assert_eq!(reserve(ReserveOutcome::SoldOut), Outcome::SoldOut);
    assert_eq!(
        reserve(ReserveOutcome::NotOpen { opens_at: 9 }),
        Outcome::NotOpen
    );
    assert_eq!(reserve(ReserveOutcome::UnknownSale), Outcome::UnknownSale);
    assert_eq!(
        reserve(ReserveOutcome::Busy { retry_after_ms: 5 }),
        Outcome::Busy
    );
    let error = Response::Error(ErrorFrame::new(ErrorCode::LOG_UNAVAILABLE, "down"));
    for op in [Op::Reserve, Op::Status, Op::Lookup, Op::Ping] {
        assert_eq!(Outcome::of(op, &error), Outcome::Error);
    }
    assert_eq!(Outcome::of(Op::Ping, &Response::Pong), Outcome::Ok);
    assert_eq!(
        Outcome::of(Op::Lookup, &Response::Lookup { ticket: None }),
        Outcome::Ok
    );
    assert_eq!(Outcome::of(Op::Reserve, &Response::Pong), Outcome::Error);
}

/// A server's workers over one sale `gig` of `capacity` tickets, logged
/// with fsync in a temporary directory.
struct Harness {
    addr: SocketAddr,
    sales: Arc<Sales>,
    shutdown: CancellationToken,
    workers: Workers,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(capacity: u32, max_connections: usize) -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let sale = Sale::new(SaleSpec {
            id: "gig".into(),
            capacity,
            opens_at_ms: 0,
        })
        .expect("a valid sale");
        let sales = Arc::new(Sales::new(vec![sale]).expect("valid sales"));
        let marks = Arc::clone(&sales);
        let hook = move |records: &[Record]| {
            for record in records {
                if let Record::TicketSold { sale, user, .. } = record {
                    if let Some(sale) = marks.get(sale) {
                        sale.mark_durable(*user);
                    }
                }
            }
        };
        let (wal, _) =
            Wal::open(WalConfig::default_for(dir.path()), Arc::new(hook)).expect("the log opens");
        let service = Service::new(Arc::clone(&sales), wal, Durability::Fsync);
        let listeners =
            bind_listeners("127.0.0.1:0".parse().expect("an address"), 1).expect("a listener");
        let addr = listeners[0].local_addr().expect("an address");
        let limits = ConnectionLimits {
            max_connections,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(10),
            max_frame_len: 4096,
            api_key: None,
        };
        let shutdown = CancellationToken::new();
        let workers = Workers::start(
            listeners,
            service,
            limits,
            shutdown.clone(),
            Duration::from_secs(5),
        )
        .expect("workers start");
        Harness {
            addr,
            sales,
            shutdown,
            workers,
            _dir: dir,
        }
    }

    /// Stops the workers; every connection has ended when this returns.
    fn stop(self) -> Arc<Sales> {
        self.shutdown.cancel();
        self.workers.join();
        self.sales
    }
}

#[test]
fn a_connection_counts_its_answers() {
    let _serial = exclusive();
    let counted = [
        ("reserve", "won"),
        ("reserve", "sold_out"),
        ("reserve", "already_owned"),
        ("reserve", "unknown_sale"),
        ("status", "ok"),
        ("status", "error"),
        ("lookup", "ok"),
        ("ping", "ok"),
    ];
    let before: Vec<f64> = counted
        .iter()
        .map(|(op, outcome)| requests("native", op, outcome))
        .collect();
    let (batches, fsynced) = (wal_batches(), fsyncs());

    let server = Harness::start(1, 16);
    let addr = server.addr;
    runtime().block_on(async move {
        let client = ClientConfig::new(addr.to_string())
            .connect()
            .await
            .expect("connects");
        assert_eq!(
            client.reserve("gig", 1).await.expect("answered"),
            ReserveOutcome::Won { ticket: 1 }
        );
        for user in 2..=4 {
            assert_eq!(
                client.reserve("gig", user).await.expect("answered"),
                ReserveOutcome::SoldOut
            );
        }
        assert_eq!(
            client.reserve("gig", 1).await.expect("answered"),
            ReserveOutcome::AlreadyOwned { ticket: 1 }
        );
        assert_eq!(
            client.reserve("nope", 1).await.expect("answered"),
            ReserveOutcome::UnknownSale
        );
        client.status("gig").await.expect("a status");
        client.status("nope").await.expect_err("no such sale");
        assert_eq!(client.lookup("gig", 1).await.expect("answered"), Some(1));
        client.ping().await.expect("a pong");
        assert_eq!(
            value(metrics::CONNECTIONS, &[("protocol", "native")]),
            1.0,
            "one connection open"
        );
    });
    let sales = server.stop();

    let expected = [1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    for (((op, outcome), before), expected) in counted.iter().zip(&before).zip(expected) {
        assert_eq!(
            requests("native", op, outcome) - before,
            expected,
            "{op} answered {outcome}"
        );
    }
    assert_eq!(value(metrics::CONNECTIONS, &[("protocol", "native")]), 0.0);
    assert_eq!(
        value(metrics::IN_FLIGHT, &[("protocol", "native")]),
        0.0,
        "nothing waits on the log any more"
    );
    assert!(wal_batches() > batches, "the win was committed in a batch");
    assert!(fsyncs() > fsynced, "and synced");
    assert_eq!(value(metrics::WAL_HEALTHY, &[]), 1.0);

    let text = metrics::render_with(&sales);
    assert!(
        text.contains("flashsale_remaining_tickets{sale=\"gig\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("flashsale_sold_tickets{sale=\"gig\"} 1"),
        "{text}"
    );
}

#[test]
fn connections_over_the_limit_are_shed() {
    let _serial = exclusive();
    let refused = shed("native", "connections");
    let server = Harness::start(1, 0);
    let mut stream = TcpStream::connect(server.addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a timeout");
    // The refusal is an error frame, then the close.
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading the refusal: {e}"),
    }
    assert!(!answer.is_empty(), "an error frame before the close");
    server.stop();
    assert_eq!(shed("native", "connections"), refused + 1.0);
}

/// A log file whose syncs always fail.
struct FailingSync(std::fs::File);

impl LogFile for FailingSync {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        LogFile::write_all(&mut self.0, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(5)) // EIO
    }
}

fn sold(ticket: u32) -> Record {
    Record::TicketSold {
        sale: "gig".into(),
        ticket,
        user: u64::from(ticket),
        at_ms: 7,
    }
}

#[test]
fn the_log_records_its_batches_and_health() {
    let _serial = exclusive();
    let (batches, records, fsynced) = (wal_batches(), wal_records(), fsyncs());

    let dir = tempfile::tempdir().expect("a temporary directory");
    let (wal, _) = WalConfig::default_for(dir.path())
        .open(Arc::new(NoHook))
        .expect("the log opens");
    assert_eq!(value(metrics::WAL_HEALTHY, &[]), 1.0);
    runtime().block_on(async {
        let mut waiters = Vec::new();
        for ticket in 1..=5 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            wal.append(sold(ticket), Some(tx));
            waiters.push(rx);
        }
        for rx in waiters {
            rx.await.expect("answered").expect("durable");
        }
    });
    let stats = wal.stats();
    wal.shutdown().expect("a clean shutdown");
    assert_eq!(wal_batches() - batches, stats.batches as f64);
    assert_eq!(wal_records() - records, 5.0);
    assert_eq!(fsyncs() - fsynced, stats.fsyncs as f64);

    // Without sync, batches are recorded but no fsync time.
    let (batches, fsynced) = (wal_batches(), fsyncs());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (wal, _) = WalConfig::default_for(dir.path())
        .durability(Durability::None)
        .open(Arc::new(NoHook))
        .expect("the log opens");
    wal.append_durable(sold(1)).expect("written");
    wal.shutdown().expect("a clean shutdown");
    assert_eq!(wal_batches() - batches, 1.0);
    assert_eq!(fsyncs(), fsynced);

    // A failed sync marks the log unhealthy.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (wal, _) = WalConfig::default_for(dir.path())
        .open_with(Arc::new(NoHook), FailingSync)
        .expect("the log opens");
    assert_eq!(value(metrics::WAL_HEALTHY, &[]), 1.0);
    wal.append_durable(sold(1)).expect_err("the sync fails");
    assert_eq!(value(metrics::WAL_HEALTHY, &[]), 0.0);
    wal.shutdown().expect_err("the log failed");
}
