//! The on-disk Raft log: openraft's own storage suite, then what only a
//! disk can do (reopen, torn tails, flipped bits).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use flashsale_cluster::log_store::{LogStore, LogStoreError};
use flashsale_cluster::state::StateStore;
use flashsale_cluster::Machine;
use flashsale_cluster::{Batch, Entry, LogId, StorageError, TypeConfig};
use openraft::storage::{LogState, RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, StorageIOError, Vote};
use tempfile::TempDir;

// ---- the suite, over the real state machine ------------------------------

/// A machine with no state: the suite checks the log store and the state
/// machine's bookkeeping (applied position, membership, snapshots), not
/// what the entries mean.
struct Stateless;

impl Machine for Stateless {
    fn apply(&self, _batch: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    fn restore(&self, _snapshot: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let store = LogStore::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        let state = StateStore::open(dir.path(), Arc::new(Stateless))
            .map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, store, state))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

// ---- helpers --------------------------------------------------------------

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn entry(term: u64, index: u64, len: usize) -> Entry {
    let bytes = (0..len)
        .map(|i| (i as u64 + index) as u8)
        .collect::<Vec<u8>>();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Batch(bytes.into())),
    }
}

async fn all(store: &mut LogStore) -> Vec<Entry> {
    store.try_get_log_entries(..).await.unwrap()
}

fn file_len(dir: &Path) -> u64 {
    fs::metadata(dir.join("raft.log")).unwrap().len()
}

/// A store with entries 0, 1, 2 (term 1, 100-byte batches), each appended
/// alone; returns the log file's length after each.
async fn three_entries(dir: &Path) -> [u64; 3] {
    let mut store = LogStore::open(dir).unwrap();
    let mut lens = [0; 3];
    for (i, len) in lens.iter_mut().enumerate() {
        store
            .blocking_append([entry(1, i as u64, 100)])
            .await
            .unwrap();
        *len = file_len(dir);
    }
    lens
}

// ---- reopening --------------------------------------------------------------

#[tokio::test]
async fn reopening_gives_back_entries_vote_committed_and_purge_point() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append((0..=5).map(|i| entry(1, i, 10)))
            .await
            .unwrap();
        store
            .blocking_append((6..=20).map(|i| entry(1, i, 10)))
            .await
            .unwrap();
        store.truncate(log_id(1, 15)).await.unwrap();
        store
            .blocking_append((15..=17).map(|i| entry(2, i, 7)))
            .await
            .unwrap();
        store.purge(log_id(1, 5)).await.unwrap();
        store.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        store.save_committed(Some(log_id(2, 16))).await.unwrap();
        all(&mut store).await
    };
    let want: Vec<Entry> = (6..15)
        .map(|i| entry(1, i, 10))
        .chain((15..=17).map(|i| entry(2, i, 7)))
        .collect();
    assert_eq!(before, want);

    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut store).await, want);
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 1))
    );
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 16)));
    let state: LogState<TypeConfig> = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(2, 17)));
}

#[tokio::test]
async fn a_large_purge_rewrites_the_file_and_offsets_stay_right() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        for i in 0..40 {
            store
                .blocking_append([entry(1, i, 64 << 10)])
                .await
                .unwrap();
        }
        let full = file_len(dir.path());
        store.purge(log_id(1, 29)).await.unwrap();
        let after = file_len(dir.path());
        assert!(after < full / 3, "{after} bytes after purge, {full} before");
        assert!(!dir.path().join("raft.log.tmp").exists());
        // Offsets were shifted with the file: a truncation cuts right.
        store.truncate(log_id(1, 35)).await.unwrap();
        store
            .blocking_append([entry(2, 35, 5), entry(2, 36, 5)])
            .await
            .unwrap();
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    let want: Vec<Entry> = (30..35)
        .map(|i| entry(1, i, 64 << 10))
        .chain([entry(2, 35, 5), entry(2, 36, 5)])
        .collect();
    assert_eq!(all(&mut store).await, want);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 29)));
}

