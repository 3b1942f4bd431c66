//! Recovery against every truncation and every single-byte corruption of
//! random logs: on the pure scanner exhaustively, on real files by sampling.
//!
//! A cut or flip inside the 12-byte file header is refused with
//! `BadHeader` (the log is created atomically, so a short or wrong header
//! is never a crash artefact). Anywhere after it, recovery keeps exactly the
//! whole records before the first damaged one.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use flashsale_wal::record::{file_header, FILE_HEADER_LEN};
use flashsale_wal::recovery::{scan, ScanError};
use flashsale_wal::{recover, Durability, NoHook, Record, WalConfig, WalError, LOG_FILE_NAME};
use proptest::prelude::*;

fn any_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        1 => ("[a-z]{0,6}", any::<u32>(), any::<u64>()).prop_map(|(sale, capacity, opens_at_ms)| {
            Record::SaleDefined { sale, capacity, opens_at_ms }
        }),
        4 => ("[a-zé]{0,6}", any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(sale, ticket, user, at_ms)| Record::TicketSold { sale, ticket, user, at_ms }
        ),
        1 => (0x80u8.., proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(kind, payload)| Record::Unknown { kind, payload }),
    ]
}

/// A whole log and the file offset where each record ends.
fn build_log(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = file_header().to_vec();
    let mut ends = Vec::with_capacity(records.len());
    for record in records {
        record.encode_into(&mut bytes).unwrap();
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// Records that end at or before `offset`.
fn whole_before(records: &[Record], ends: &[usize], offset: usize) -> Vec<Record> {
    let n = ends.iter().take_while(|&&end| end <= offset).count();
    records[..n].to_vec()
}

/// Start offset of the record that contains byte `pos` (after the header).
fn record_start(ends: &[usize], pos: usize) -> usize {
    ends.iter()
        .copied()
        .take_while(|&end| end <= pos)
        .last()
        .unwrap_or(FILE_HEADER_LEN)
}

fn write_log(dir: &Path, bytes: &[u8]) {
    fs::write(dir.join(LOG_FILE_NAME), bytes).unwrap();
}

fn log_len(dir: &Path) -> u64 {
    fs::metadata(dir.join(LOG_FILE_NAME)).unwrap().len()
}

fn records() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(any_record(), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_cut_keeps_exactly_the_whole_records(records in records()) {
        let (bytes, ends) = build_log(&records);
        for cut in 0..=bytes.len() {
            match scan(&bytes[..cut]) {
                Err(ScanError::Header(_)) => prop_assert!(cut < FILE_HEADER_LEN),
                Err(e) => prop_assert!(false, "cut {}: {}", cut, e),
                Ok(scan) => {
                    prop_assert!(cut >= FILE_HEADER_LEN);
                    let kept = whole_before(&records, &ends, cut);
                    let valid_len = kept.len().checked_sub(1).map_or(FILE_HEADER_LEN, |i| ends[i]);
                    prop_assert_eq!(scan.valid_len as usize, valid_len);
                    prop_assert_eq!(scan.damage.is_some(), scan.valid_len as usize != cut);
                    prop_assert_eq!(scan.records, kept);
                }
            }
        }
    }

    #[test]
    fn every_byte_flip_keeps_the_records_before_it(
        records in records(),
        mask in 1u8..,
    ) {
        let (bytes, ends) = build_log(&records);
        for pos in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[pos] ^= mask;
            match scan(&damaged) {
                Err(ScanError::Header(_)) => prop_assert!(pos < FILE_HEADER_LEN),
                Err(e) => prop_assert!(false, "flip at {}: {}", pos, e),
                Ok(scan) => {
                    prop_assert!(pos >= FILE_HEADER_LEN);
                    let start = record_start(&ends, pos);
                    prop_assert_eq!(scan.valid_len as usize, start);
                    prop_assert_eq!(scan.damage.map(|d| d.offset as usize), Some(start));
                    prop_assert_eq!(scan.records, whole_before(&records, &ends, start));
                }
            }
        }
    }

    #[test]
    fn scan_never_panics_on_garbage(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = file_header().to_vec();
        bytes.extend_from_slice(&tail);
        let _ = scan(&bytes);
    }
}

proptest! {
    // Real files and syncs: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn cut_log_recovers_then_appends_after_the_good_prefix(
        records in records(),
        more in proptest::collection::vec(any_record(), 1..4),
        cut_at in any::<proptest::sample::Index>(),
    ) {
        let (bytes, ends) = build_log(&records);
        let cut = FILE_HEADER_LEN + cut_at.index(bytes.len() - FILE_HEADER_LEN + 1);
        let tmp = tempfile::tempdir().unwrap();
        write_log(tmp.path(), &bytes[..cut]);

        let kept = whole_before(&records, &ends, cut);
        let config = WalConfig::default_for(tmp.path()).durability(Durability::None);
        let (wal, recovered) = config.open(Arc::new(NoHook)).unwrap();
        prop_assert_eq!(&recovered, &kept);
        for record in &more {
            wal.append_durable(record.clone()).unwrap();
        }
        wal.shutdown().unwrap();

        let again = recover(tmp.path()).unwrap();
        prop_assert!(again.discarded.is_none());
        prop_assert_eq!(again.end_offset, log_len(tmp.path()));
        let expected: Vec<Record> = kept.into_iter().chain(more).collect();
        prop_assert_eq!(again.records, expected);
    }

    #[test]
    fn flipped_log_on_disk_is_truncated_and_the_tail_kept_aside(
        records in proptest::collection::vec(any_record(), 1..8),
        at in any::<proptest::sample::Index>(),
        mask in 1u8..,
    ) {
        let (bytes, ends) = build_log(&records);
        let pos = FILE_HEADER_LEN + at.index(bytes.len() - FILE_HEADER_LEN);
        let mut damaged = bytes.clone();
        damaged[pos] ^= mask;
        let tmp = tempfile::tempdir().unwrap();
        write_log(tmp.path(), &damaged);

        let recovered = recover(tmp.path()).unwrap();
        let start = record_start(&ends, pos);
        prop_assert_eq!(recovered.records, whole_before(&records, &ends, start));
        prop_assert_eq!(recovered.end_offset as usize, start);
        prop_assert_eq!(log_len(tmp.path()) as usize, start);
        let discarded = recovered.discarded.unwrap();
        prop_assert_eq!(fs::read(&discarded.side_file).unwrap(), &damaged[start..]);
    }
}

