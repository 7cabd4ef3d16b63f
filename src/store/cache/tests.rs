//! Unit tests of `NamedCache`: dirty order, tombstones, byte accounting and eviction.

use super::*;

fn ctx(offset: i64) -> RecordContext {
    RecordContext::new("t", 0, offset, offset)
}

fn k(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn one_entry_size(key: &str, value: &str) -> usize {
    entry_size(key.as_bytes(), Some(&k(value)), &ctx(0))
}

fn no_flush() -> impl FnMut(&mut Vec<DirtyEntry>) {
    |d: &mut Vec<DirtyEntry>| assert!(d.is_empty(), "unexpected flush of {} entries", d.len())
}

#[test]
fn dirty_order_is_insertion_order_and_redirty_moves_to_end() {
    let mut c = NamedCache::new("s", CacheBudget::new(usize::MAX));
    for key in ["a", "b", "c"] {
        c.put(k(key), Some(k("v")), ctx(0), &mut no_flush());
    }
    c.put(k("a"), Some(k("v2")), ctx(1), &mut no_flush());
    let keys: Vec<Bytes> = c.flush().into_iter().map(|e| e.0).collect();
    assert_eq!(keys, vec![k("b"), k("c"), k("a")]);
    assert_eq!(c.dirty_len(), 0);
    assert!(c.flush().is_empty());
    assert_eq!(c.peek(b"a").map(|e| e.dirty), Some(false));
}

#[test]
fn flush_drops_clean_tombstones_and_keeps_clean_values() {
    let mut c = NamedCache::new("s", CacheBudget::new(usize::MAX));
    c.put(k("a"), Some(k("v")), ctx(0), &mut no_flush());
    c.put(k("b"), None, ctx(0), &mut no_flush());
    let flushed = c.flush();
    assert_eq!(flushed.len(), 2);
    assert_eq!(flushed[1].1.value, None);
    assert!(c.peek(b"b").is_none());
    assert!(c.peek(b"a").is_some());
}

#[test]
fn byte_accounting_is_shared_and_released() {
    let budget = CacheBudget::new(usize::MAX);
    let mut c1 = NamedCache::new("s1", budget.clone());
    let mut c2 = NamedCache::new("s2", budget.clone());
    c1.put(k("a"), Some(k("xyz")), ctx(0), &mut no_flush());
    c2.put(k("bb"), Some(k("1")), ctx(0), &mut no_flush());
    let want = one_entry_size("a", "xyz") + one_entry_size("bb", "1");
    assert_eq!(budget.used_bytes(), want);
    c1.put(k("a"), Some(k("x")), ctx(0), &mut no_flush());
    assert_eq!(c1.size_bytes(), one_entry_size("a", "x"));
    c1.clear();
    assert_eq!(budget.used_bytes(), one_entry_size("bb", "1"));
    drop(c2);
    assert_eq!(budget.used_bytes(), 0);
}

#[test]
fn evicts_lru_clean_entries_without_flushing() {
    let size = one_entry_size("a", "v");
    let mut c = NamedCache::new("s", CacheBudget::new(2 * size));
    c.put(k("a"), Some(k("v")), ctx(0), &mut no_flush());
    c.put(k("b"), Some(k("v")), ctx(0), &mut no_flush());
    assert_eq!(c.flush().len(), 2);
    assert!(c.get(b"a").is_some());
    c.put(k("c"), Some(k("v")), ctx(0), &mut no_flush());
    assert!(c.peek(b"b").is_none(), "b was least recently used");
    assert!(c.peek(b"a").is_some());
    assert!(c.peek(b"c").is_some());
    assert_eq!(c.metrics().evictions, 1);
    assert_eq!(c.metrics().eviction_flushes, 0);
}

#[test]
fn evicting_a_dirty_entry_flushes_all_dirty_entries_in_order() {
    let size = one_entry_size("a", "v");
    let mut c = NamedCache::new("s", CacheBudget::new(3 * size));
    let mut flushed: Vec<Vec<Bytes>> = Vec::new();
    let mut listener = |d: &mut Vec<DirtyEntry>| flushed.push(d.drain(..).map(|e| e.0).collect());
    for key in ["a", "b", "c"] {
        c.put(k(key), Some(k("v")), ctx(0), &mut listener);
    }
    c.put(k("b"), Some(k("w")), ctx(1), &mut listener);
    c.put(k("d"), Some(k("v")), ctx(2), &mut listener);
    assert_eq!(flushed, vec![vec![k("a"), k("c"), k("b"), k("d")]]);
    assert!(c.peek(b"a").is_none());
    assert_eq!(c.len(), 3);
    assert_eq!(c.dirty_len(), 0);
    assert_eq!(c.metrics().eviction_flushes, 1);
    assert_eq!(
        c.metrics().commit_flushes,
        0,
        "an eviction flush is not a commit's"
    );
    c.flush();
    assert_eq!(
        (c.metrics().commit_flushes, c.metrics().eviction_flushes),
        (1, 1)
    );
}

#[test]
fn only_the_written_cache_evicts() {
    let size = one_entry_size("a", "v");
    let budget = CacheBudget::new(2 * size);
    let mut c1 = NamedCache::new("s1", budget.clone());
    let mut c2 = NamedCache::new("s2", budget.clone());
    c1.put(k("a"), Some(k("v")), ctx(0), &mut no_flush());
    c1.put(k("b"), Some(k("v")), ctx(0), &mut no_flush());
    let mut flushed = Vec::new();
    c2.put(k("x"), Some(k("v")), ctx(0), &mut |d| flushed.append(d));
    assert!(c2.is_empty(), "c2 evicts its own entry, c1 keeps its two");
    assert_eq!(
        flushed.len(),
        1,
        "the evicted dirty entry reached the listener"
    );
    assert_eq!(c1.len(), 2);
    assert_eq!(budget.used_bytes(), 2 * size);
}

#[test]
fn zero_budget_flushes_every_put_immediately() {
    let mut c = NamedCache::new("s", CacheBudget::new(0));
    let mut seen = Vec::new();
    c.put(k("a"), Some(k("1")), ctx(0), &mut |d| seen.append(d));
    c.put(k("a"), Some(k("2")), ctx(1), &mut |d| seen.append(d));
    let values: Vec<Option<Bytes>> = seen.into_iter().map(|e| e.1.value).collect();
    assert_eq!(values, vec![Some(k("1")), Some(k("2"))]);
    assert!(c.is_empty());
}

#[test]
fn inverted_range_is_empty() {
    let mut c = NamedCache::new("s", CacheBudget::new(usize::MAX));
    c.put(k("m"), Some(k("v")), ctx(0), &mut no_flush());
    assert_eq!(c.range(b"z", b"a").count(), 0);
    assert_eq!(c.range(b"a", b"z").count(), 1);
}

/// A key from `x`: short, or a one- or two-byte prefix and a 16-byte suffix, so groups,
/// the short keys' group and prefixes of each other all occur.
fn model_key(x: u32) -> Bytes {
    let (a, b) = ((x >> 8) as u8 % 4, (x >> 16) as u8 % 4);
    match (x >> 24) % 3 {
        0 => Bytes::from(vec![a, b]),
        n => {
            let mut key = vec![a; n as usize];
            key.extend_from_slice(&[b; 15]);
            key.push((x >> 4) as u8 % 4);
            Bytes::from(key)
        }
    }
}

#[test]
fn group_ranges_and_scans_match_a_model_through_puts_flushes_and_evictions() {
    let mut c = NamedCache::new("s", CacheBudget::new(40 * one_entry_size("a", "v")));
    let mut model: std::collections::BTreeMap<Bytes, Option<Bytes>> = Default::default();
    let mut x: u32 = 99;
    for step in 0..3000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let key = model_key(x);
        let value = (!x.is_multiple_of(5)).then(|| Bytes::from(x.to_be_bytes().to_vec()));
        c.put(key, value, ctx(step), &mut |d| d.clear());
        if step % 97 == 0 {
            c.flush();
        }
        model.clear();
        model.extend(c.iter().map(|(k, e)| (k.clone(), e.value.clone())));
        let keys: Vec<&Bytes> = model.keys().collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "iter is key-ordered");
        for prefix in [&[1u8][..], &[2, 2], &[]] {
            let (lo, hi) = (&[1u8, 1][..], &[3u8][..]);
            let got: Vec<&Bytes> = c.range_in_group(prefix, lo, hi).map(|(k, _)| k).collect();
            let want: Vec<&Bytes> = keys
                .iter()
                .copied()
                .filter(|k| k.len() == prefix.len() + 16 && k.starts_with(prefix))
                .filter(|k| &k[..] >= lo && &k[..] < hi)
                .collect();
            assert_eq!(got, want, "prefix {prefix:?} at step {step}");
        }
        assert_eq!(c.len(), model.len());
        assert_eq!(
            c.size_bytes(),
            c.iter()
                .map(|(k, e)| entry_size(k, e.value.as_ref(), &e.context))
                .sum::<usize>()
        );
    }
    assert!(c.metrics().evictions > 0);
}