#[tokio::test]
async fn purging_everything_then_appending_after_the_purge_point() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append((0..=3).map(|i| entry(1, i, 10)))
            .await
            .unwrap();
        // As after installing a snapshot that is ahead of the log.
        store.purge(log_id(3, 100)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(3, 100)));
        // An entry at the purge point is written but not part of the log.
        store.blocking_append([entry(3, 100, 1)]).await.unwrap();
        assert_eq!(all(&mut store).await, vec![]);
        store.blocking_append([entry(3, 101, 1)]).await.unwrap();
        assert_eq!(all(&mut store).await, vec![entry(3, 101, 1)]);
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut store).await, vec![entry(3, 101, 1)]);
}

// ---- damage -----------------------------------------------------------------

#[tokio::test]
async fn garbage_after_the_last_frame_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let lens = three_entries(dir.path()).await;
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join("raft.log"))
        .unwrap();
    file.write_all(b"\x05\x00\x00\x00garbage").unwrap();
    drop(file);

    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        all(&mut store).await,
        (0..3).map(|i| entry(1, i, 100)).collect::<Vec<_>>()
    );
    assert_eq!(file_len(dir.path()), lens[2]);
}

#[tokio::test]
async fn a_half_written_last_frame_is_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let lens = three_entries(dir.path()).await;
    let file = OpenOptions::new()
        .write(true)
        .open(dir.path().join("raft.log"))
        .unwrap();
    file.set_len(lens[1] + (lens[2] - lens[1]) / 2).unwrap();
    drop(file);

    {
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            all(&mut store).await,
            vec![entry(1, 0, 100), entry(1, 1, 100)]
        );
        assert_eq!(file_len(dir.path()), lens[1]);
        store.blocking_append([entry(2, 2, 3)]).await.unwrap();
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    let want = vec![entry(1, 0, 100), entry(1, 1, 100), entry(2, 2, 3)];
    assert_eq!(all(&mut store).await, want);
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_frame_fails_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let lens = three_entries(dir.path()).await;
    let path = dir.path().join("raft.log");
    let mut bytes = fs::read(&path).unwrap();
    let middle = ((lens[1] + lens[2]) / 2) as usize;
    bytes[middle] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        all(&mut store).await,
        vec![entry(1, 0, 100), entry(1, 1, 100)]
    );
    assert_eq!(file_len(dir.path()), lens[1]);
}

#[tokio::test]
async fn a_hole_in_the_log_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        // openraft never does this; recovery must notice if it happens.
        store
            .blocking_append([entry(1, 0, 1), entry(1, 1, 1)])
            .await
            .unwrap();
        store.blocking_append([entry(1, 3, 1)]).await.unwrap();
    }
    match LogStore::open(dir.path()) {
        Err(LogStoreError::Gap {
            expected, found, ..
        }) => assert_eq!((expected, found), (2, 3)),
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[tokio::test]
async fn a_foreign_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.log");
    fs::write(&path, b"not a raft log at all").unwrap();
    let err = LogStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, LogStoreError::BadHeader { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"not a raft log at all");
}

#[tokio::test]
async fn a_damaged_meta_file_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store.save_vote(&Vote::new(3, 2)).await.unwrap();
    }
    let path = dir.path().join("raft.meta");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    fs::write(&path, &bytes).unwrap();
    let err = LogStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, LogStoreError::BadMeta { .. }), "{err}");
}

#[tokio::test]
async fn one_store_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = LogStore::open(dir.path()).unwrap();
    let err = LogStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, LogStoreError::Locked { .. }), "{err}");
    drop(first);
    LogStore::open(dir.path()).unwrap();
}

#[tokio::test]
async fn an_entry_before_the_end_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    store
        .blocking_append((0..=2).map(|i| entry(1, i, 4)))
        .await
        .unwrap();
    assert!(store.blocking_append([entry(2, 2, 4)]).await.is_err());
    store.blocking_append([entry(1, 3, 4)]).await.unwrap();
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        all(&mut store).await,
        (0..=3).map(|i| entry(1, i, 4)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_missing_directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node/raft");
    let mut store = LogStore::open(&dir).unwrap();
    store.blocking_append([entry(1, 0, 1)]).await.unwrap();
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let mode = fs::metadata(dir.join("raft.log"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}
