//! Contract tests every [`ByteKeyValueStore`] implementation must pass: point operations,
//! ordered and grouped scans against a `BTreeMap` model, size accounting and the optional
//! time index. Instantiated per store type by
//! [`byte_store_contract_tests!`](crate::byte_store_contract_tests).

use super::*;

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

pub fn starts_empty<S: ByteKeyValueStore>(s: S) {
    assert!(s.is_empty());
    assert_eq!(s.len(), 0);
    assert_eq!(s.get(b"a").unwrap(), None);
    assert!(s.scan_all().unwrap().is_empty());
}

pub fn prefetch_changes_nothing<S: ByteKeyValueStore>(mut s: S) {
    let long = |c: u8, t: u8| {
        Bytes::from(vec![
            c, c, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, t,
        ])
    };
    for (k, v) in [
        (long(b'x', 1), b(b"1")),
        (long(b'x', 2), b(b"2")),
        (b(b"s"), b(b"3")),
    ] {
        s.put(k, v).unwrap();
    }
    let before = s.scan_all().unwrap();
    for k in [
        long(b'x', 1),
        long(b'x', 9),
        long(b'y', 1),
        b(b"s"),
        b(b""),
        b(b"t"),
    ] {
        s.prefetch(&k);
    }
    assert_eq!(s.scan_all().unwrap(), before);
    assert_eq!(s.len(), 3);
}

pub fn put_get_overwrite<S: ByteKeyValueStore>(mut s: S) {
    s.put(b(b"a"), b(b"1")).unwrap();
    assert_eq!(s.get(b"a").unwrap(), Some(b(b"1")));
    s.put(b(b"a"), b(b"22")).unwrap();
    assert_eq!(s.get(b"a").unwrap(), Some(b(b"22")));
    assert_eq!(s.len(), 1);
}

pub fn delete_returns_old_and_is_idempotent<S: ByteKeyValueStore>(mut s: S) {
    s.put(b(b"a"), b(b"1")).unwrap();
    assert_eq!(s.delete(b"a").unwrap(), Some(b(b"1")));
    assert_eq!(s.delete(b"a").unwrap(), None);
    assert_eq!(s.get(b"a").unwrap(), None);
    assert!(s.is_empty());
}

pub fn range_is_half_open_and_ordered<S: ByteKeyValueStore>(mut s: S) {
    for k in [&b"c"[..], b"a", b"b", b"\xff", b"\x00", b"ab"] {
        s.put(Bytes::copy_from_slice(k), Bytes::copy_from_slice(k))
            .unwrap();
    }
    let keys: Vec<Bytes> = s
        .range(b"a", b"c")
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(keys, vec![b(b"a"), b(b"ab"), b(b"b")]);
    assert!(s.range(b"c", b"a").unwrap().is_empty());
    assert!(s.range(b"b", b"b").unwrap().is_empty());
    let all: Vec<Bytes> = s.scan_all().unwrap().into_iter().map(|e| e.0).collect();
    assert_eq!(
        all,
        vec![b(b"\x00"), b(b"a"), b(b"ab"), b(b"b"), b(b"c"), b(b"\xff")]
    );
}

pub fn clear_empties<S: ByteKeyValueStore>(mut s: S) {
    s.put(b(b"a"), b(b"1")).unwrap();
    s.put(b(b"b"), b(b"2")).unwrap();
    s.clear().unwrap();
    assert!(s.is_empty());
    assert_eq!(s.get(b"a").unwrap(), None);
    assert_eq!(s.approximate_bytes(), 0);
}

pub fn approximate_bytes_tracks_contents<S: ByteKeyValueStore>(mut s: S) {
    let empty = s.approximate_bytes();
    s.put(b(b"key"), Bytes::from(vec![0u8; 100])).unwrap();
    let one = s.approximate_bytes();
    assert!(one >= empty + 103, "{one} < {empty} + 103");
    s.put(b(b"key"), Bytes::from(vec![0u8; 10])).unwrap();
    assert!(s.approximate_bytes() < one);
    s.delete(b"key").unwrap();
    assert_eq!(s.approximate_bytes(), empty);
}

/// A key from `x`: two bytes, or a one- or two-byte prefix and a 16-byte suffix (so
/// stores that group keys by prefix see groups, short keys and shared prefixes).
fn model_key(x: u32) -> Bytes {
    let (a, b) = ((x >> 8) as u8 % 16, (x >> 16) as u8 % 4);
    match (x >> 24) % 3 {
        0 => Bytes::from(vec![a, b]),
        n => {
            let mut k = vec![a; n as usize];
            k.extend_from_slice(&[b; 15]);
            k.push((x >> 4) as u8 % 4);
            Bytes::from(k)
        }
    }
}

