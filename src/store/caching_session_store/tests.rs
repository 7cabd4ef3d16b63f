//! Unit tests of `CachingSessionStore`: the seed's cases as behaviour, plus flush order,
//! the create-and-remove skip, eviction write-through and retention expiry (Java's
//! segmented-store clock: inner writes only, cache never filtered).

use super::*;
use crate::store::session_schema::session_key;

fn ctx() -> RecordContext {
    RecordContext::new("t", 0, 0, 0)
}

fn ctx_at(offset: i64) -> RecordContext {
    RecordContext::new("t", 0, offset, offset * 10)
}

fn b(v: &'static [u8]) -> Bytes {
    Bytes::from_static(v)
}

fn store_over(inner: InMemoryBytesStore) -> CachingSessionStore {
    CachingSessionStore::new("s", CacheBudget::new(usize::MAX), inner)
}

fn store() -> CachingSessionStore {
    store_over(InMemoryBytesStore::new())
}

fn triples(found: Vec<StoredSession>) -> Vec<(i64, i64, Bytes)> {
    found
        .into_iter()
        .map(|s| (s.start, s.end, s.value))
        .collect()
}

#[test]
fn find_sessions_returns_cached() {
    let mut s = store();
    s.put(session_key(b"k", 0, 10), b(b"v"), ctx()).unwrap();
    let found = s.find_sessions(b"k", 0, 100).unwrap();
    assert_eq!(triples(found.clone()), vec![(0, 10, b(b"v"))]);
    assert_eq!(found[0].key, session_key(b"k", 0, 10));
    assert!(s.inner().is_empty(), "put is write-back");
}

#[test]
fn flush_writes_through_and_returns_entries() {
    let mut s = store();
    let sk = session_key(b"k", 0, 10);
    s.put(sk.clone(), b(b"v"), ctx()).unwrap();
    let flushed = s.flush().unwrap();
    assert_eq!(flushed.len(), 1);
    assert_eq!(flushed[0].0, sk);
    assert_eq!(flushed[0].1.value, Some(b(b"v")));
    assert!(!flushed[0].1.dirty);
    assert_eq!(s.inner().get(&sk).unwrap(), Some(b(b"v")));
    assert_eq!(
        triples(s.find_sessions(b"k", 0, 100).unwrap()),
        vec![(0, 10, b(b"v"))]
    );
}

#[test]
fn find_sessions_merges_cache_and_underlying() {
    let mut inner = InMemoryBytesStore::new();
    inner.put(session_key(b"k", 0, 10), b(b"i1")).unwrap();
    inner.put(session_key(b"k", 0, 30), b(b"i2")).unwrap();
    let mut s = store_over(inner);
    s.put(session_key(b"k", 0, 10), b(b"c1"), ctx()).unwrap();
    s.put(session_key(b"k", 0, 20), b(b"c2"), ctx()).unwrap();
    assert_eq!(
        triples(s.find_sessions(b"k", 0, 100).unwrap()),
        vec![(0, 10, b(b"c1")), (0, 20, b(b"c2")), (0, 30, b(b"i2"))]
    );
}

#[test]
fn find_sessions_applies_both_bounds() {
    let mut s = store();
    for (start, end) in [(0, 5), (6, 9), (12, 20), (30, 40)] {
        s.put(session_key(b"k", start, end), b(b"v"), ctx())
            .unwrap();
    }
    let found: Vec<(i64, i64)> = s
        .find_sessions(b"k", 9, 12)
        .unwrap()
        .into_iter()
        .map(|x| (x.start, x.end))
        .collect();
    assert_eq!(found, vec![(6, 9), (12, 20)]);
}

#[test]
fn tombstone_hides_underlying_session() {
    let mut inner = InMemoryBytesStore::new();
    inner.put(session_key(b"k", 0, 10), b(b"i1")).unwrap();
    let mut s = store_over(inner);
    assert_eq!(s.find_sessions(b"k", 0, 100).unwrap().len(), 1);
    s.remove(session_key(b"k", 0, 10), ctx()).unwrap();
    assert!(s.find_sessions(b"k", 0, 100).unwrap().is_empty());
}