/// The exhaustive cut test once more on real files, for one fixed log.
#[test]
fn every_cut_of_a_real_file_recovers() {
    let records = [
        Record::SaleDefined {
            sale: "gig".into(),
            capacity: 200,
            opens_at_ms: 5,
        },
        Record::TicketSold {
            sale: "gig".into(),
            ticket: 0,
            user: 7,
            at_ms: 6,
        },
        Record::Unknown {
            kind: 0xa0,
            payload: vec![9; 3],
        },
        Record::TicketSold {
            sale: "gig".into(),
            ticket: 1,
            user: 8,
            at_ms: 7,
        },
    ];
    let (bytes, ends) = build_log(&records);
    let tmp = tempfile::tempdir().unwrap();
    for cut in 0..=bytes.len() {
        write_log(tmp.path(), &bytes[..cut]);
        match recover(tmp.path()) {
            Err(WalError::BadHeader { .. }) => assert!(cut < FILE_HEADER_LEN, "cut {cut}"),
            Err(e) => panic!("cut {cut}: {e}"),
            Ok(recovered) => {
                assert_eq!(
                    recovered.records,
                    whole_before(&records, &ends, cut),
                    "cut {cut}"
                );
                assert_eq!(recovered.end_offset, log_len(tmp.path()));
                assert_eq!(
                    recovered.discarded.is_some(),
                    recovered.end_offset as usize != cut
                );
            }
        }
    }
}
