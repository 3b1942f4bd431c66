//! The server's configuration: one struct with documented fields and sane
//! defaults, independent of how it was parsed (the CLI lives in `main.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use flashsale_http::HttpConfig;
use flashsale_net::open_files::{FileBudget, TooFewFiles, BASE_RESERVE};

use crate::sink::SinkConfig;
use flashsale_wal::Durability;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Capacity of the sale created on a fresh data directory when none is named.
pub const DEFAULT_CAPACITY: u32 = 200;
/// Id of the sale created on a fresh data directory when none is named.
pub const DEFAULT_SALE: &str = "default";

/// Everything the server needs to start.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address of the binary-protocol listener. Every worker thread binds its
    /// own `SO_REUSEPORT` socket to it; port 0 picks a free port once.
    pub listen: SocketAddr,
    /// Directory holding the write-ahead log (and with it, the sale
    /// definitions). Created if missing.
    pub data_dir: PathBuf,
    /// Sales to serve. Empty means: whatever the data directory holds, or one
    /// sale `default` of 200 tickets, open now, on a fresh directory.
    pub sales: Vec<SaleArg>,
    /// The draw window of every new sale named by `sales` (and of the
    /// default sale): its first tickets go by a draw among the users who
    /// ask within this many milliseconds of opening. `None`: first come,
    /// first served.
    pub draw_window_ms: Option<u64>,
    /// Worker threads, each pinned to a core with its own listener. `None`
    /// means one per available core.
    pub threads: Option<usize>,
    /// Whether a win is acknowledged only after fdatasync (the default).
    pub durability: Durability,
    /// Open connections beyond which a new one gets an `OVERLOADED` error
    /// frame and is closed.
    pub max_connections: usize,
    /// Requests in progress per connection beyond which the server stops
    /// reading that connection until answers have gone out.
    pub max_in_flight: u32,
    /// A connection with no complete frame and no progress writing for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// A connection whose `Hello` is not in and accepted this long after it
    /// was accepted is closed, however it trickles bytes.
    pub handshake_timeout: Duration,
    /// Largest accepted frame body.
    pub max_frame_len: usize,
    /// API key a client's `Hello` must carry; `None` accepts any.
    pub api_key: Option<String>,
    /// Longest a graceful shutdown waits for in-flight work before closing
    /// connections anyway.
    pub shutdown_grace: Duration,
    /// The HTTP front, served beside the binary protocol; `None` serves no
    /// HTTP.
    pub http: Option<HttpConfig>,
    /// Drain sold tickets into PostgreSQL; `None` runs without a database.
    pub sink: Option<SinkConfig>,
    /// The operator's API, on its own listener; `None` serves none.
    pub admin: Option<AdminConfig>,
    /// This server as one node of a replicated cluster; `None` runs a
    /// single node on its own write-ahead log.
    pub cluster: Option<ClusterConfig>,
}

/// A node of a cluster (`--node-id`, `--cluster`; see `docs/CLUSTER.md`).
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's id, one of `members`.
    pub node_id: u64,
    /// Every node's id and the address it replicates over.
    pub members: BTreeMap<u64, String>,
    /// The key nodes present to each other (the `--api-key`); empty: none.
    pub key: Vec<u8>,
    /// Where this node listens for the others, if not its own entry in
    /// `members` (`--cluster-listen`: behind a proxy or a NAT).
    pub listen: Option<String>,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("members", &self.members)
            .field(
                "key",
                &if self.key.is_empty() {
                    "none"
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

/// Parses `--cluster`: `ID=HOST:PORT` entries, comma-separated, each id a
/// positive integer named once.
///
/// # Errors
/// An entry without `=`, an id that is not a positive integer or is named
/// twice, an empty address, or no entry at all.
pub fn parse_members(spec: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut members = BTreeMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| format!("{id:?} in {entry:?} is not a node id (1, 2, ...)"))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!("{addr:?} in {entry:?} is not HOST:PORT"));
        }
        if members.insert(id, addr.to_owned()).is_some() {
            return Err(format!("node {id} is named twice"));
        }
    }
    if members.is_empty() {
        return Err("no node named (ID=HOST:PORT,...)".into());
    }
    Ok(members)
}

/// The operator's API (`--admin`).
#[derive(Clone)]
pub struct AdminConfig {
    /// Its listener, never the buyers' one.
    pub listen: SocketAddr,
    /// The bearer key every request must carry, at least 32 bytes.
    pub key: Vec<u8>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Files each worker thread keeps open: its runtime's event queue and
/// waker, and its listener.
const FILES_PER_WORKER: u64 = 4;

impl ServerConfig {
    /// Files the server keeps open besides its buyers' connections: the
    /// common base ([`BASE_RESERVE`]), each worker thread's, and the admin
    /// listener's connections. (33 measured with two workers, HTTP and
    /// admin, against 40 reserved.)
    pub fn reserved_files(&self) -> u64 {
        let admin = if self.admin.is_some() {
            flashsale_http::admin::MAX_CONNECTIONS as u64
        } else {
            0
        };
        BASE_RESERVE + FILES_PER_WORKER * self.worker_threads() as u64 + admin
    }

