//! Redis as a [`Transport`]: the standard flash-sale design, for comparison.
//!
//! A sale is three keys that share one hash tag, so they would live on one
//! cluster slot: `flashsale:{SALE}:stock` (tickets left),
//! `flashsale:{SALE}:capacity` (tickets in the sale) and
//! `flashsale:{SALE}:buyers` (a hash from user id to ticket). A reservation
//! is one call of [`RESERVE_SCRIPT`], which Redis runs atomically: the
//! script is loaded once per connection with `SCRIPT LOAD` and then called
//! by its hash with `EVALSHA`; should Redis forget it (`SCRIPT FLUSH`, a
//! restart), the `NOSCRIPT` reply makes that request load it again and retry.
//!
//! One [`RedisTransport`] is one `MultiplexedConnection` of the `redis`
//! crate, which pipelines every command in flight on one TCP connection, as
//! the native transport does. Each request is a future that owns its
//! command and a handle to the connection; [`Transport::poll`] drives them
//! all and hands back whichever have finished. Redis sets no window, so the
//! driver's own `--window` bounds what is in flight. Redis is not asked to
//! time requests out either: the driver does, the same way for both targets.
//!
//! Redis itself keeps the sale in memory only; how durable it is depends on
//! how the server is configured (`appendonly`, `appendfsync`), which this
//! module leaves alone.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::LazyLock;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context as _;
use flashsale_protocol::ReserveOutcome;
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, RedisError, RedisResult, Script, ServerErrorKind, Value,
};
use tokio::time::Instant;

use crate::check::Answer;
use crate::config::Target;
use crate::transport::{connect_within, ConnectError, SaleSnapshot, Transport};

/// The reservation, run atomically by Redis.
///
/// `KEYS[1]` is the stock, `KEYS[2]` the capacity, `KEYS[3]` the buyer hash;
/// `ARGV[1]` is the user id. The reply is an integer: the ticket (`> 0`) for
/// a win, minus the ticket (`< 0`) for a user who already holds one, `0`
/// when sold out; or the error reply `NOSALE` if the sale has no stock key.
pub const RESERVE_SCRIPT: &str = r"
-- 1. The buyer first: a user who holds a ticket gets the same one back,
--    even once the sale is sold out, and never takes stock twice.
local held = redis.call('HGET', KEYS[3], ARGV[1])
if held then
  return -tonumber(held)
end
-- 2. No stock key: the sale was never set up.
local stock = tonumber(redis.call('GET', KEYS[1]))
if not stock then
  return redis.error_reply('NOSALE sale not set up')
end
-- 3. Nothing left.
if stock <= 0 then
  return 0
end
-- 4. Tickets are numbered in the order they are sold, 1..=capacity.
local capacity = tonumber(redis.call('GET', KEYS[2]))
if not capacity then
  return redis.error_reply('NOSALE sale has no capacity')
end
local ticket = capacity - stock + 1
-- 5. Take the ticket and record its buyer, in the same atomic step.
redis.call('DECR', KEYS[1])
redis.call('HSET', KEYS[3], ARGV[1], ticket)
return ticket
";

/// The script and its SHA-1, computed once.
static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE_SCRIPT));

/// The error code of the script's "no such sale" reply.
const NO_SALE: &str = "NOSALE";

/// The Redis keys of one sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleKeys {
    /// Tickets left (a string holding an integer).
    pub stock: String,
    /// Tickets in the sale (a string holding an integer).
    pub capacity: String,
    /// Buyers: a hash from user id to ticket.
    pub buyers: String,
}

impl SaleKeys {
    /// The keys of `sale`, all under the hash tag `{sale}`.
    pub fn new(sale: &str) -> SaleKeys {
        SaleKeys {
            stock: format!("flashsale:{{{sale}}}:stock"),
            capacity: format!("flashsale:{{{sale}}}:capacity"),
            buyers: format!("flashsale:{{{sale}}}:buyers"),
        }
    }
}

/// What a finished request reports: its id, and its answer or the
/// connection's failure.
type Done = (u64, Result<Answer, io::Error>);

/// A request in flight.
type InFlight = Pin<Box<dyn Future<Output = Done>>>;

/// What every connection to one Redis shares: the client (its URL parsed
/// once) and the sale's keys.
pub struct RedisShared {
    client: Client,
    keys: SaleKeys,
    /// Bytes of a request's arguments other than the user id, to size each
    /// command's buffer once.
    fixed_len: usize,
}

/// One pipelined connection to Redis, reserving in one sale.
pub struct RedisTransport {
    conn: MultiplexedConnection,
    shared: Rc<RedisShared>,
    in_flight: FuturesUnordered<InFlight>,
    /// A connection failure seen while answers were still being handed
    /// back; reported by the next poll.
    broken: Option<io::Error>,
}