#[test]
fn entries_are_sized_as_kafka_streams_sizes_them() {
    // Java 4.4.0, a session key of 27 bytes, an 8-byte count, topic "clicks", no headers:
    // LRUNode (8-byte segment id + 27 + 24) + LRUCacheEntry (1 + 8 + 20 + 6).
    let key = [7u8; 27];
    let value = Bytes::from_static(&[0; 8]);
    let at = |topic: &str| RecordContext::new(topic, 3, 1_000, 2_000);
    assert_eq!(
        entry_size(&key, Some(&value), &at("clicks")),
        8 + 27 + 24 + 1 + 8 + 20 + 6
    );
    assert_eq!(
        entry_size(&key, None, &at("clicks")),
        8 + 27 + 24 + 1 + 20 + 6
    );
    // `String.toCharArray().length`: UTF-16 code units, not UTF-8 bytes.
    assert_eq!(
        entry_size(&key, None, &at("clé𝄞")) - entry_size(&key, None, &at("")),
        5
    );
}

#[test]
fn an_evicted_dirty_entry_heads_its_flush() {
    let size = one_entry_size("a", "v");
    let mut c = NamedCache::new("s", CacheBudget::new(3 * size));
    let mut flushed: Vec<Vec<Bytes>> = Vec::new();
    let mut listener = |d: &mut Vec<DirtyEntry>| flushed.push(d.drain(..).map(|e| e.0).collect());
    for key in ["a", "b", "c"] {
        c.put(k(key), Some(k("v")), ctx(0), &mut listener);
    }
    // LRU order b, c, a; dirty order a, b, c.
    assert!(c.get(b"a").is_some());
    c.put(k("d"), Some(k("v")), ctx(1), &mut listener);
    assert_eq!(
        flushed,
        vec![vec![k("b"), k("a"), k("c"), k("d")]],
        "Java's NamedCache.evict: the eldest first, then the dirty order"
    );
    assert!(c.peek(b"b").is_none());
    assert_eq!((c.len(), c.dirty_len()), (3, 0));
}

