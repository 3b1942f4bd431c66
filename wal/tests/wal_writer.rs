//! The group-commit writer: batching, ordering of hook and acknowledgements,
//! failure handling, shutdown, and what `open` refuses.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use flashsale_wal::record::{
    encode_frame, file_header, FILE_HEADER_LEN, KIND_TICKET_SOLD, RECORD_HEADER_LEN,
};
use flashsale_wal::{
    recover, Durability, LogFile, NoHook, Record, WalConfig, WalError, LOG_FILE_NAME,
};
use tokio::sync::oneshot;

fn sold(ticket: u32) -> Record {
    Record::TicketSold {
        sale: "gig".into(),
        ticket,
        user: 1000 + u64::from(ticket),
        at_ms: 7,
    }
}

fn tickets(records: &[Record]) -> Vec<u32> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::TicketSold { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .collect()
}

/// Switches that make the next writes or syncs fail.
#[derive(Default)]
struct Faults {
    fail_write: AtomicBool,
    fail_sync: AtomicBool,
    /// Write half of the next buffer, then fail.
    tear_write: AtomicBool,
    syncs: AtomicUsize,
    /// Told when a gated sync starts waiting for its release.
    held: Mutex<Option<Sender<()>>>,
}

/// A log file that fails on demand, and whose first sync can be held.
struct FaultyFile {
    file: File,
    faults: Arc<Faults>,
    gate: Option<Receiver<()>>,
}

impl LogFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.faults.tear_write.load(SeqCst) {
            LogFile::write_all(&mut self.file, &buf[..buf.len() / 2])?;
            return Err(io::Error::other("torn write"));
        }
        if self.faults.fail_write.load(SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        LogFile::write_all(&mut self.file, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if let Some(gate) = self.gate.take() {
            let held = self.faults.held.lock().unwrap().take();
            if let Some(held) = held {
                let _ = held.send(());
            }
            let _ = gate.recv();
        }
        self.faults.syncs.fetch_add(1, SeqCst);
        if self.faults.fail_sync.load(SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        LogFile::sync_data(&mut self.file)
    }
}

/// Opens a log whose file fails on demand. With `gated`, the first sync
/// blocks until the returned sender is dropped or sent to.
fn open_faulty(
    dir: &Path,
    hook: Arc<dyn flashsale_wal::DurableHook>,
    gated: bool,
) -> (flashsale_wal::Wal, Arc<Faults>, Option<Sender<()>>) {
    let faults = Arc::new(Faults::default());
    let (release, gate) = crossbeam_channel::bounded(1);
    let f = Arc::clone(&faults);
    let (wal, _) = WalConfig::default_for(dir)
        .open_with(hook, move |file| FaultyFile {
            file,
            faults: f,
            gate: gated.then_some(gate),
        })
        .unwrap();
    (wal, faults, gated.then_some(release))
}

#[test]
fn missing_log_is_created_with_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/data");
    let (wal, records) = WalConfig::default_for(&dir).open(Arc::new(NoHook)).unwrap();
    assert!(records.is_empty());
    wal.shutdown().unwrap();
    assert_eq!(fs::read(dir.join(LOG_FILE_NAME)).unwrap(), file_header());
}