    /// Clamps the connection limits (native and HTTP) to what `files`, the
    /// open-file limit in force, leaves once [`reserved_files`](Self::reserved_files)
    /// are set aside; each clamp is logged (WARN), as is a sum of limits
    /// that does not fit (see [`flashsale_net::open_files`]).
    ///
    /// # Errors
    ///
    /// When not even a handful of connections fit.
    pub fn fit_open_files(&mut self, files: u64) -> Result<(), TooFewFiles> {
        let budget = FileBudget::new(files, self.reserved_files())?;
        self.max_connections = budget.fit("--max-connections", self.max_connections);
        let mut limits = vec![("--max-connections", self.max_connections)];
        if let Some(http) = &mut self.http {
            http.fit_open_files(&budget);
            limits.push(("--http-max-connections", http.max_connections));
        }
        budget.check_total(&limits);
        Ok(())
    }

    /// The defaults, serving from `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: data_dir.into(),
            sales: Vec::new(),
            draw_window_ms: None,
            threads: None,
            durability: Durability::Fsync,
            max_connections: 100_000,
            max_in_flight: 1024,
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            max_frame_len: flashsale_protocol::DEFAULT_MAX_FRAME_LEN,
            api_key: None,
            shutdown_grace: Duration::from_secs(10),
            http: None,
            sink: None,
            cluster: None,
            admin: None,
        }
    }

    /// Sets [`ServerConfig::sink`].
    #[must_use]
    pub fn sink(mut self, sink: SinkConfig) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Sets [`ServerConfig::listen`].
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Adds a sale to [`ServerConfig::sales`].
    #[must_use]
    pub fn sale(mut self, sale: SaleArg) -> Self {
        self.sales.push(sale);
        self
    }

    /// Sets [`ServerConfig::threads`].
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Sets [`ServerConfig::durability`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`ServerConfig::http`].
    #[must_use]
    pub fn http(mut self, http: HttpConfig) -> Self {
        self.http = Some(http);
        self
    }

    /// The number of worker threads this configuration asks for.
    pub fn worker_threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

/// A sale named on the command line: `ID[:CAPACITY[:OPENS_AT_UNIX_MS]]`.
///
/// The grammar, stricter than the wire's (which allows any UTF-8 sale id of
/// up to 64 bytes, as the admin API creates them):
///
/// - `ID`: 1 to 64 bytes of ASCII letters, digits, `-`, `_` and `.`;
/// - `CAPACITY`: a decimal integer in `1..=MAX_CAPACITY` (10,000,000);
///   omitted (`--sale gig`), [`DEFAULT_CAPACITY`] (200);
/// - `OPENS_AT_UNIX_MS`: decimal Unix milliseconds up to
///   [`MAX_OPENS_AT_MS`](flashsale_core::MAX_OPENS_AT_MS) (the end of the
///   year 9999); omitted, the sale opens when it is created.
///
/// On the command line and in `FLASHSALE_SALES`, commas separate sales
/// (`--sale a:5,b:6` is two), so no part can hold a comma.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleArg {
    /// The sale id.
    pub id: String,
    /// Tickets in the sale.
    pub capacity: u32,
    /// Opening time in Unix milliseconds; `None` means "now" for a new sale
    /// and "as stored" for an existing one.
    pub opens_at_ms: Option<u64>,
}

impl fmt::Display for SaleArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.capacity)?;
        if let Some(at) = self.opens_at_ms {
            write!(f, ":{at}")?;
        }
        Ok(())
    }
}

impl FromStr for SaleArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let id = parts.next().unwrap_or_default();
        if id.is_empty() || id.len() > flashsale_protocol::MAX_SALE_ID_LEN {
            return Err(format!(
                "sale id must be 1 to {} bytes",
                flashsale_protocol::MAX_SALE_ID_LEN
            ));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(format!(
                "sale id {id:?} may only hold letters, digits, '-', '_' and '.'"
            ));
        }
        let capacity = match parts.next() {
            None => DEFAULT_CAPACITY,
            Some(c) => c
                .parse::<u32>()
                .ok()
                .filter(|c| (1..=flashsale_core::MAX_CAPACITY).contains(c))
                .ok_or_else(|| {
                    format!(
                        "capacity {c:?} is not an integer from 1 to {}",
                        flashsale_core::MAX_CAPACITY
                    )
                })?,
        };
        let opens_at_ms = parts
            .next()
            .map(|t| {
                t.parse::<u64>()
                    .ok()
                    .filter(|at| *at <= flashsale_core::MAX_OPENS_AT_MS)
                    .ok_or_else(|| {
                        format!(
                            "opening time {t:?} is not Unix milliseconds up to {} (the end of \
                             the year 9999)",
                            flashsale_core::MAX_OPENS_AT_MS
                        )
                    })
            })
            .transpose()?;
        if parts.next().is_some() {
            return Err("expected ID:CAPACITY[:OPENS_AT_UNIX_MS]".into());
        }
        Ok(SaleArg {
            id: id.to_owned(),
            capacity,
            opens_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sale_args() {
        assert_eq!(
            "gig:500:1700000000000".parse::<SaleArg>(),
            Ok(SaleArg {
                id: "gig".into(),
                capacity: 500,
                opens_at_ms: Some(1_700_000_000_000)
            })
        );
        assert_eq!(
            "default".parse::<SaleArg>(),
            Ok(SaleArg {
                id: "default".into(),
                capacity: 200,
                opens_at_ms: None
            })
        );
        for bad in [
            "",
            ":5",
            "a:0",
            "a:-1",
            "a:b",
            "a:1:x",
            "a:1:2:3",
            "a:1:18446744073709551615",
            "a:1:253402300800000",
            "a b:1",
            &"x".repeat(65),
        ] {
            assert!(bad.parse::<SaleArg>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["a:1", "a:1:5", "a:1:253402300799999"] {
            assert_eq!(s.parse::<SaleArg>().unwrap().to_string(), s);
        }
    }
}
