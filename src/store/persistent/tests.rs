//! Unit tests of `PersistentBytesStore`: the byte store contract, reopening after a clean
//! close and after a stop that skipped it, expiry through the on-disk time index, the
//! memory report, and the named errors for a directory that cannot be a store.

use super::*;

fn temporary() -> PersistentBytesStore {
    PersistentBytesStore::temporary(&PersistentOptions::default())
}

crate::byte_store_contract_tests!(contract, temporary);

/// A fresh directory under the system's temporary directory (removed by the test).
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kstate-persistent-test-{}-{name}",
        std::process::id()
    ));
    PersistentBytesStore::destroy(&dir).unwrap();
    dir
}

fn key(prefix: &[u8], time: i64) -> Bytes {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&time.to_be_bytes());
    k.extend_from_slice(&time.to_be_bytes());
    Bytes::from(k)
}

fn fill(s: &mut PersistentBytesStore) {
    for t in 0..100 {
        s.put(key(b"k", t), Bytes::from(vec![t as u8; 20])).unwrap();
    }
    s.put(Bytes::from_static(b"short"), Bytes::from_static(b"x"))
        .unwrap();
    s.delete(&key(b"k", 50)).unwrap();
}

#[test]
fn reopening_after_a_clean_close_keeps_entries_and_counts() {
    let dir = scratch_dir("clean");
    let options = PersistentOptions::default();
    let mut s = PersistentBytesStore::open(&dir, &options).unwrap();
    assert!(s.is_persistent());
    fill(&mut s);
    let (entries, len, bytes) = (s.scan_all().unwrap(), s.len(), s.approximate_bytes());
    drop(s);
    let s = PersistentBytesStore::open(&dir, &options).unwrap();
    assert_eq!(s.scan_all().unwrap(), entries);
    assert_eq!((s.len(), s.approximate_bytes()), (len, bytes));
    assert_eq!(s.max_time().unwrap(), Some(99));
    drop(s);
    PersistentBytesStore::destroy(&dir).unwrap();
    assert!(!dir.exists());
}

#[test]
fn reopening_after_a_stop_without_close_counts_the_entries() {
    let dir = scratch_dir("unclean");
    let options = PersistentOptions::default();
    let mut s = PersistentBytesStore::open(&dir, &options).unwrap();
    fill(&mut s);
    s.flush_durable().unwrap();
    let (entries, len, bytes) = (s.scan_all().unwrap(), s.len(), s.approximate_bytes());
    // What a killed process leaves: the journal, no clean-close record.
    s.skip_clean_close = true;
    drop(s);
    let mut s = PersistentBytesStore::open(&dir, &options).unwrap();
    assert_eq!(s.scan_all().unwrap(), entries);
    assert_eq!((s.len(), s.approximate_bytes()), (len, bytes));
    // The clean-close record is consumed on open: a second unclean stop counts again.
    s.put(key(b"k", 200), Bytes::from_static(b"y")).unwrap();
    s.skip_clean_close = true;
    drop(s);
    let s = PersistentBytesStore::open(&dir, &options).unwrap();
    assert_eq!(s.len(), len + 1);
    drop(s);
    PersistentBytesStore::destroy(&dir).unwrap();
}

#[test]
fn expiry_survives_a_reopen_and_costs_only_what_expires() {
    let dir = scratch_dir("expiry");
    let options = PersistentOptions::default();
    let mut s = PersistentBytesStore::open(&dir, &options).unwrap();
    fill(&mut s);
    assert_eq!(s.delete_timed_through(9).unwrap(), 10);
    assert_eq!(
        s.delete_timed_through(9).unwrap(),
        0,
        "nothing new behind the horizon"
    );
    drop(s);
    let mut s = PersistentBytesStore::open(&dir, &options).unwrap();
    assert_eq!(s.get(&key(b"k", 9)).unwrap(), None);
    assert_eq!(s.delete_timed_through(19).unwrap(), 10);
    assert_eq!(s.len(), 100 - 1 - 20 + 1);
    assert_eq!(s.get(&key(b"k", 20)).unwrap().map(|v| v.len()), Some(20));
    drop(s);
    PersistentBytesStore::destroy(&dir).unwrap();
}

#[test]
fn memory_is_reported_within_the_budget() {
    let options = PersistentOptions::with_memory_bytes(8 << 20);
    let mut s = PersistentBytesStore::temporary(&options);
    for i in 0..20_000u64 {
        s.put(key(&i.to_be_bytes(), i as i64), Bytes::from(vec![1; 30]))
            .unwrap();
    }
    for i in (0..20_000u64).step_by(7) {
        s.get(&key(&i.to_be_bytes(), i as i64)).unwrap();
    }
    let used = s.memory_bytes();
    assert!(used > 0, "the memtable holds the writes");
    assert!(
        used as u64 <= options.memory_bytes,
        "{used} > {}",
        options.memory_bytes
    );
}

#[test]
fn a_path_that_is_a_file_is_a_named_open_error() {
    let path = scratch_dir("file");
    std::fs::write(&path, b"not a store").unwrap();
    let err = PersistentBytesStore::open(&path, &PersistentOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StoreError::PersistentOpen { reason, .. } if reason.contains("not a directory")),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_budget_below_the_minimum_is_a_named_open_error() {
    let dir = scratch_dir("budget");
    let options = PersistentOptions::with_memory_bytes(PersistentOptions::MIN_MEMORY_BYTES - 1);
    let err = PersistentBytesStore::open(&dir, &options).unwrap_err();
    assert!(matches!(err, StoreError::PersistentOpen { .. }), "{err}");
    PersistentBytesStore::destroy(&dir).unwrap();
}

#[test]
fn a_corrupt_store_is_a_named_open_error() {
    let dir = scratch_dir("corrupt");
    let options = PersistentOptions::default();
    let mut s = PersistentBytesStore::open(&dir, &options).unwrap();
    fill(&mut s);
    drop(s);
    // Overwrite every file of the store with garbage.
    fn scramble(dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                scramble(&path);
            } else {
                std::fs::write(&path, b"\x13\x37 not what fjall wrote \xff\xff\xff\xff").unwrap();
            }
        }
    }
    scramble(&dir);
    let err = PersistentBytesStore::open(&dir, &options).unwrap_err();
    assert!(matches!(err, StoreError::PersistentOpen { .. }), "{err}");
    PersistentBytesStore::destroy(&dir).unwrap();
    let s = PersistentBytesStore::open(&dir, &options).unwrap();
    assert!(s.is_empty(), "a destroyed store opens empty");
    drop(s);
    PersistentBytesStore::destroy(&dir).unwrap();
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = scratch_dir("locked");
    let options = PersistentOptions::default();
    let s = PersistentBytesStore::open(&dir, &options).unwrap();
    let err = PersistentBytesStore::open(&dir, &options).unwrap_err();
    assert!(matches!(err, StoreError::PersistentOpen { .. }), "{err}");
    drop(s);
    PersistentBytesStore::destroy(&dir).unwrap();
}

#[test]
fn time_order_is_numeric_across_the_sign() {
    for (a, b) in [(-5i64, 3i64), (i64::MIN, -1), (0, 1), (7, i64::MAX)] {
        assert!(encode_time(a) < encode_time(b), "{a} < {b}");
        assert_eq!(decode_time(&encode_time(a)), Some(a));
    }
}
