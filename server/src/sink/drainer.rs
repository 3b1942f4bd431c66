//! The drain loop: connect, find the stored position, then read durable
//! records and write them in transactions of one batch each; on any
//! failure, drop the connection and retry with capped exponential backoff.

use std::collections::VecDeque;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};
use tokio_util::sync::CancellationToken;

use super::schema;
use super::tail::{Event, Row, Tail};
use super::{describe, End, SinkConfig, SinkError};
use flashsale_core::clock::now_ms;
use flashsale_metrics as metrics;
use flashsale_wal::record::FILE_HEADER_LEN;

/// Why a step failed.
enum Failure {
    /// The database cannot be used right now: retry later.
    Retry(String),
    /// Retrying cannot help; an operator must look.
    Fatal(SinkError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = pg_error(&e);
        // Class 23 is integrity: the same rows would fail again, and a
        // unique violation means the table already holds a ticket or a buyer
        // that the log gives to this batch.
        match e.code() {
            Some(code) if code.code().starts_with("23") => {
                let hint = if *code == SqlState::UNIQUE_VIOLATION {
                    "; the table already holds a ticket or a buyer of this batch \
                     (drained from another log, or written by something else)"
                } else {
                    ""
                };
                Failure::Fatal(SinkError::Disagree(format!("{text}{hint}")))
            }
            _ => Failure::Retry(text),
        }
    }
}

impl From<SinkError> for Failure {
    fn from(e: SinkError) -> Self {
        Failure::Fatal(e)
    }
}

/// A PostgreSQL error with the server's message, which the plain `Display`
/// of `tokio_postgres::Error` leaves out.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(" (");
                text.push_str(detail);
                text.push(')');
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// An open connection with the batch statements prepared.
struct Conn {
    client: Client,
    insert: Statement,
    insert_events: Statement,
    advance: Statement,
}

/// The drain's state, owned by its thread.
pub(crate) struct Drainer {
    config: SinkConfig,
    pg: tokio_postgres::Config,
    log_id: String,
    tail: Tail,
    durable: Box<dyn End>,
    /// Sold tickets read from the log and not yet committed, in log order.
    pending: VecDeque<Row>,
    /// The position stored in the database, as of this drain's last
    /// successful read or commit; `None` before the first connection.
    committed: Option<u64>,
    /// Whether the last attempt failed (to log the recovery once).
    failing: bool,
}

impl Drainer {
    pub(crate) fn new(
        config: SinkConfig,
        pg: tokio_postgres::Config,
        log_id: String,
        tail: Tail,
        durable: Box<dyn End>,
    ) -> Self {
        Drainer {
            config,
            pg,
            log_id,
            tail,
            durable,
            pending: VecDeque::new(),
            committed: None,
            failing: false,
        }
    }