#[test]
fn touching_a_group_refreshes_the_lru_order_of_the_accepted_keys_only() {
    let key = |p: u8, i: u8| {
        let mut key = vec![p; 2];
        key.extend_from_slice(&[i; 16]);
        Bytes::from(key)
    };
    let size = entry_size(&key(0, 0), Some(&k("v")), &ctx(0));
    let mut c = NamedCache::new("s", CacheBudget::new(4 * size));
    for (p, i) in [(1, 1), (1, 2), (1, 3), (2, 1)] {
        c.put(key(p, i), Some(k("v")), ctx(0), &mut no_flush());
    }
    c.flush();
    // Group 1 within [key(1,2), key(1,9)), keys accepted but key(1,3): only key(1,2) is
    // refreshed; LRU order is now (1,1), (1,3), (2,1), (1,2).
    let (lo, hi) = (key(1, 2), key(1, 9));
    c.touch_in_group(&[1, 1], &lo, &hi, |k| k[2] != 3);
    assert_eq!(
        c.metrics().hits + c.metrics().misses,
        0,
        "a touch is no lookup"
    );
    for (n, gone) in [(5, key(1, 1)), (6, key(1, 3)), (7, key(2, 1))] {
        c.put(key(3, n), Some(k("v")), ctx(1), &mut |d| d.clear());
        assert!(c.peek(&gone).is_none(), "{gone:?} evicted in LRU order");
    }
    assert!(c.peek(&key(1, 2)).is_some());
}

/// Recomputes a cache's bytes from its entries.
fn recomputed(c: &NamedCache) -> usize {
    c.iter()
        .map(|(k, e)| entry_size(k, e.value.as_ref(), &e.context))
        .sum()
}

proptest::proptest! {
    /// Whatever the sequence of puts (values and tombstones, with topics of different
    /// lengths), reads, touches, evictions, flushes and clears across caches sharing one
    /// budget, each cache's bytes equal the sum of its entries' sizes and the budget's
    /// total equals the sum over the caches: the accounting never drifts.
    #[test]
    fn accounted_bytes_equal_the_recomputed_sum(
        ops in proptest::collection::vec((0u8..3, 0u8..10, 0u32..u32::MAX), 1..400),
        entries in 1usize..30,
    ) {
        let budget = CacheBudget::new(entries * one_entry_size("a", "v"));
        let mut caches: Vec<NamedCache> =
            (0..3).map(|i| NamedCache::new(format!("s{i}"), budget.clone())).collect();
        for (step, (which, op, x)) in ops.into_iter().enumerate() {
            let c = &mut caches[which as usize];
            let key = model_key(x);
            let topic = ["t", "topic", "töpic"][x as usize % 3];
            let context = RecordContext::new(topic, 0, step as i64, step as i64);
            match op {
                0..=3 => {
                    let value = Bytes::from(vec![0; x as usize % 20]);
                    c.put(key, Some(value), context, &mut |d| d.clear());
                }
                4 => c.put(key, None, context, &mut |d| d.clear()),
                5 => {
                    c.get(&key);
                }
                6 => c.touch_in_group(&key[..key.len().min(2)], &[], &[0xFF], |_| true),
                7 => {
                    c.evict_key(&key);
                }
                8 => {
                    c.flush();
                }
                _ if x % 7 == 0 => c.clear(),
                _ => c.put_all(
                    [(key.clone(), None), (model_key(x / 3), Some(key))],
                    context,
                    &mut |d| d.clear(),
                ),
            }
            for c in &caches {
                proptest::prop_assert_eq!(c.size_bytes(), recomputed(c), "step {}", step);
                proptest::prop_assert_eq!(c.len(), c.iter().count());
            }
            let total: usize = caches.iter().map(NamedCache::size_bytes).sum();
            proptest::prop_assert_eq!(budget.used_bytes(), total);
        }
    }
}
