//! What a node of a cluster replicates: the log records of every sale, in
//! log order, folded from the committed Raft entries.
//!
//! Each entry is one group commit of the leader's write-ahead log: records
//! in the log's own framing (`docs/WAL.md`), each with its CRC. The replica
//! keeps them as a single node's log keeps them, so a node that becomes
//! leader builds its sales exactly as a restart does from `wal.log`
//! ([`crate::catalog`]): one way of turning records into sales, whichever
//! disk they came from.
//!
//! A snapshot is those records, encoded back to back in the same framing:
//! the state of every sale (its definition, its winners, its holds, its
//! draw's entrants, the operator's last word), with no Raft entry or term
//! in it. A node that lost its data directory installs it and is caught up;
//! it never replays the cluster's log from its first entry.
//!
//! **The replica log, for the drain.** With `--sink`, the node also keeps
//! the records in a file laid out exactly as a single node's `wal.log`
//! ([`REPLICA_LOG_FILE_NAME`]): the same header, then every committed
//! record in order. Every node's file holds the same bytes, so a byte
//! offset names the same record on every node, and the PostgreSQL drain of
//! whichever node leads resumes at the position its predecessor stored, in
//! the same transaction as the rows: exactly once across failovers. The
//! file needs no sync of its own (the records are durable in the Raft
//! log): it is rewritten whole whenever the state is restored (at start,
//! from a snapshot) and appended to as batches are applied.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use flashsale_cluster::Machine;
use flashsale_wal::record::{decode_record, file_header};
use flashsale_wal::Record;
use sha2::{Digest, Sha256};

/// Name of the replica log in a node's data directory.
pub const REPLICA_LOG_FILE_NAME: &str = "replica.log";

/// The records every node agrees on. Shared between the Raft state machine
/// (which appends) and the node's leadership (which reads them all once,
/// when it starts to lead).
#[derive(Default)]
pub struct Replica {
    /// A std `Mutex`: taken once per committed batch and once per term,
    /// never on a request's path.
    state: Mutex<State>,
    /// Bytes of the replica log written: what the drain may read.
    end: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    /// Every record applied, encoded as the log encodes them, back to
    /// back: a third of the memory of the decoded records, which are needed
    /// only when a term starts ([`Replica::records`]); and a snapshot's
    /// bytes as they are.
    encoded: Vec<u8>,
    /// The first record, encoded (part of the drain's id).
    first: Option<Vec<u8>>,
    /// The replica log, when the node drains into PostgreSQL.
    log: Option<(PathBuf, Option<File>)>,
}

impl Replica {
    /// A replica that also keeps the replica log at `path` (rewritten at
    /// the first restore, or now, empty).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn with_log(path: &Path) -> std::io::Result<Replica> {
        let replica = Replica::default();
        {
            let mut state = replica.lock();
            state.log = Some((path.to_owned(), None));
            replica
                .rewrite(&mut state, &[])
                .map_err(std::io::Error::other)?;
        }
        Ok(replica)
    }

    /// Every record applied so far, in log order.
    pub fn records(&self) -> Vec<Record> {
        // Each batch was decoded whole when it was applied.
        decode_batch(&self.lock().encoded).unwrap_or_default()
    }

    /// How far the replica log is written, for the drain.
    pub fn end(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.end)
    }

    /// The id under which the cluster's drain position is stored: the same
    /// on every node of `cluster` (its members, spelled canonically), and
    /// different for another cluster, even on the same addresses, because
    /// the first record (a sale's definition, with its creation time) is
    /// part of it. `None` until there is a record.
    pub fn drain_id(&self, cluster: &str) -> Option<String> {
        let state = self.lock();
        let first = state.first.as_ref()?;
        let digest = Sha256::new()
            .chain_update(cluster.as_bytes())
            .chain_update(first)
            .finalize();
        Some(hex::encode(&digest[..16]))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the replica log's contents by `body` (records, encoded).
    fn rewrite(&self, state: &mut State, body: &[u8]) -> Result<(), String> {
        let Some((path, file)) = &mut state.log else {
            return Ok(());
        };
        let mut new = File::create(&*path).map_err(|e| format!("{}: {e}", path.display()))?;
        new.write_all(&file_header())
            .and_then(|()| new.write_all(body))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        *file = Some(new);
        self.end
            .store((file_header().len() + body.len()) as u64, Ordering::Release);
        Ok(())
    }

    /// Appends `batch` (records, encoded) to the replica log.
    fn append(&self, state: &mut State, batch: &[u8]) -> Result<(), String> {
        let Some((path, Some(file))) = &mut state.log else {
            return Ok(());
        };
        file.write_all(batch)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.end.fetch_add(batch.len() as u64, Ordering::Release);
        Ok(())
    }
}

/// The records of one batch; any damage refuses the whole batch.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    walk_batch(bytes, |record| records.push(record))?;
    Ok(records)
}