#[test]
fn group_commit_shares_one_fsync_among_many_records() {
    let tmp = tempfile::tempdir().unwrap();
    // Hold the first sync until every append is queued, so batching does
    // not depend on how fast this machine's disk is.
    let (wal, _, release) = open_faulty(tmp.path(), Arc::new(NoHook), true);
    let waiters: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u32)
            .map(|t| {
                let wal = wal.clone();
                s.spawn(move || {
                    (0..250)
                        .map(|i| {
                            let (tx, rx) = oneshot::channel();
                            wal.append(sold(t * 250 + i), Some(tx));
                            rx
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    drop(release);
    for rx in waiters {
        rx.blocking_recv().unwrap().unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.records, 1000);
    assert_eq!(stats.fsyncs, stats.batches);
    assert!(stats.fsyncs < 10, "{stats:?}");
    wal.shutdown().unwrap();
    let mut got = tickets(&recover(tmp.path()).unwrap().records);
    got.sort_unstable();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[test]
fn hook_sees_records_before_their_waiters_are_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let hook_seen = Arc::clone(&seen);
    let hook = move |records: &[Record]| hook_seen.lock().unwrap().extend(tickets(records));
    let (wal, _) = WalConfig::default_for(tmp.path())
        .open(Arc::new(hook))
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (wal, seen) = (wal.clone(), &seen);
            s.spawn(move || {
                for i in 0..50 {
                    let ticket = t * 50 + i;
                    wal.append_durable(sold(ticket)).unwrap();
                    assert!(seen.lock().unwrap().contains(&ticket), "ticket {ticket}");
                }
            });
        }
    });
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn async_append_and_barrier() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = WalConfig::default_for(tmp.path())
        .open(Arc::new(NoHook))
        .unwrap();
    let (tx, rx) = oneshot::channel();
    wal.append(sold(1), Some(tx));
    rx.await.unwrap().unwrap();
    let (tx, rx) = oneshot::channel();
    wal.barrier(tx);
    rx.await.unwrap().unwrap();
    assert_eq!(
        wal.stats().fsyncs,
        1,
        "a barrier alone writes and syncs nothing"
    );
    wal.shutdown().unwrap();
}

#[test]
fn barrier_completes_only_after_earlier_appends_are_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let hook_count = Arc::clone(&count);
    let hook = move |records: &[Record]| {
        hook_count.fetch_add(records.len(), SeqCst);
    };
    let (wal, faults, release) = open_faulty(tmp.path(), Arc::new(hook), true);
    let (held_tx, held) = crossbeam_channel::bounded(1);
    *faults.held.lock().unwrap() = Some(held_tx);
    for i in 0..10 {
        wal.append(sold(i), None);
    }
    let (tx, mut rx) = oneshot::channel();
    wal.barrier(tx);
    // The writer is now inside the first batch's sync, and stays there
    // until released: nothing after it can have been answered.
    held.recv_timeout(std::time::Duration::from_secs(10))
        .expect("the first sync starts");
    assert!(
        rx.try_recv().is_err(),
        "barrier answered while the first sync is held"
    );
    assert_eq!(count.load(SeqCst), 0, "nothing is durable before the sync");
    drop(release);
    rx.blocking_recv().unwrap().unwrap();
    assert_eq!(count.load(SeqCst), 10);
    wal.shutdown().unwrap();
}

#[test]
fn write_error_fails_the_log_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, faults, _) = open_faulty(tmp.path(), Arc::new(NoHook), false);
    wal.append_durable(sold(1)).unwrap();
    faults.fail_write.store(true, SeqCst);
    let err = wal.append_durable(sold(2)).unwrap_err();
    assert!(matches!(err, WalError::Failed { op: "write", .. }), "{err}");
    assert!(!wal.is_healthy());
    faults.fail_write.store(false, SeqCst);
    assert!(matches!(
        wal.append_durable(sold(3)),
        Err(WalError::Failed { .. })
    ));
    let (tx, rx) = oneshot::channel();
    wal.barrier(tx);
    assert!(rx.blocking_recv().unwrap().is_err());
    assert!(matches!(wal.shutdown(), Err(WalError::Failed { .. })));
    assert_eq!(tickets(&recover(tmp.path()).unwrap().records), [1]);
}

#[test]
fn sync_error_is_never_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, faults, _) = open_faulty(tmp.path(), Arc::new(NoHook), false);
    wal.append_durable(sold(1)).unwrap();
    faults.fail_sync.store(true, SeqCst);
    let err = wal.append_durable(sold(2)).unwrap_err();
    assert!(matches!(err, WalError::Failed { op: "sync", .. }), "{err}");
    faults.fail_sync.store(false, SeqCst);
    let syncs = faults.syncs.load(SeqCst);
    assert!(wal.append_durable(sold(3)).is_err());
    assert_eq!(
        faults.syncs.load(SeqCst),
        syncs,
        "no write or sync after a failed sync"
    );
    assert!(wal.shutdown().is_err());
    // Ticket 2 was written but not acknowledged, so it may or may not
    // survive; ticket 3 was never written.
    let got = tickets(&recover(tmp.path()).unwrap().records);
    assert!(got == [1] || got == [1, 2], "{got:?}");
}

#[test]
fn torn_write_is_cut_off_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, faults, _) = open_faulty(tmp.path(), Arc::new(NoHook), false);
    for i in 0..3 {
        wal.append_durable(sold(i)).unwrap();
    }
    faults.tear_write.store(true, SeqCst);
    assert!(wal.append_durable(sold(3)).is_err());
    assert!(wal.shutdown().is_err());

    let frame = sold(3).encode().unwrap();
    let recovered = recover(tmp.path()).unwrap();
    assert_eq!(tickets(&recovered.records), [0, 1, 2]);
    let discarded = recovered.discarded.expect("torn tail");
    assert_eq!(discarded.len, (frame.len() / 2) as u64);
    assert_eq!(
        fs::read(&discarded.side_file).unwrap(),
        frame[..frame.len() / 2]
    );
    assert_eq!(
        fs::metadata(tmp.path().join(LOG_FILE_NAME)).unwrap().len(),
        discarded.offset
    );

    let (wal, records) = WalConfig::default_for(tmp.path())
        .open(Arc::new(NoHook))
        .unwrap();
    assert_eq!(tickets(&records), [0, 1, 2]);
    wal.append_durable(sold(9)).unwrap();
    wal.shutdown().unwrap();
    assert_eq!(tickets(&recover(tmp.path()).unwrap().records), [0, 1, 2, 9]);
}

#[test]
fn hook_panic_fails_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = |_: &[Record]| panic!("hook exploded");
    let (wal, _) = WalConfig::default_for(tmp.path())
        .open(Arc::new(hook))
        .unwrap();
    assert!(wal.append_durable(sold(1)).is_err());
    assert!(!wal.is_healthy());
    assert!(wal.shutdown().is_err());
}

/// The two ways a log closes.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// `shutdown()` on one handle while another is still held.
    Shutdown,
    /// Every handle dropped, without a shutdown.
    DropEveryHandle,
}