#[test]
fn other_key_prefix_is_not_returned() {
    let mut inner = InMemoryBytesStore::new();
    inner
        .put(session_key(b"kk", 0, 10), b(b"inner-kk"))
        .unwrap();
    inner
        .put(session_key(b"k\x00", 0, 0), b(b"inner-k0"))
        .unwrap();
    let mut s = store_over(inner);
    s.put(session_key(b"k", 0, 10), b(b"a"), ctx()).unwrap();
    s.put(session_key(b"kk", 0, 10), b(b"b"), ctx()).unwrap();
    assert_eq!(
        triples(s.find_sessions(b"k", 0, 100).unwrap()),
        vec![(0, 10, b(b"a"))]
    );
    assert_eq!(
        triples(s.find_sessions(b"kk", 0, 100).unwrap()),
        vec![(0, 10, b(b"b"))]
    );
}

#[test]
fn get_is_cache_first_then_falls_through() {
    let mut inner = InMemoryBytesStore::new();
    let sk = session_key(b"k", 0, 10);
    inner.put(sk.clone(), b(b"inner")).unwrap();
    let mut s = store_over(inner);
    assert_eq!(s.get(&sk).unwrap(), Some(b(b"inner")));
    s.put(sk.clone(), b(b"cached"), ctx()).unwrap();
    assert_eq!(s.get(&sk).unwrap(), Some(b(b"cached")));
    assert_eq!(s.get(&session_key(b"k", 0, 99)).unwrap(), None);
    s.remove(sk.clone(), ctx()).unwrap();
    assert_eq!(s.get(&sk).unwrap(), None);
}

#[test]
fn short_keys_are_errors() {
    let mut s = store();
    let short = b(b"0123456789");
    assert!(matches!(
        s.get(&short),
        Err(StoreError::ShortSessionKey { len: 10, .. })
    ));
    assert!(s.put(short.clone(), b(b"v"), ctx()).is_err());
    assert!(s.remove(short.clone(), ctx()).is_err());
    assert!(s.put_inner(short.clone(), b(b"v")).is_err());
    assert!(s.delete_inner(&short).is_err());
    assert!(s.flush().unwrap().is_empty());
}

#[test]
fn range_merges_cache_over_inner_with_tombstone() {
    let mut inner = InMemoryBytesStore::new();
    let k0 = session_key(b"k", 0, 10);
    let k1 = session_key(b"k", 0, 20);
    let k2 = session_key(b"k", 0, 30);
    for (k, v) in [(&k0, b(b"i0")), (&k1, b(b"i1")), (&k2, b(b"i2"))] {
        inner.put(k.clone(), v).unwrap();
    }
    let mut s = store_over(inner);
    s.put(k1.clone(), b(b"c1"), ctx()).unwrap();
    s.remove(k2.clone(), ctx()).unwrap();
    let lo = session_key(b"k", 0, 0);
    let hi = session_key(b"k", i64::MAX, i64::MAX);
    assert_eq!(
        s.range(&lo, &hi).unwrap(),
        vec![(k0, b(b"i0")), (k1, b(b"c1"))]
    );
    assert!(s.range(&hi, &lo).unwrap().is_empty());
}

#[test]
fn scan_all_merges_cache_and_underlying() {
    let mut inner = InMemoryBytesStore::new();
    let k0 = session_key(b"k", 0, 10);
    let k1 = session_key(b"k", 0, 20);
    let k3 = session_key(b"k", 0, 40);
    for (k, v) in [(&k0, b(b"i0")), (&k1, b(b"i1")), (&k3, b(b"i3"))] {
        inner.put(k.clone(), v).unwrap();
    }
    let mut s = store_over(inner);
    s.put(k1.clone(), b(b"c1"), ctx()).unwrap();
    let k2 = session_key(b"k", 0, 30);
    s.put(k2.clone(), b(b"c2"), ctx()).unwrap();
    s.remove(k3, ctx()).unwrap();
    assert_eq!(
        s.scan_all().unwrap(),
        vec![(k0, b(b"i0")), (k1, b(b"c1")), (k2, b(b"c2"))]
    );
}

