//! The SQL of the drain: the two tables, and the statements of a batch.
//!
//! `flashsale_tickets` holds one row per sold ticket. `user_id` is the
//! buyer's u64 id bit-cast to a signed `bigint` (`user as i64`): ids up to
//! 2^63 - 1 read as themselves, larger ones as negative numbers, and the
//! cast back (`as u64`) is exact. `sold_at` is the time of sale from the
//! log, to the millisecond.
//!
//! `flashsale_drain` holds, per log, the byte offset of `wal.log` up to
//! which every record is in `flashsale_tickets`.

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
);";

/// Whether both tables exist (so a role without `CREATE` can drain into
/// tables an administrator made with `migrate`).
pub(crate) const EXISTS: &str = "SELECT to_regclass('flashsale_tickets') IS NOT NULL \
     AND to_regclass('flashsale_drain') IS NOT NULL";

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
pub fn migrate(url: &str) -> anyhow::Result<()> {
    let config = super::SinkConfig::new(url).pg_config()?;
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