    /// Drains until `stop` is cancelled, then writes what is left in the log
    /// for at most the configured grace, or until a fatal error.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        metrics::sink_started();
        let grace = self.config.shutdown_grace;
        let outcome = tokio::select! {
            outcome = self.drain(&stop) => outcome,
            () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "the PostgreSQL drain ran out of shutdown grace");
                Ok(())
            }
        };
        metrics::sink_running(false);
        if let Err(error) = outcome {
            metrics::sink_error();
            tracing::error!(
                %error,
                "the PostgreSQL drain has STOPPED: reservations go on and the log keeps every ticket, \
                 but nothing more reaches the database until this is fixed and the server restarted"
            );
        }
    }

    async fn drain(&mut self, stop: &CancellationToken) -> Result<(), SinkError> {
        let mut backoff = self.config.min_backoff;
        let mut conn: Option<Conn> = None;
        loop {
            self.refresh()?;
            let attempt = if let Some(c) = conn.as_mut() {
                if self.pending.is_empty() {
                    if stop.is_cancelled() {
                        return Ok(());
                    }
                    tokio::select! {
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                        () = stop.cancelled() => {}
                    }
                    continue;
                }
                self.write_batch(c).await
            } else {
                if stop.is_cancelled() {
                    // The database was unreachable: nothing to finish.
                    return Ok(());
                }
                self.connect().await.map(|c| conn = Some(c))
            };
            match attempt {
                Ok(()) => {
                    if std::mem::take(&mut self.failing) {
                        tracing::info!(
                            lag_records = self.pending.len(),
                            "PostgreSQL is writable again; catching up"
                        );
                    }
                    backoff = self.config.min_backoff;
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(error)) => {
                    conn = None;
                    self.failing = true;
                    metrics::sink_error();
                    let (records, seconds) = self.lag();
                    tracing::warn!(
                        %error,
                        lag_records = records,
                        lag_seconds = seconds,
                        retry_in = ?backoff,
                        "cannot write to PostgreSQL; reservations go on, the log holds the backlog"
                    );
                    if stop.is_cancelled() || self.pause(backoff, stop).await? {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    /// Sleeps `total`, reading new durable records and refreshing the lag
    /// every second meanwhile. True if `stop` was cancelled.
    async fn pause(
        &mut self,
        total: Duration,
        stop: &CancellationToken,
    ) -> Result<bool, SinkError> {
        let deadline = tokio::time::Instant::now() + total;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let slice = (deadline - now).min(Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep(slice) => {}
                () = stop.cancelled() => return Ok(true),
            }
            self.refresh()?;
        }
    }

    /// Reads what became durable since the last call, and publishes the lag.
    fn refresh(&mut self) -> Result<(), SinkError> {
        if self.committed.is_some() {
            self.tail.read_to(self.durable.get(), &mut self.pending)?;
        }
        if self.committed.is_some() || !self.pending.is_empty() {
            let (records, seconds) = self.lag();
            metrics::sink_lag(records, seconds);
        }
        Ok(())
    }

    /// Records not yet in the database, and the age in seconds of the
    /// oldest of them.
    fn lag(&self) -> (usize, f64) {
        let seconds = self.pending.front().map_or(0.0, |row| {
            now_ms().saturating_sub(row.at_ms) as f64 / 1000.0
        });
        (self.pending.len(), seconds)
    }

    /// Connects, makes sure the tables exist, prepares the batch statements
    /// and resumes from the stored position.
    async fn connect(&mut self) -> Result<Conn, Failure> {
        let (client, connection) = self.pg.connect(NoTls).await.map_err(|e| {
            Failure::Retry(format!(
                "cannot connect to {}: {}",
                describe(&self.pg),
                pg_error(&e)
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        metrics::sink_statements(1);
        let exists: bool = client.query_one(schema::EXISTS, &[]).await?.try_get(0)?;
        if !exists {
            metrics::sink_statements(2);
            client.batch_execute(schema::CREATE).await?;
            tracing::info!("created the tables flashsale_tickets and flashsale_drain");
        }
        let insert = client.prepare(schema::INSERT).await?;
        let insert_events = client.prepare(schema::INSERT_EVENTS).await?;
        let advance = client.prepare(schema::ADVANCE).await?;
        let stored = self.stored_position(&client).await?;
        if self.committed != Some(stored) {
            // First connection, or a commit whose outcome was lost with the
            // connection: trust only the database.
            self.tail.seek(stored, self.durable.get())?;
            self.pending.clear();
            self.committed = Some(stored);
            tracing::info!(
                log_offset = stored,
                "resuming the drain from the stored position"
            );
            self.refresh()?;
        }
        Ok(Conn {
            client,
            insert,
            insert_events,
            advance,
        })
    }

    async fn stored_position(&self, client: &Client) -> Result<u64, Failure> {
        metrics::sink_statements(1);
        let row = client.query_opt(schema::POSITION, &[&self.log_id]).await?;
        let stored: i64 = match row {
            Some(row) => row.try_get(0)?,
            None => {
                let first = FILE_HEADER_LEN as i64;
                metrics::sink_statements(1);
                client
                    .execute(schema::START, &[&self.log_id, &first])
                    .await?;
                first
            }
        };
        u64::try_from(stored).map_err(|_| {
            Failure::Fatal(SinkError::Disagree(format!(
                "flashsale_drain holds a negative position {stored} for log {}",
                self.log_id
            )))
        })
    }

    /// Writes the first rows of `pending` in one transaction that also moves
    /// the stored position past them; forgets them once committed.
    async fn write_batch(&mut self, conn: &mut Conn) -> Result<(), Failure> {
        let n = self.pending.len().min(self.config.max_batch_rows.max(1));
        let from = self.committed.unwrap_or(FILE_HEADER_LEN as u64);
        let to = if n == self.pending.len() {
            // Also covers records after the last ticket (sale definitions).
            self.tail.pos()
        } else {
            self.pending.get(n - 1).map_or(from, |row| row.end)
        };
        let mut sold = Columns::default();
        let mut events = Columns::default();
        for row in self.pending.range(..n) {
            match &row.event {
                Event::Sold => sold.push(row)?,
                _ => events.push(row)?,
            }
        }
        let offset =
            |o: u64| i64::try_from(o).map_err(|_| Failure::Retry("offset overflow".into()));
        let (from_i, to_i) = (offset(from)?, offset(to)?);

        metrics::sink_statements(1);
        let tx = conn.client.transaction().await?;
        if !sold.sales.is_empty() {
            metrics::sink_statements(1);
            tx.execute(
                &conn.insert,
                &[&sold.sales, &sold.tickets, &sold.users, &sold.times],
            )
            .await?;
        }
        if !events.sales.is_empty() {
            metrics::sink_statements(1);
            tx.execute(
                &conn.insert_events,
                &[
                    &self.log_id,
                    &events.offsets,
                    &events.sales,
                    &events.tickets,
                    &events.users,
                    &events.kinds,
                    &events.times,
                    &events.expires,
                    &events.refs,
                    &events.reasons,
                ],
            )
            .await?;
        }
        metrics::sink_statements(1);
        let moved = tx
            .execute(&conn.advance, &[&self.log_id, &to_i, &from_i])
            .await?;
        if moved != 1 {
            return Err(Failure::Fatal(SinkError::Disagree(format!(
                "the stored position of log {} is no longer {from}: another drain is writing \
                 this log's tickets (a copied data directory?)",
                self.log_id
            ))));
        }
        metrics::sink_statements(1);
        tx.commit().await?;
        self.pending.drain(..n);
        self.committed = Some(to);
        metrics::sink_rows(n as u64);
        let (records, seconds) = self.lag();
        metrics::sink_lag(records, seconds);
        Ok(())
    }
}

/// One batch's rows of one table, as the parallel arrays its statement binds.
#[derive(Default)]
struct Columns<'a> {
    sales: Vec<&'a str>,
    tickets: Vec<i32>,
    users: Vec<i64>,
    times: Vec<i64>,
    /// Hold changes only: the record's end offset, the event and its fields.
    offsets: Vec<i64>,
    kinds: Vec<&'static str>,
    expires: Vec<Option<i64>>,
    refs: Vec<Option<&'a str>>,
    reasons: Vec<Option<&'static str>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, row: &'a Row) -> Result<(), Failure> {
        let out_of_range = |what: &str| {
            Failure::Fatal(SinkError::Disagree(format!(
                "{what} of ticket {} of sale {:?} does not fit the table",
                row.ticket, row.sale
            )))
        };
        let signed = |value: u64, what: &str| i64::try_from(value).map_err(|_| out_of_range(what));
        self.sales.push(row.sale.as_str());
        self.tickets
            .push(i32::try_from(row.ticket).map_err(|_| out_of_range("the number"))?);
        // Documented bit-cast: u64 ids above i64::MAX are stored negative.
        self.users.push(row.user as i64);
        self.times.push(signed(row.at_ms, "the time")?);
        let (kind, expires, payment_ref, reason) = match &row.event {
            Event::Sold => return Ok(()),
            Event::Held { expires_at_ms } => (
                "held",
                Some(signed(*expires_at_ms, "the deadline")?),
                None,
                None,
            ),
            Event::Confirmed { payment_ref } => {
                ("confirmed", None, Some(payment_ref.as_str()), None)
            }
            Event::Released { reason } => ("released", None, None, Some(reason.label())),
        };
        self.offsets.push(signed(row.end, "the log offset")?);
        self.kinds.push(kind);
        self.expires.push(expires);
        self.refs.push(payment_ref);
        self.reasons.push(reason);
        Ok(())
    }
}