#[test]
fn put_and_delete_inner_bypass_the_cache() {
    let mut s = store();
    let sk = session_key(b"k", 0, 10);
    s.put_inner(sk.clone(), b(b"v")).unwrap();
    assert_eq!(s.get(&sk).unwrap(), Some(b(b"v")));
    assert_eq!(s.cache().len(), 0);
    assert!(s.flush().unwrap().is_empty());
    s.delete_inner(&sk).unwrap();
    assert_eq!(s.get(&sk).unwrap(), None);
    assert!(s.flush().unwrap().is_empty());
}

#[test]
fn clear_empties_cache_and_inner() {
    let mut inner = InMemoryBytesStore::new();
    inner.put(session_key(b"k", 0, 10), b(b"i")).unwrap();
    let mut s = store_over(inner);
    s.put(session_key(b"k", 0, 20), b(b"c"), ctx()).unwrap();
    s.clear().unwrap();
    assert!(s.find_sessions(b"k", 0, 1000).unwrap().is_empty());
    assert!(s.scan_all().unwrap().is_empty());
    assert!(s.flush().unwrap().is_empty());
    assert_eq!(s.cache().budget().used_bytes(), 0);
}

#[test]
fn flush_deletes_tombstone_through() {
    let mut inner = InMemoryBytesStore::new();
    let sk = session_key(b"k", 0, 10);
    inner.put(sk.clone(), b(b"old")).unwrap();
    let mut s = store_over(inner);
    s.remove(sk.clone(), ctx()).unwrap();
    let flushed = s.flush().unwrap();
    assert_eq!(flushed.len(), 1);
    assert_eq!(flushed[0].1.value, None);
    assert_eq!(s.inner().get(&sk).unwrap(), None);
    assert_eq!(s.get(&sk).unwrap(), None);
}

#[test]
fn flush_with_old_returns_inner_old_then_writes_through() {
    let mut inner = InMemoryBytesStore::new();
    let sk = session_key(b"k", 0, 10);
    inner.put(sk.clone(), b(b"old")).unwrap();
    let mut s = store_over(inner);
    s.put(sk.clone(), b(b"new"), ctx_at(3)).unwrap();
    let drained = s.flush_with_old().unwrap();
    assert_eq!(
        drained,
        vec![FlushedEntry {
            key: sk.clone(),
            old: Some(b(b"old")),
            new: Some(b(b"new")),
            context: ctx_at(3),
        }]
    );
    assert_eq!(
        triples(s.find_sessions(b"k", 0, 100).unwrap()),
        vec![(0, 10, b(b"new"))]
    );
    assert!(
        s.flush_with_old().unwrap().is_empty(),
        "second flush has nothing dirty"
    );
}

#[test]
fn session_created_and_removed_in_one_cache_lifetime_is_not_flushed() {
    let mut s = store();
    let sk = session_key(b"k", 0, 10);
    s.put(sk.clone(), b(b"v"), ctx()).unwrap();
    s.remove(sk.clone(), ctx()).unwrap();
    s.put(session_key(b"k", 0, 12), b(b"w"), ctx()).unwrap();
    let drained = s.flush_with_old().unwrap();
    let keys: Vec<Bytes> = drained.into_iter().map(|f| f.key).collect();
    assert_eq!(keys, vec![session_key(b"k", 0, 12)]);
    assert!(s.inner().get(&sk).unwrap().is_none());
}

#[test]
fn flush_order_is_dirty_order_with_redirty_moved_last() {
    let mut s = store();
    let a = session_key(b"a", 0, 1);
    let c = session_key(b"c", 0, 1);
    let bb = session_key(b"b", 0, 1);
    s.put(a.clone(), b(b"1"), ctx_at(1)).unwrap();
    s.put(c.clone(), b(b"1"), ctx_at(2)).unwrap();
    s.put(bb.clone(), b(b"1"), ctx_at(3)).unwrap();
    s.put(a.clone(), b(b"2"), ctx_at(4)).unwrap();
    let drained = s.flush_with_old().unwrap();
    let got: Vec<(Bytes, i64)> = drained
        .into_iter()
        .map(|f| (f.key, f.context.offset))
        .collect();
    assert_eq!(got, vec![(c, 2), (bb, 3), (a, 4)]);
}