#[test]
fn closing_writes_everything_queued() {
    for close in [Close::Shutdown, Close::DropEveryHandle] {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = WalConfig::default_for(tmp.path())
            .open(Arc::new(NoHook))
            .unwrap();
        let other = wal.clone();
        for i in 0..100 {
            other.append(sold(i), None);
        }
        match close {
            Close::Shutdown => {
                wal.shutdown().unwrap();
                assert!(matches!(
                    other.append_durable(sold(100)),
                    Err(WalError::Closed)
                ));
                let (tx, rx) = oneshot::channel();
                other.barrier(tx);
                assert!(matches!(rx.blocking_recv().unwrap(), Err(WalError::Closed)));
            }
            Close::DropEveryHandle => {
                drop(wal);
                drop(other);
            }
        }
        assert_eq!(
            tickets(&recover(tmp.path()).unwrap().records),
            (0..100).collect::<Vec<_>>(),
            "{close:?}"
        );
    }
}

#[test]
fn durability_none_writes_without_syncing() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = WalConfig::default_for(tmp.path())
        .durability(Durability::None)
        .open(Arc::new(NoHook))
        .unwrap();
    for i in 0..50 {
        wal.append_durable(sold(i)).unwrap();
    }
    let stats = wal.stats();
    assert_eq!((stats.records, stats.fsyncs), (50, 0));
    wal.shutdown().unwrap();
    assert_eq!(recover(tmp.path()).unwrap().records.len(), 50);
}

#[test]
fn unencodable_record_is_refused_without_failing_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = WalConfig::default_for(tmp.path())
        .open(Arc::new(NoHook))
        .unwrap();
    let long = Record::SaleDefined {
        sale: "x".repeat(70_000),
        capacity: 1,
        opens_at_ms: 0,
    };
    assert!(matches!(wal.append_durable(long), Err(WalError::Encode(_))));
    assert!(wal.is_healthy());
    wal.append_durable(sold(1)).unwrap();
    wal.shutdown().unwrap();
}

fn write_log(dir: &Path, frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = file_header().to_vec();
    for (kind, payload) in frames {
        encode_frame(*kind, payload, &mut bytes).unwrap();
    }
    fs::write(dir.join(LOG_FILE_NAME), &bytes).unwrap();
    bytes
}

#[test]
fn optional_unknown_kind_is_skipped_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let ticket = sold(4).encode().unwrap();
    write_log(
        tmp.path(),
        &[
            (0x90, vec![1, 2, 3]),
            (KIND_TICKET_SOLD, ticket[RECORD_HEADER_LEN..].to_vec()),
        ],
    );
    let (wal, records) = WalConfig::default_for(tmp.path())
        .open(Arc::new(NoHook))
        .unwrap();
    assert_eq!(
        records,
        [
            Record::Unknown {
                kind: 0x90,
                payload: vec![1, 2, 3]
            },
            sold(4)
        ]
    );
    wal.append_durable(sold(5)).unwrap();
    wal.shutdown().unwrap();
    assert_eq!(tickets(&recover(tmp.path()).unwrap().records), [4, 5]);
}

#[test]
fn required_unknown_kind_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let ticket = sold(4).encode().unwrap();
    let bytes = write_log(
        tmp.path(),
        &[
            (KIND_TICKET_SOLD, ticket[RECORD_HEADER_LEN..].to_vec()),
            (0x7f, b"future".to_vec()),
        ],
    );
    let err = WalConfig::default_for(tmp.path())
        .open(Arc::new(NoHook))
        .unwrap_err();
    assert!(
        matches!(err, WalError::NewerVersion { kind: 0x7f, offset, .. } if offset == (FILE_HEADER_LEN + ticket.len()) as u64)
    );
    assert!(
        err.to_string().contains("written by a newer version"),
        "{err}"
    );
    assert_eq!(fs::read(tmp.path().join(LOG_FILE_NAME)).unwrap(), bytes);
}

#[test]
fn bad_header_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(LOG_FILE_NAME);
    for bytes in [
        &b"NOTAWAL!\x01\x00\x00\x00 and more"[..],
        b"",
        b"FSALEWAL\x09\x00\x00\x00",
    ] {
        fs::write(&path, bytes).unwrap();
        let err = recover(tmp.path()).unwrap_err();
        assert!(matches!(err, WalError::BadHeader { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }
}

#[test]
fn unusable_data_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_dir = tmp.path().join("file");
    fs::write(&not_a_dir, b"").unwrap();
    let err = recover(&not_a_dir).unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");

    let log_is_a_dir = tmp.path().join("data");
    fs::create_dir_all(log_is_a_dir.join(LOG_FILE_NAME)).unwrap();
    assert!(matches!(recover(&log_is_a_dir), Err(WalError::Io { .. })));
}

#[cfg(unix)]
#[test]
fn read_only_data_directory_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ro");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory permissions, so there is nothing to test; the
    // write failures themselves are covered through `FaultyFile` above.
    if File::create(dir.join("probe")).is_ok() {
        return;
    }
    let err = recover(&dir).unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
}
