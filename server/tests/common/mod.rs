//! What the server's integration tests share: a server's native workers
//! over a service of one sale, and a bare native connection to them.

#![allow(dead_code)] // Each test file uses its own part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use flashsale_core::{Registry, Sale, SaleSpec, Sales};
use flashsale_protocol::handshake::handshake;
use flashsale_protocol::{
    ClientCodec, ClientFrame, Request, RequestFrame, ReserveOutcome, Response, ServerFrame,
};
use flashsale_server::log_hook::LogHook;
use flashsale_server::native::{ConnectionLimits, Workers};
use flashsale_server::service::Service;
use flashsale_wal::{Durability, DurableHook, NoHook, Wal, WalConfig};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Whether the log tells the core when a ticket is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marking {
    /// The server's own hook: tickets become durable after their sync.
    Server,
    /// No hook: every won ticket stays pending for good.
    Never,
}

/// A service over one sale `gig` of `capacity` tickets, open since 1970,
/// logged with fsync in `dir`.
pub fn service(dir: &std::path::Path, capacity: u32, marking: Marking) -> Arc<Service> {
    let sale = Sale::new(SaleSpec::instant("gig", capacity, 0)).expect("a valid sale");
    let sales = Arc::new(Registry::new(Sales::new(vec![sale]).expect("valid sales")));
    let hook: Arc<dyn DurableHook> = match marking {
        Marking::Server => {
            let hook = Arc::new(LogHook::default());
            hook.track(Arc::clone(&sales));
            hook
        }
        Marking::Never => Arc::new(NoHook),
    };
    let (wal, _) = Wal::open(WalConfig::default_for(dir), hook).expect("the log opens");
    Service::new(sales, wal, Durability::Fsync)
}

/// One native worker thread serving `service` on 127.0.0.1.
pub struct Harness {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    shutdown: CancellationToken,
    workers: Workers,
}

impl Harness {
    pub fn start(service: Arc<Service>, max_connections: usize) -> Harness {
        let listeners =
            flashsale_net::bind_reuseport("127.0.0.1:0".parse().expect("an address"), 1)
                .expect("a listener");
        let addr = listeners[0].local_addr().expect("an address");
        let limits = ConnectionLimits {
            max_connections,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_frame_len: 4096,
            api_key: None,
        };
        let shutdown = CancellationToken::new();
        let workers = Workers::start(
            listeners,
            flashsale_server::serving::Serving::single(Arc::clone(&service)),
            limits,
            shutdown.clone(),
            Duration::from_secs(5),
        )
        .expect("workers start");
        Harness {
            addr,
            service,
            shutdown,
            workers,
        }
    }

    /// Stops the workers; every connection has ended when this returns.
    pub fn stop(self) -> Arc<Service> {
        self.shutdown.cancel();
        self.workers.join();
        self.service
    }
}

/// A bare native connection: requests sent one at a time, each answer read
/// before the next request.
pub struct Conn {
    framed: Framed<TcpStream, ClientCodec>,
    next_id: u64,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::new();
        handshake(&mut stream, None, &mut codec, &mut buf)
            .await
            .expect("welcomed");
        let mut framed = Framed::new(stream, codec);
        framed.read_buffer_mut().extend_from_slice(&buf);
        Conn { framed, next_id: 0 }
    }

    pub async fn ask(&mut self, request: Request) -> Response {
        self.next_id += 1;
        let id = self.next_id;
        let frame = ClientFrame::Request(RequestFrame { id, request });
        self.framed.send(frame).await.expect("sent");
        match self.framed.next().await {
            Some(Ok(ServerFrame::Response(answer))) if answer.id == id => answer.response,
            other => panic!("expected the answer to {id}, got {other:?}"),
        }
    }

    pub async fn reserve(&mut self, sale: &str, user: u64) -> ReserveOutcome {
        let sale = sale.into();
        match self.ask(Request::Reserve { sale, user }).await {
            Response::Reserve(outcome) => outcome,
            other => panic!("expected a reservation's answer, got {other:?}"),
        }
    }
}