#[test]
fn eviction_writes_through_and_queues_entries_in_order() {
    let budget = CacheBudget::new(0);
    let mut s = CachingSessionStore::new("s", budget, InMemoryBytesStore::new());
    let k1 = session_key(b"k", 0, 1);
    s.put(k1.clone(), b(b"1"), ctx_at(1)).unwrap();
    assert_eq!(
        s.inner().get(&k1).unwrap(),
        Some(b(b"1")),
        "evicted entry written through"
    );
    s.put(k1.clone(), b(b"2"), ctx_at(2)).unwrap();
    s.remove(k1.clone(), ctx_at(3)).unwrap();
    let evicted = s.take_evicted();
    let got: Vec<(Option<Bytes>, Option<Bytes>)> =
        evicted.into_iter().map(|f| (f.old, f.new)).collect();
    assert_eq!(
        got,
        vec![
            (None, Some(b(b"1"))),
            (Some(b(b"1")), Some(b(b"2"))),
            (Some(b(b"2")), None)
        ]
    );
    assert!(s.take_evicted().is_empty());
    assert!(s.inner().is_empty());
}

#[test]
fn evicted_entries_come_first_in_the_next_flush() {
    let probe = crate::store::cache::CACHE_ENTRY_OVERHEAD + 1 + 17 + 1;
    let budget = CacheBudget::new(2 * probe);
    let mut s = CachingSessionStore::new("s", budget, InMemoryBytesStore::new());
    let keys: Vec<Bytes> = (0..5).map(|i| session_key(b"k", i, i)).collect();
    for (i, k) in keys.iter().enumerate() {
        s.put(k.clone(), b(b"v"), ctx_at(i as i64)).unwrap();
    }
    assert!(s.cache().metrics().eviction_flushes > 0);
    let drained = s.flush_with_old().unwrap();
    let got: Vec<Bytes> = drained.into_iter().map(|f| f.key).collect();
    assert_eq!(got, keys, "every dirty entry once, in write order");
    assert_eq!(s.inner().len(), 5);
}

fn with_retention(budget: usize, retention: i64) -> CachingSessionStore {
    CachingSessionStore::with_retention(
        "s",
        CacheBudget::new(budget),
        InMemoryBytesStore::new(),
        retention,
    )
    .unwrap()
}

#[test]
fn clock_moves_only_when_the_inner_store_is_written() {
    let mut s = with_retention(usize::MAX, 10);
    s.put(session_key(b"k", 0, 5), b(b"old"), ctx()).unwrap();
    s.put(session_key(b"z", 100, 100), b(b"y"), ctx()).unwrap();
    assert_eq!(s.observed_end(), None, "staging does not move the clock");
    assert_eq!(s.find_sessions(b"k", 0, 1000).unwrap().len(), 1);
    s.flush_with_old().unwrap();
    assert_eq!(s.observed_end(), Some(100));
}

#[test]
fn expired_sessions_leave_the_inner_store_but_cached_ones_stay_visible() {
    let mut s = with_retention(usize::MAX, 10);
    let old = session_key(b"k", 0, 5);
    s.put(old.clone(), b(b"old"), ctx()).unwrap();
    s.flush_with_old().unwrap();
    s.put(session_key(b"z", 15, 15), b(b"y"), ctx()).unwrap();
    s.flush_with_old().unwrap();
    assert_eq!(s.observed_end(), Some(15));
    assert_eq!(
        s.inner().get(&old).unwrap(),
        None,
        "5 <= 15 - 10: dropped from the inner store"
    );
    assert_eq!(
        triples(s.find_sessions(b"k", 0, 100).unwrap()),
        vec![(0, 5, b(b"old"))],
        "the clean cached copy is still found (Java's cache iterator has no expiry check)"
    );
    assert_eq!(s.get(&old).unwrap(), Some(b(b"old")));
    s.remove(old.clone(), ctx()).unwrap();
    let flushed = s.flush_with_old().unwrap();
    assert!(
        flushed.is_empty(),
        "no tombstone: the inner store no longer holds it (old and new both absent)"
    );
    assert!(s.find_sessions(b"k", 0, 100).unwrap().is_empty());
}