/// Decodes every record of `bytes`, handing each to `each`, and counts
/// them. A batch is checked this way before it is kept encoded, with no
/// list of records built only to be dropped.
fn walk_batch(mut bytes: &[u8], mut each: impl FnMut(Record)) -> Result<usize, String> {
    let mut count = 0;
    while !bytes.is_empty() {
        let (record, used) = decode_record(bytes)
            .map_err(|e| format!("record {count} of a replicated batch does not decode: {e}"))?;
        each(record);
        count += 1;
        bytes = bytes.get(used..).unwrap_or_default();
    }
    Ok(count)
}

/// The first record's encoding in `encoded`, if it holds one.
fn first_of(encoded: &[u8]) -> Option<Vec<u8>> {
    let (_, used) = decode_record(encoded).ok()?;
    encoded.get(..used).map(<[u8]>::to_vec)
}

impl Machine for Replica {
    fn apply(&self, batch: &[u8]) -> Result<(), String> {
        // Decoded to refuse a damaged batch whole; kept encoded.
        walk_batch(batch, drop)?;
        let mut state = self.lock();
        self.append(&mut state, batch)?;
        if state.first.is_none() {
            state.first = first_of(batch);
        }
        state.encoded.extend_from_slice(batch);
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.lock().encoded.clone())
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        walk_batch(snapshot, drop)?;
        let mut state = self.lock();
        self.rewrite(&mut state, snapshot)?;
        state.first = first_of(snapshot);
        state.encoded = snapshot.to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `records`, encoded back to back in the log's framing.
    fn encode_batch(records: &[Record]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for record in records {
            record.encode_into(&mut out).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    fn sold(ticket: u32, user: u64) -> Record {
        Record::TicketSold {
            sale: "gig".into(),
            ticket,
            user,
            at_ms: 5,
        }
    }

    #[test]
    fn batches_apply_in_order_and_a_snapshot_restores_them() -> Result<(), String> {
        let replica = Replica::default();
        let defined = Record::SaleDefined {
            sale: "gig".into(),
            capacity: 2,
            opens_at_ms: 0,
        };
        replica.apply(&encode_batch(&[defined.clone(), sold(1, 10)])?)?;
        replica.apply(&encode_batch(&[sold(2, 20)])?)?;
        let want = vec![defined, sold(1, 10), sold(2, 20)];
        assert_eq!(replica.records(), want);

        let other = Replica::default();
        other.apply(&encode_batch(&[sold(9, 9)])?)?;
        other.restore(&replica.snapshot()?)?;
        assert_eq!(other.records(), want, "a snapshot replaces the state");
        Ok(())
    }

    #[test]
    fn the_replica_log_reads_back_as_a_single_nodes_log() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join(REPLICA_LOG_FILE_NAME);
        let replica = Replica::with_log(&path).map_err(|e| e.to_string())?;
        replica.apply(&encode_batch(&[sold(9, 9)])?)?;
        // A snapshot replaces the file; later batches are appended.
        replica.restore(&encode_batch(&[sold(1, 10)])?)?;
        replica.apply(&encode_batch(&[sold(2, 20), sold(3, 30)])?)?;
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        assert_eq!(bytes.len() as u64, replica.end().load(Ordering::Acquire));
        let scan = flashsale_wal::recovery::scan(&bytes).map_err(|e| e.to_string())?;
        assert_eq!(scan.records, vec![sold(1, 10), sold(2, 20), sold(3, 30)]);
        assert_eq!(scan.damage, None);
        Ok(())
    }

    #[test]
    fn the_drain_id_is_the_clusters_and_its_first_records() -> Result<(), String> {
        let (a, b) = (Replica::default(), Replica::default());
        assert_eq!(a.drain_id("1=x:1"), None);
        a.apply(&encode_batch(&[sold(1, 10), sold(2, 20)])?)?;
        b.apply(&encode_batch(&[sold(1, 10)])?)?;
        let id = a.drain_id("1=x:1").unwrap_or_default();
        assert_eq!(id.len(), 32);
        assert_eq!(
            b.drain_id("1=x:1"),
            Some(id.clone()),
            "the same on every node"
        );
        assert_ne!(a.drain_id("1=x:2"), Some(id.clone()), "another cluster");
        let c = Replica::default();
        c.apply(&encode_batch(&[sold(1, 11)])?)?;
        assert_ne!(c.drain_id("1=x:1"), Some(id), "another first record");
        Ok(())
    }

    #[test]
    fn a_damaged_batch_is_refused_whole() -> Result<(), String> {
        let replica = Replica::default();
        let batch = encode_batch(&[sold(1, 10), sold(2, 20)])?;
        let first = encode_batch(&[sold(1, 10)])?.len();
        for cut in (1..batch.len()).filter(|cut| *cut != first) {
            assert!(replica.apply(&batch[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = batch.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(replica.apply(&flipped).is_err());
        assert!(replica.records().is_empty(), "nothing of a refused batch");
        Ok(())
    }
}
