//! Arbitrary bytes as a log file, through recovery's pure `scan`.
//!
//! Checked: nothing panics; a scan that succeeds keeps a prefix of the file
//! (`header <= valid_len <= len`) that its records re-encode to exactly, byte
//! for byte; damage is reported exactly when that prefix is not the whole
//! file, and at its end; cutting the file at the last record boundary, or one
//! byte short of it, gives the records before; and a record appended where
//! the next append would go (at `valid_len`, the damaged tail cut) is read
//! back after the old ones, with nothing damaged.

#![no_main]

use flashsale_wal::record::{Record, FILE_HEADER_LEN};
use flashsale_wal::recovery::scan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    let Ok(found) = scan(file) else {
        return;
    };
    let valid_len = usize::try_from(found.valid_len).expect("valid_len fits in memory");
    assert!(
        (FILE_HEADER_LEN..=file.len()).contains(&valid_len),
        "valid_len {valid_len} outside {FILE_HEADER_LEN}..={}",
        file.len()
    );
    match &found.damage {
        Some(damage) => {
            assert_eq!(
                damage.offset, found.valid_len,
                "damage starts where valid bytes end"
            );
            assert!(
                valid_len < file.len(),
                "damage reported past the end of the file"
            );
        }
        None => assert_eq!(valid_len, file.len(), "undamaged file not read to its end"),
    }

    let mut encoded = file[..FILE_HEADER_LEN].to_vec();
    let mut last_boundary = FILE_HEADER_LEN;
    for record in &found.records {
        last_boundary = encoded.len();
        record
            .encode_into(&mut encoded)
            .unwrap_or_else(|e| panic!("a recovered record does not re-encode: {e}: {record:?}"));
    }
    assert!(
        encoded == file[..valid_len],
        "records re-encode to other bytes than the valid prefix"
    );

    if let Some((_, before_last)) = found.records.split_last() {
        let cut = scan(&file[..last_boundary]).expect("a prefix of a readable log is readable");
        assert_eq!(cut.records, before_last);
        assert_eq!(cut.damage, None);
        let torn = scan(&file[..valid_len - 1]).expect("a torn log is readable");
        assert_eq!(torn.records, before_last);
        assert_eq!(torn.valid_len, last_boundary as u64);
        assert!(torn.damage.is_some(), "a torn last record is damage");
    }

    let appended = next_record(file, found.records.len());
    let mut grown = file[..valid_len].to_vec();
    appended
        .encode_into(&mut grown)
        .expect("the appended record encodes");
    let again = scan(&grown).expect("a log with an appended record is readable");
    assert_eq!(again.damage, None);
    assert_eq!(again.valid_len, grown.len() as u64);
    let (last, old) = again
        .records
        .split_last()
        .expect("at least the appended record");
    assert_eq!(old, found.records);
    assert_eq!(last, &appended);
});

/// A record of one of the kinds the server writes, varied by the input.
fn next_record(file: &[u8], n: usize) -> Record {
    let tail = file.get(file.len().saturating_sub(8)..).unwrap_or_default();
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    let word = u64::from_le_bytes(word);
    match n % 3 {
        0 => Record::SaleDefined {
            sale: format!("sale-{}", word % 1000),
            capacity: (word >> 32) as u32,
            opens_at_ms: word,
        },
        1 => Record::TicketSold {
            sale: "sale".into(),
            ticket: word as u32,
            user: word.rotate_left(17),
            at_ms: n as u64,
        },
        _ => Record::Unknown {
            kind: 0x80 | (word as u8),
            payload: tail.to_vec(),
        },
    }
}
