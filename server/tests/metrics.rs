//! The server's metrics, read back from `render()`: what a native
//! connection counts, shed connections, the connection and in-flight
//! gauges, the log's batches (through the server's log hook) and health,
//! and the stock gauges.
//!
//! Every test installs the one process-wide recorder and compares values
//! before and after, so the tests share a lock: each sees only its own
//! changes.

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

mod common;

use common::{runtime, Conn, Harness, Marking};
use flashsale_core::{Registry, Sale, SaleSpec, Sales};
use flashsale_metrics::readback::{requests, shed, value};
use flashsale_metrics::{self as metrics, Op, Outcome, Protocol, ShedReason};
use flashsale_protocol::{OutcomeKind, Request, ReserveOutcome, Response};
use flashsale_server::gauges;
use flashsale_server::log_hook::LogHook;
use flashsale_server::service::Service;
use flashsale_wal::{Durability, LogFile, Record, Wal, WalConfig};

static SERIAL: Mutex<()> = Mutex::new(());

/// Installs the recorder and keeps the other tests out until dropped.
fn exclusive() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    metrics::install().expect("the recorder installs");
    guard
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

#[test]
fn a_connection_counts_its_answers() {
    let _serial = exclusive();
    let counted = [
        (Op::Reserve, Outcome::Sale(OutcomeKind::Won)),
        (Op::Reserve, Outcome::Sale(OutcomeKind::SoldOut)),
        (Op::Reserve, Outcome::Sale(OutcomeKind::AlreadyOwned)),
        (Op::Reserve, Outcome::Sale(OutcomeKind::UnknownSale)),
        (Op::Status, Outcome::Ok),
        (Op::Status, Outcome::Error),
        (Op::Lookup, Outcome::Ok),
        (Op::Ping, Outcome::Ok),
    ];
    let before: Vec<f64> = counted
        .iter()
        .map(|&(op, outcome)| requests(Protocol::Native, op, outcome))
        .collect();
    let (batches, fsynced) = (wal_batches(), fsyncs());

    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = Harness::start(common::service(dir.path(), 1, Marking::Server), 16);
    let addr = server.addr;
    runtime().block_on(async move {
        let mut conn = Conn::open(addr).await;
        assert_eq!(
            conn.reserve("gig", 1).await,
            ReserveOutcome::Won { ticket: 1 }
        );
        for user in 2..=4 {
            assert_eq!(conn.reserve("gig", user).await, ReserveOutcome::SoldOut);
        }
        assert_eq!(
            conn.reserve("gig", 1).await,
            ReserveOutcome::AlreadyOwned { ticket: 1 }
        );
        assert_eq!(conn.reserve("nope", 1).await, ReserveOutcome::UnknownSale);
        let status = |sale: &str| Request::Status { sale: sale.into() };
        assert!(matches!(conn.ask(status("gig")).await, Response::Status(_)));
        assert!(matches!(conn.ask(status("nope")).await, Response::Error(_)));
        let lookup = Request::Lookup {
            sale: "gig".into(),
            user: 1,
        };
        assert_eq!(conn.ask(lookup).await, Response::Lookup { ticket: Some(1) });
        assert_eq!(conn.ask(Request::Ping).await, Response::Pong);
        assert_eq!(
            value(metrics::CONNECTIONS, &[("protocol", "native")]),
            1.0,
            "one connection open"
        );
    });
    let service = server.stop();

    let expected = [1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    for (((op, outcome), before), expected) in counted.iter().zip(&before).zip(expected) {
        assert_eq!(
            requests(Protocol::Native, *op, *outcome) - before,
            expected,
            "{op:?} answered {outcome:?}"
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
    let text = gauges::render(&service);
    assert!(text.contains("flashsale_wal_healthy 1"), "{text}");
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
    let refused = shed(Protocol::Native, ShedReason::Connections);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = Harness::start(common::service(dir.path(), 1, Marking::Server), 0);
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
    assert_eq!(
        shed(Protocol::Native, ShedReason::Connections),
        refused + 1.0
    );
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

/// A service over one empty sale `gig`, on `wal`.
fn service_on(wal: Wal) -> Arc<Service> {
    let sale = Sale::new(SaleSpec::instant("gig", 1, 0)).expect("a valid sale");
    let sales = Arc::new(Registry::new(Sales::new(vec![sale]).expect("valid sales")));
    Service::new(sales, wal, Durability::Fsync)
}

#[test]
fn the_log_hook_records_batches_and_the_gauges_its_health() {
    let _serial = exclusive();
    let (batches, records, fsynced) = (wal_batches(), wal_records(), fsyncs());

    let dir = tempfile::tempdir().expect("a temporary directory");
    let (wal, _) = WalConfig::default_for(dir.path())
        .open(Arc::new(LogHook::default()))
        .expect("the log opens");
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
        .open(Arc::new(LogHook::default()))
        .expect("the log opens");
    wal.append_durable(sold(1)).expect("written");
    wal.shutdown().expect("a clean shutdown");
    assert_eq!(wal_batches() - batches, 1.0);
    assert_eq!(fsyncs(), fsynced);

    // A failed sync marks the log unhealthy.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (wal, _) = WalConfig::default_for(dir.path())
        .open_with(Arc::new(LogHook::default()), FailingSync)
        .expect("the log opens");
    let service = service_on(wal.clone());
    assert!(gauges::render(&service).contains("flashsale_wal_healthy 1"));
    wal.append_durable(sold(1)).expect_err("the sync fails");
    assert!(gauges::render(&service).contains("flashsale_wal_healthy 0"));
    drop(service);
    wal.shutdown().expect_err("the log failed");
}
