//! The byte key-value store below the cache: the `ByteKeyValueStore` trait, its in-memory
//! implementation on a `BTreeMap<Bytes, Bytes>`, and the contract test suite every
//! implementation must pass. Owns ordered byte storage; must not know about sessions,
//! caching, record contexts or Kafka (the caching store above decides what is written).

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::store::error::StoreError;

/// Fixed per-entry cost counted by [`InMemoryBytesStore::approximate_bytes`] on top of the
/// key and value bytes: two `Bytes` handles plus a share of the B-tree node.
pub const IN_MEMORY_ENTRY_OVERHEAD: usize = 80;

/// An ordered map of byte keys to byte values (keys compare as unsigned bytes).
///
/// Synchronous and `&mut self` for writes: a task owns its stores. Every operation returns
/// `Result` so a persistent implementation can report I/O failures.
pub trait ByteKeyValueStore: Send {
    /// Value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;
    /// Stores `value` under `key`, replacing any previous value.
    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError>;
    /// Removes `key`, returning the value it had.
    fn delete(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;
    /// Calls `visit` on every entry within the bounds, in ascending key order.
    fn for_each_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError>;
    /// Removes every entry.
    fn clear(&mut self) -> Result<(), StoreError>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// Approximate memory or disk footprint in bytes (keys, values and per-entry overhead).
    fn approximate_bytes(&self) -> usize;

    /// Whether the store holds no entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries with `lo <= key < hi`, in ascending key order.
    fn range(&self, lo: &[u8], hi: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let mut out = Vec::new();
        if lo < hi {
            self.for_each_in(Bound::Included(lo), Bound::Excluded(hi), &mut |k, v| {
                out.push((k.clone(), v.clone()))
            })?;
        }
        Ok(out)
    }

    /// Every entry, in ascending key order.
    fn scan_all(&self) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each_in(Bound::Unbounded, Bound::Unbounded, &mut |k, v| {
            out.push((k.clone(), v.clone()))
        })?;
        Ok(out)
    }
}

impl<T: ByteKeyValueStore + ?Sized> ByteKeyValueStore for Box<T> {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        (**self).get(key)
    }
    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        (**self).put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        (**self).delete(key)
    }
    fn for_each_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        (**self).for_each_in(lo, hi, visit)
    }
    fn clear(&mut self) -> Result<(), StoreError> {
        (**self).clear()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn approximate_bytes(&self) -> usize {
        (**self).approximate_bytes()
    }
}

/// In-memory [`ByteKeyValueStore`] on a `BTreeMap<Bytes, Bytes>`.
#[derive(Debug, Default, Clone)]
pub struct InMemoryBytesStore {
    map: BTreeMap<Bytes, Bytes>,
    bytes: usize,
}

impl InMemoryBytesStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry_bytes(key: &[u8], value: &[u8]) -> usize {
        key.len() + value.len() + IN_MEMORY_ENTRY_OVERHEAD
    }
}

impl ByteKeyValueStore for InMemoryBytesStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        let added = Self::entry_bytes(&key, &value);
        if let Some(old) = self.map.insert(key.clone(), value) {
            self.bytes -= Self::entry_bytes(&key, &old);
        }
        self.bytes += added;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let old = self.map.remove(key);
        if let Some(v) = &old {
            self.bytes -= Self::entry_bytes(key, v);
        }
        Ok(old)
    }

    fn for_each_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        if !bounds_non_empty(lo, hi) {
            return Ok(());
        }
        for (k, v) in self.map.range::<[u8], _>((lo, hi)) {
            visit(k, v);
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<(), StoreError> {
        self.map.clear();
        self.bytes = 0;
        Ok(())
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn approximate_bytes(&self) -> usize {
        self.bytes
    }
}

/// Whether a pair of bounds can hold any key. `BTreeMap::range` panics on inverted or
/// empty-excluded bounds; callers pass input-derived bounds, so they are checked first.
pub fn bounds_non_empty(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => true,
        (Bound::Included(a), Bound::Included(b)) => a <= b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a < b,
    }
}

/// Contract tests every [`ByteKeyValueStore`] implementation must pass. Instantiate them
/// with [`byte_store_contract_tests!`](crate::byte_store_contract_tests) and a factory of
/// empty stores.
#[cfg(test)]
pub(crate) mod contract {
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

    pub fn matches_btreemap_model<S: ByteKeyValueStore>(mut s: S) {
        let mut model = BTreeMap::new();
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let key = Bytes::from(vec![(x >> 8) as u8 % 16, (x >> 16) as u8 % 4]);
            if x.is_multiple_of(3) {
                assert_eq!(s.delete(&key).unwrap(), model.remove(&key));
            } else {
                let v = Bytes::from(x.to_be_bytes().to_vec());
                s.put(key.clone(), v.clone()).unwrap();
                model.insert(key, v);
            }
        }
        let want: Vec<(Bytes, Bytes)> = model.into_iter().collect();
        assert_eq!(s.scan_all().unwrap(), want);
        assert_eq!(s.len(), want.len());
    }
}

/// Generates one `#[test]` per contract case for a store type: `byte_store_contract_tests!(
/// module_name, || MyStore::new())`.
#[cfg(test)]
#[macro_export]
macro_rules! byte_store_contract_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            use $crate::store::bytes_store::contract;
            #[test]
            fn starts_empty() {
                contract::starts_empty(($make)());
            }
            #[test]
            fn put_get_overwrite() {
                contract::put_get_overwrite(($make)());
            }
            #[test]
            fn delete_returns_old_and_is_idempotent() {
                contract::delete_returns_old_and_is_idempotent(($make)());
            }
            #[test]
            fn range_is_half_open_and_ordered() {
                contract::range_is_half_open_and_ordered(($make)());
            }
            #[test]
            fn clear_empties() {
                contract::clear_empties(($make)());
            }
            #[test]
            fn approximate_bytes_tracks_contents() {
                contract::approximate_bytes_tracks_contents(($make)());
            }
            #[test]
            fn matches_btreemap_model() {
                contract::matches_btreemap_model(($make)());
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::byte_store_contract_tests!(in_memory, InMemoryBytesStore::new);
    crate::byte_store_contract_tests!(boxed_dyn, || -> Box<dyn ByteKeyValueStore> {
        Box::new(InMemoryBytesStore::new())
    });

    #[test]
    fn inverted_bounds_do_not_panic() {
        let mut s = InMemoryBytesStore::new();
        s.put(Bytes::from_static(b"m"), Bytes::new()).unwrap();
        let mut seen = 0;
        s.for_each_in(
            Bound::Excluded(&b"m"[..]),
            Bound::Excluded(&b"m"[..]),
            &mut |_, _| seen += 1,
        )
        .unwrap();
        s.for_each_in(
            Bound::Included(&b"z"[..]),
            Bound::Included(&b"a"[..]),
            &mut |_, _| seen += 1,
        )
        .unwrap();
        assert_eq!(seen, 0);
    }
}