impl std::fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTransport")
            .field("keys", &self.shared.keys)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl RedisTransport {
    /// `EVALSHA <hash> 3 <stock> <capacity> <buyers> <user>`, built with
    /// its buffers sized up front.
    fn command(&self, user: u64) -> Cmd {
        let keys = &self.shared.keys;
        let mut cmd = Cmd::with_capacity(7, self.shared.fixed_len + 20);
        cmd.arg("EVALSHA")
            .arg(SCRIPT.get_hash())
            .arg(3)
            .arg(&keys.stock)
            .arg(&keys.capacity)
            .arg(&keys.buyers)
            .arg(user);
        cmd
    }
}

impl Transport for RedisTransport {
    type Shared = RedisShared;

    fn prepare(target: &Target, sale: &str) -> Result<RedisShared, ConnectError> {
        let Target::Redis { url } = target else {
            return Err(ConnectError::Refused("not a Redis target".into()));
        };
        let keys = SaleKeys::new(sale);
        let fixed_len = "EVALSHA".len()
            + SCRIPT.get_hash().len()
            + 1
            + keys.stock.len()
            + keys.capacity.len()
            + keys.buyers.len();
        Ok(RedisShared {
            client: client(url)?,
            keys,
            fixed_len,
        })
    }

    async fn connect(
        shared: &Rc<RedisShared>,
        timeout: Duration,
    ) -> Result<(Self, usize), ConnectError> {
        let attempt = async {
            let mut conn = open(&shared.client).await?;
            SCRIPT
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(connect_error)?;
            Ok::<_, ConnectError>(conn)
        };
        let conn = connect_within(timeout, attempt).await?;
        let transport = RedisTransport {
            conn,
            shared: Rc::clone(shared),
            in_flight: FuturesUnordered::new(),
            broken: None,
        };
        Ok((transport, usize::MAX))
    }

    fn send(&mut self, id: u64, user: u64) {
        let cmd = self.command(user);
        let conn = self.conn.clone();
        self.in_flight
            .push(Box::pin(async move { (id, reserve(conn, cmd).await) }));
    }

    async fn poll(&mut self, until: Instant, answers: &mut Vec<(u64, Answer)>) -> io::Result<()> {
        if let Some(e) = self.broken.take() {
            return Err(e);
        }
        let before = answers.len();
        let in_flight = &mut self.in_flight;
        let broken = &mut self.broken;
        // Take every answer that is ready; finish once there is at least one
        // (or the connection broke), else wait for the next.
        let ready = std::future::poll_fn(|cx| {
            while let Poll::Ready(Some((id, done))) = in_flight.poll_next_unpin(cx) {
                match done {
                    Ok(answer) => answers.push((id, answer)),
                    Err(e) => {
                        *broken = Some(e);
                        break;
                    }
                }
            }
            if answers.len() > before || broken.is_some() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::select! {
            biased;
            () = ready => {}
            () = tokio::time::sleep_until(until) => {}
        }
        // Answers that arrived before the failure are still good: hand them
        // back now and report the failure next time.
        match self.broken.take() {
            Some(e) if answers.len() == before => Err(e),
            e => {
                self.broken = e;
                Ok(())
            }
        }
    }
}

/// Runs one reservation, loading the script again if Redis lost it.
async fn reserve(mut conn: MultiplexedConnection, cmd: Cmd) -> Result<Answer, io::Error> {
    let mut reply = conn.send_packed_command(&cmd).await;
    if matches!(&reply, Ok(Value::ServerError(e)) if e.kind() == Some(ServerErrorKind::NoScript)) {
        reply = match SCRIPT.prepare_invoke().load_async(&mut conn).await {
            Ok(_) => conn.send_packed_command(&cmd).await,
            Err(e) => Err(e),
        };
    }
    answer(reply)
}

/// Maps the script's reply to an answer; `Err` only when the connection is
/// gone.
fn answer(reply: RedisResult<Value>) -> Result<Answer, io::Error> {
    match reply {
        Ok(Value::Int(n)) => Ok(match u32::try_from(n.unsigned_abs()) {
            Ok(0) => Answer::Reserve(ReserveOutcome::SoldOut),
            Ok(ticket) if n > 0 => Answer::Reserve(ReserveOutcome::Won { ticket }),
            Ok(ticket) => Answer::Reserve(ReserveOutcome::AlreadyOwned { ticket }),
            Err(_) => Answer::Error,
        }),
        // Error replies come back as values; only I/O failures are `Err`.
        Ok(Value::ServerError(e)) if e.code() == NO_SALE => {
            Ok(Answer::Reserve(ReserveOutcome::UnknownSale))
        }
        Ok(_) => Ok(Answer::Error),
        Err(e) if e.is_io_error() => Err(io_error(&e)),
        Err(_) => Ok(Answer::Error),
    }
}

/// A client for `url`, which is checked here and never again.
fn client(url: &str) -> Result<Client, ConnectError> {
    Client::open(url).map_err(|e| {
        ConnectError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("Redis URL {url:?}: {e}"),
        ))
    })
}

