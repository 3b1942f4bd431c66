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

use std::sync::{Mutex, PoisonError};

use flashsale_cluster::Machine;
use flashsale_wal::record::decode_record;
use flashsale_wal::Record;

/// The records every node agrees on. Shared between the Raft state machine
/// (which appends) and the node's leadership (which reads them all once,
/// when it starts to lead).
#[derive(Default)]
pub struct Replica {
    /// A std `Mutex`: taken once per committed batch and once per term,
    /// never on a request's path.
    records: Mutex<Vec<Record>>,
}

impl Replica {
    /// Every record applied so far, in log order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The records of one batch; any damage refuses the whole batch.
pub fn decode_batch(mut bytes: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let (record, used) = decode_record(bytes).map_err(|e| {
            format!(
                "record {} of a replicated batch does not decode: {e}",
                records.len()
            )
        })?;
        records.push(record);
        bytes = bytes.get(used..).unwrap_or_default();
    }
    Ok(records)
}

/// `records`, encoded back to back in the log's framing.
pub fn encode_batch(records: &[Record]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for record in records {
        record.encode_into(&mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

impl Machine for Replica {
    fn apply(&self, batch: &[u8]) -> Result<(), String> {
        let records = decode_batch(batch)?;
        self.lock().extend(records);
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        encode_batch(&self.lock())
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let records = decode_batch(snapshot)?;
        *self.lock() = records;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