#[test]
fn uncached_sessions_are_hidden_by_the_inner_clock() {
    let mut s = with_retention(0, 10);
    let old = session_key(b"k", 0, 5);
    s.put(old.clone(), b(b"old"), ctx()).unwrap();
    assert_eq!(
        s.take_evicted().len(),
        1,
        "budget 0: written through at once"
    );
    s.put(session_key(b"z", 14, 14), b(b"y"), ctx()).unwrap();
    assert_eq!(
        s.find_sessions(b"k", 0, 100).unwrap().len(),
        1,
        "5 > 14 - 10"
    );
    s.put(session_key(b"z", 15, 15), b(b"y"), ctx()).unwrap();
    assert!(
        s.find_sessions(b"k", 0, 100).unwrap().is_empty(),
        "5 <= 15 - 10"
    );
    assert_eq!(s.get(&old).unwrap(), None);
}

#[test]
fn dirty_session_expired_at_write_through_is_flushed_but_not_stored() {
    let mut s = with_retention(usize::MAX, 10);
    s.put(session_key(b"k", 100, 100), b(b"late"), ctx())
        .unwrap();
    let early = session_key(b"k", 0, 5);
    s.put(early.clone(), b(b"final"), ctx()).unwrap();
    assert_eq!(
        s.find_sessions(b"k", 0, 1000).unwrap().len(),
        2,
        "dirty entries are never hidden"
    );
    let flushed = s.flush_with_old().unwrap();
    assert_eq!(flushed.len(), 2);
    assert_eq!(flushed[1].key, early);
    assert_eq!(
        flushed[1].new,
        Some(b(b"final")),
        "still logged and forwarded"
    );
    assert_eq!(s.inner().get(&early).unwrap(), None, "Java skips the put");
    assert_eq!(s.inner().len(), 1);
}

#[test]
fn restore_skips_expired_and_reopen_indexes_existing_sessions() {
    let mut s = CachingSessionStore::with_retention(
        "s",
        CacheBudget::new(usize::MAX),
        InMemoryBytesStore::new(),
        10,
    )
    .unwrap();
    s.put_inner(session_key(b"k", 50, 50), b(b"a")).unwrap();
    s.put_inner(session_key(b"k", 30, 30), b(b"expired"))
        .unwrap();
    assert_eq!(s.inner().len(), 1);
    let inner = s.inner().clone();
    let mut reopened =
        CachingSessionStore::with_retention("s", CacheBudget::new(usize::MAX), inner, 10).unwrap();
    assert_eq!(reopened.observed_end(), Some(50));
    reopened
        .put_inner(session_key(b"j", 70, 70), b(b"b"))
        .unwrap();
    assert_eq!(
        reopened.inner().len(),
        1,
        "the indexed session at 50 was swept"
    );
    reopened.delete_inner(&session_key(b"x", 200, 200)).unwrap();
    assert_eq!(
        reopened.observed_end(),
        Some(200),
        "a restored tombstone moves it too"
    );
    assert!(reopened.inner().is_empty());
    assert!(CachingSessionStore::with_retention(
        "s",
        CacheBudget::new(1),
        InMemoryBytesStore::new(),
        -1
    )
    .is_err());
}

#[test]
fn find_sessions_counts_a_hit_only_when_the_cache_held_a_session_of_the_key() {
    let mut s = store();
    s.put(session_key(b"k", 0, 10), b(b"v"), ctx()).unwrap();
    s.put_inner(session_key(b"j", 0, 10), b(b"w")).unwrap();
    s.find_sessions(b"k", 0, 100).unwrap();
    s.find_sessions(b"j", 0, 100).unwrap();
    s.find_sessions(b"x", 0, 100).unwrap();
    s.find_sessions(b"kk", 0, 100).unwrap();
    let m = s.cache().metrics();
    assert_eq!((m.hits, m.misses), (1, 3), "only k's session was cached");
}

