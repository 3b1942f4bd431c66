//! The SQL of the drain: the two tables, and the statements of a batch.
//!
//! `flashsale_tickets` holds one row per sold ticket. `user_id` is the
//! buyer's u64 id bit-cast to a signed `bigint` (`user as i64`): ids up to
//! 2^63 - 1 read as themselves, larger ones as negative numbers, and the
//! cast back (`as u64`) is exact. `sold_at` is the time of sale from the
//! log, to the millisecond.
//!
//! `flashsale_hold_events` holds one row per change of a ticket in a sale
//! with holds (`held`, `confirmed`, `released`), in log order: a ticket
//! can be held, released and held again by someone else, so these sales have
//! no row in `flashsale_tickets`. The row's `log_offset` (the end of its
//! record in `wal.log`) orders the changes and, with `log_id`, is the key:
//! a change is never stored twice. The view `flashsale_holds` is the latest
//! change of every ticket: its current holder and status.
//!
//! `flashsale_drain` holds, per log, the byte offset of `wal.log` up to
//! which every record is in the tables above.

use anyhow::Context;

/// Creates both tables if they do not exist. Idempotent.
pub const CREATE: &str = "\
CREATE TABLE IF NOT EXISTS flashsale_tickets (
    sale     text        NOT NULL,
    ticket   integer     NOT NULL,
    user_id  bigint      NOT NULL,
    sold_at  timestamptz NOT NULL,
    PRIMARY KEY (sale, ticket),
    UNIQUE (sale, user_id)
);
CREATE TABLE IF NOT EXISTS flashsale_drain (
    log_id     text        PRIMARY KEY,
    log_offset bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS flashsale_hold_events (
    log_id      text        NOT NULL,
    log_offset  bigint      NOT NULL,
    sale        text        NOT NULL,
    ticket      integer     NOT NULL,
    user_id     bigint      NOT NULL,
    event       text        NOT NULL CHECK (event IN ('held', 'confirmed', 'released')),
    at          timestamptz NOT NULL,
    expires_at  timestamptz,
    payment_ref text,
    reason      text,
    PRIMARY KEY (log_id, log_offset)
);
CREATE OR REPLACE VIEW flashsale_holds AS
SELECT DISTINCT ON (sale, ticket) sale, ticket, user_id, event AS status, at, expires_at, payment_ref
FROM flashsale_hold_events
ORDER BY sale, ticket, log_offset DESC;";

/// Whether both tables exist (so a role without `CREATE` can drain into
/// tables an administrator made with `migrate`).
pub(crate) const EXISTS: &str = "SELECT to_regclass('flashsale_tickets') IS NOT NULL \
     AND to_regclass('flashsale_drain') IS NOT NULL \
     AND to_regclass('flashsale_hold_events') IS NOT NULL";

/// The stored position of a log: `$1` log id.
pub(crate) const POSITION: &str = "SELECT log_offset FROM flashsale_drain WHERE log_id = $1";

/// Records a new log at its first record: `$1` log id, `$2` offset.
pub(crate) const START: &str = "INSERT INTO flashsale_drain (log_id, log_offset, updated_at) \
     VALUES ($1, $2, now()) ON CONFLICT (log_id) DO NOTHING";

/// One batch's rows, as four parallel arrays: one statement for any number
/// of rows, and no limit on bind parameters.
pub(crate) const INSERT: &str = "\
INSERT INTO flashsale_tickets (sale, ticket, user_id, sold_at)
SELECT s, t, u, timestamptz 'epoch' + ms * interval '1 millisecond'
FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int8[]) AS r(s, t, u, ms)";

/// One batch's changes of held tickets, as parallel arrays: `$1` the log id,
/// then offset, sale, ticket, user, event, time, deadline, payment
/// reference and reason (the last three null where they do not apply).
pub(crate) const INSERT_EVENTS: &str = "\
INSERT INTO flashsale_hold_events
    (log_id, log_offset, sale, ticket, user_id, event, at, expires_at, payment_ref, reason)
SELECT $1, o, s, t, u, e,
       timestamptz 'epoch' + ms * interval '1 millisecond',
       timestamptz 'epoch' + x * interval '1 millisecond',
       p, r
FROM unnest($2::int8[], $3::text[], $4::int4[], $5::int8[], $6::text[], $7::int8[], $8::int8[],
            $9::text[], $10::text[]) AS e_(o, s, t, u, e, ms, x, p, r)";

/// Moves the position from `$3` to `$2` for log `$1`; no row is updated if
/// the stored position is not `$3` (another drain moved it).
pub(crate) const ADVANCE: &str = "UPDATE flashsale_drain SET log_offset = $2, updated_at = now() \
     WHERE log_id = $1 AND log_offset = $3";

/// `flashsale-server migrate`: creates the tables in the database at `url`
/// if they do not exist, and returns.
///
/// # Errors
/// When the URL is malformed, the database cannot be reached, or the
/// statements fail (permissions).
pub fn migrate(sink: &super::SinkConfig) -> anyhow::Result<()> {
    let config = sink.pg_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(|| format!("cannot connect to {}", super::describe(&config)))?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute(CREATE)
            .await
            .context("cannot create the tables")?;
        drop(client);
        let _ = connection.await;
        tracing::info!(database = %super::describe(&config), "schema ready");
        anyhow::Ok(())
    })
}