pub fn group_scan_matches_filtered_range<S: ByteKeyValueStore>(mut s: S) {
    let mut x: u32 = 777;
    for _ in 0..1500 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        s.put(model_key(x), Bytes::from(x.to_be_bytes().to_vec()))
            .unwrap();
    }
    let all = s.scan_all().unwrap();
    for prefix in [&[][..], &[3], &[3, 3], &[9, 9]] {
        for (lo, hi) in [
            (Bound::Unbounded, Bound::Unbounded),
            (
                Bound::Included(&[3, 3, 1][..]),
                Bound::Excluded(&[3, 3, 2, 2][..]),
            ),
            (Bound::Excluded(&[3][..]), Bound::Included(&[9][..])),
        ] {
            let mut got = Vec::new();
            s.for_each_in_group(prefix, 16, lo, hi, &mut |k, v| {
                got.push((k.clone(), v.clone()))
            })
            .unwrap();
            let want: Vec<(Bytes, Bytes)> = all
                .iter()
                .filter(|(k, _)| {
                    k.len() == prefix.len() + 16 && k.starts_with(prefix) && in_bounds(k, lo, hi)
                })
                .cloned()
                .collect();
            assert_eq!(got, want, "prefix {prefix:?}, bounds {lo:?}..{hi:?}");
        }
    }
}

/// A grouped key: `prefix ‖ time (8 bytes BE) ‖ 8 more bytes`.
fn timed_key(prefix: &[u8], time: i64, tail: u64) -> Bytes {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&time.to_be_bytes());
    k.extend_from_slice(&tail.to_be_bytes());
    Bytes::from(k)
}

pub fn time_index_deletes_through_the_horizon<S: ByteKeyValueStore>(mut s: S) {
    if !s.is_time_indexed() {
        s.put(timed_key(b"k", 5, 0), b(b"v")).unwrap();
        assert_eq!(s.delete_timed_through(i64::MAX).unwrap(), 0);
        assert_eq!(s.max_time().unwrap(), None);
        assert_eq!(s.len(), 1);
        return;
    }
    assert_eq!(s.max_time().unwrap(), None);
    let mut model = BTreeMap::new();
    for (i, time) in [7i64, -3, 0, 12, 7, 30, 2].into_iter().enumerate() {
        for prefix in [&b""[..], b"a", b"ab"] {
            let (k, v) = (
                timed_key(prefix, time, i as u64),
                Bytes::from(vec![i as u8; i]),
            );
            s.put(k.clone(), v.clone()).unwrap();
            model.insert(k, v);
        }
    }
    s.put(b(b"short"), b(b"never expires")).unwrap();
    model.insert(b(b"short"), b(b"never expires"));
    // An overwrite keeps one index entry.
    s.put(timed_key(b"a", 12, 3), b(b"again")).unwrap();
    model.insert(timed_key(b"a", 12, 3), b(b"again"));
    assert_eq!(s.max_time().unwrap(), Some(30));
    let bytes_with = s.approximate_bytes();
    for horizon in [-10, 0, 0, 7, 11] {
        let before = model.len();
        model.retain(|k: &Bytes, _| {
            k.len() < 16
                || i64::from_be_bytes(k[k.len() - 16..k.len() - 8].try_into().unwrap()) > horizon
        });
        assert_eq!(
            s.delete_timed_through(horizon).unwrap(),
            before - model.len(),
            "through {horizon}"
        );
        assert_eq!(
            s.scan_all().unwrap(),
            model.clone().into_iter().collect::<Vec<_>>()
        );
        assert_eq!(s.len(), model.len());
    }
    assert!(s.approximate_bytes() < bytes_with);
    // A key written behind the horizon is still found by the next pass.
    s.put(timed_key(b"z", 1, 0), b(b"late")).unwrap();
    s.delete(&timed_key(b"a", 30, 5)).unwrap();
    model.remove(&timed_key(b"a", 30, 5));
    assert_eq!(
        s.delete_timed_through(12).unwrap(),
        4,
        "the late key and three at 12"
    );
    model.retain(|k: &Bytes, _| {
        k.len() < 16 || i64::from_be_bytes(k[k.len() - 16..k.len() - 8].try_into().unwrap()) > 12
    });
    assert_eq!(
        s.scan_all().unwrap(),
        model.clone().into_iter().collect::<Vec<_>>()
    );
    assert_eq!(s.max_time().unwrap(), Some(30));
    s.clear().unwrap();
    assert_eq!(s.max_time().unwrap(), None);
    assert_eq!(s.delete_timed_through(100).unwrap(), 0);
}

pub fn matches_btreemap_model<S: ByteKeyValueStore>(mut s: S) {
    let mut model = BTreeMap::new();
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let key = model_key(x);
        if x.is_multiple_of(3) {
            assert_eq!(s.delete(&key).unwrap(), model.remove(&key));
        } else {
            let v = Bytes::from(x.to_be_bytes().to_vec());
            s.put(key.clone(), v.clone()).unwrap();
            model.insert(key, v);
        }
    }
    let want: Vec<(Bytes, Bytes)> = model.clone().into_iter().collect();
    assert_eq!(s.scan_all().unwrap(), want);
    assert_eq!(s.len(), want.len());
    for (lo, hi) in [
        (&[1u8][..], &[3u8, 3][..]),
        (&[2, 2, 2][..], &[2, 2, 2, 3][..]),
    ] {
        let want: Vec<(Bytes, Bytes)> = model
            .range::<[u8], _>((Bound::Included(lo), Bound::Excluded(hi)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(s.range(lo, hi).unwrap(), want);
    }
}