#[test]
fn the_expiry_index_drops_deleted_sessions_and_still_expires_the_live_ones() {
    let mut s = CachingSessionStore::with_retention(
        "s",
        CacheBudget::new(0),
        InMemoryBytesStore::new(),
        1_000_000,
    )
    .unwrap();
    let rounds = 6_000i64;
    for t in 0..rounds {
        let key = session_key(format!("k{}", t % 97).as_bytes(), t, t);
        if t % 2 == 0 {
            s.put_inner(key.clone(), b(b"v")).unwrap();
        } else {
            s.put(key.clone(), b(b"v"), ctx_at(t)).unwrap();
        }
        if t % 10 != 0 {
            if t % 3 == 0 {
                s.delete_inner(&key).unwrap();
            } else {
                s.remove(key, ctx_at(t)).unwrap();
            }
        }
    }
    s.flush_with_old().unwrap();
    let live = s.inner().len();
    assert_eq!(live, (rounds / 10) as usize);
    assert!(
        s.inner.by_end.len() <= 2 * (2 * live + 1024),
        "{} index entries for {live} sessions: deleted ones were not dropped",
        s.inner.by_end.len()
    );
    s.put_inner(session_key(b"z", 1_003_000, 1_003_000), b(b"v"))
        .unwrap();
    let ends: Vec<i64> = s
        .scan_all()
        .unwrap()
        .iter()
        .map(|(k, _)| session_schema::session_end_of(k).unwrap())
        .collect();
    let mut want: Vec<i64> = (3_001..rounds).filter(|t| t % 10 == 0).collect();
    want.push(1_003_000);
    let mut got = ends.clone();
    got.sort_unstable();
    assert_eq!(got, want, "exactly the sessions ending after 3000 survive");
}

#[test]
fn finding_sessions_refreshes_the_lru_order_of_the_cached_sessions_passed() {
    let keys = [session_key(b"a", 0, 10), session_key(b"b", 0, 10)];
    let probe = crate::store::cache::CACHE_ENTRY_OVERHEAD + keys[0].len() + 1 + 1;
    let mut s =
        CachingSessionStore::new("s", CacheBudget::new(2 * probe), InMemoryBytesStore::new());
    for k in &keys {
        s.put(k.clone(), b(b"v"), ctx()).unwrap();
    }
    s.flush().unwrap();
    // "a" is the eldest until a lookup passes it (Java's cache iterator reads each key).
    s.find_sessions(b"a", 0, 100).unwrap();
    s.put(session_key(b"c", 0, 10), b(b"v"), ctx()).unwrap();
    assert!(s.cache().peek(&keys[0]).is_some(), "a was refreshed");
    assert!(s.cache().peek(&keys[1]).is_none(), "b was the eldest");
}

#[test]
fn java_passes_every_session_but_one_ending_a_segment_and_starting_too_late() {
    // Retention 7 s: segments of 60 s; the range of the segment ending at 59 999 stops at
    // `key ‖ 59 999 ‖ min(latest_start, 59 999)`.
    let seg = Some(7_000);
    assert!(passed_by_java_find(59_000, 59_998, 58_000, seg));
    assert!(passed_by_java_find(58_000, 59_999, 58_000, seg));
    assert!(!passed_by_java_find(59_000, 59_999, 58_000, seg));
    assert!(!passed_by_java_find(119_000, 119_999, 58_000, seg));
    // Retention 300 s: segments of 150 s.
    assert!(passed_by_java_find(59_000, 59_999, 58_000, Some(300_000)));
    assert!(!passed_by_java_find(
        149_000,
        149_999,
        58_000,
        Some(300_000)
    ));
    assert!(passed_by_java_find(59_000, 59_999, 58_000, None));
}