/// Opens a multiplexed connection. Timeouts are left to the caller, so
/// the crate's own are off.
async fn open(client: &Client) -> Result<MultiplexedConnection, ConnectError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None)
        // Room for a burst of requests between two writes of the
        // connection's task (the crate's default is 50).
        .set_pipeline_buffer_size(4096);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(connect_error)
}

fn connect_error(e: RedisError) -> ConnectError {
    if e.is_timeout() {
        ConnectError::Timeout
    } else if e.is_io_error() {
        ConnectError::Io(io_error(&e))
    } else {
        ConnectError::Refused(e.to_string())
    }
}

/// The crate does not expose the `io::Error` inside its errors; keep the
/// kinds that matter and the message.
fn io_error(e: &RedisError) -> io::Error {
    let kind = if e.is_connection_refusal() {
        io::ErrorKind::ConnectionRefused
    } else if e.is_timeout() {
        io::ErrorKind::TimedOut
    } else if e.is_connection_dropped() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, format!("redis: {e}"))
}

async fn open_for(
    target: &Target,
    timeout: Duration,
) -> anyhow::Result<(MultiplexedConnection, &str)> {
    let Target::Redis { url } = target else {
        anyhow::bail!("not a Redis target: {target:?}");
    };
    let conn = connect_within(timeout, async { open(&client(url)?).await })
        .await
        .with_context(|| format!("connecting to Redis at {url}"))?;
    Ok((conn, url))
}

/// Reads `sale`'s capacity and remaining stock from Redis.
///
/// # Errors
///
/// Redis cannot be reached or answers late, or the sale is not set up (see
/// [`reset`]).
pub async fn snapshot(
    target: &Target,
    sale: &str,
    timeout: Duration,
) -> anyhow::Result<SaleSnapshot> {
    let (mut conn, url) = open_for(target, timeout).await?;
    let keys = SaleKeys::new(sale);
    let mut mget = redis::cmd("MGET");
    mget.arg(&keys.capacity).arg(&keys.stock);
    let read = mget.query_async::<(Option<i64>, Option<i64>)>(&mut conn);
    let (capacity, stock) = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| anyhow::anyhow!("Redis at {url} did not answer within {timeout:?}"))?
        .with_context(|| format!("reading sale {sale:?} from Redis at {url}"))?;
    let (Some(capacity), Some(stock)) = (capacity, stock) else {
        anyhow::bail!(
            "sale {sale:?} is not set up in Redis at {url}: keys {} and {} must both exist (reset the sale first)",
            keys.capacity,
            keys.stock
        );
    };
    let capacity = u32::try_from(capacity)
        .with_context(|| format!("{} holds {capacity}, not a ticket count", keys.capacity))?;
    // A stock below zero cannot come from the script; report it as none left.
    let remaining = u32::try_from(stock.max(0))
        .with_context(|| format!("{} holds {stock}, not a ticket count", keys.stock))?;
    Ok(SaleSnapshot {
        capacity,
        remaining,
    })
}

/// Makes `sale` a fresh sale of `capacity` tickets: stock and capacity set,
/// no buyers. Atomic (`MULTI`/`EXEC`).
///
/// # Errors
///
/// Redis cannot be reached, answers late, or refuses the writes.
pub async fn reset(
    target: &Target,
    sale: &str,
    capacity: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (mut conn, url) = open_for(target, timeout).await?;
    let keys = SaleKeys::new(sale);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .set(&keys.capacity, capacity)
        .ignore()
        .set(&keys.stock, capacity)
        .ignore()
        .del(&keys.buyers)
        .ignore();
    tokio::time::timeout(timeout, pipe.query_async::<()>(&mut conn))
        .await
        .map_err(|_| anyhow::anyhow!("Redis at {url} did not answer within {timeout:?}"))?
        .with_context(|| format!("resetting sale {sale:?} in Redis at {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = SaleKeys::new("spring");
        assert_eq!(keys.stock, "flashsale:{spring}:stock");
        assert_eq!(keys.capacity, "flashsale:{spring}:capacity");
        assert_eq!(keys.buyers, "flashsale:{spring}:buyers");
    }

    #[test]
    fn replies_map_to_answers() {
        let reserved = |n| match answer(Ok(Value::Int(n))).unwrap() {
            Answer::Reserve(outcome) => Some(outcome),
            _ => None,
        };
        assert_eq!(reserved(3), Some(ReserveOutcome::Won { ticket: 3 }));
        assert_eq!(
            reserved(-3),
            Some(ReserveOutcome::AlreadyOwned { ticket: 3 })
        );
        assert_eq!(reserved(0), Some(ReserveOutcome::SoldOut));
        assert_eq!(answer(Ok(Value::Int(1 << 40))).unwrap(), Answer::Error);
        assert_eq!(answer(Ok(Value::Nil)).unwrap(), Answer::Error);
        let broken = RedisError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(answer(Err(broken)).is_err());
    }
}
