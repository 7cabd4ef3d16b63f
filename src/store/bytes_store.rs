//! The byte key-value store below the cache: the `ByteKeyValueStore` trait, its in-memory
//! implementation (keys grouped by all but their last [`GROUP_SUFFIX_LEN`] bytes in a hash
//! map, so one group's entries are found without comparing other groups' bytes), and the
//! contract test suite every implementation must pass. Owns ordered byte storage; must not know about sessions,
//! caching, record contexts or Kafka (the caching store above decides what is written).

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::ops::Bound;

use bytes::Bytes;
use hashbrown::HashTable;
use smallvec::SmallVec;

use crate::store::error::StoreError;

/// Fixed per-entry cost counted by [`InMemoryBytesStore::approximate_bytes`] on top of the
/// key and value bytes: two `Bytes` handles, the group's prefix handle and a share of the
/// hash table.
pub const IN_MEMORY_ENTRY_OVERHEAD: usize = 112;

/// [`InMemoryBytesStore`] groups keys by all but their last this many bytes (a session
/// composite key's `end ‖ start` suffix: a group is one record key's sessions).
pub const GROUP_SUFFIX_LEN: usize = 16;

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
    /// Calls `visit` on every entry within the bounds whose key is `prefix` followed by
    /// exactly `suffix_len` bytes, in ascending key order. Stores that group keys by prefix
    /// answer it without visiting other prefixes; the default filters [`for_each_in`](Self::for_each_in).
    fn for_each_in_group(
        &self,
        prefix: &[u8],
        suffix_len: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        self.for_each_in(lo, hi, &mut |k, v| {
            if k.len() == prefix.len() + suffix_len && k.starts_with(prefix) {
                visit(k, v);
            }
        })
    }
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
    fn for_each_in_group(
        &self,
        prefix: &[u8],
        suffix_len: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        (**self).for_each_in_group(prefix, suffix_len, lo, hi, visit)
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

/// One group's entries, sorted by key (all keys of a group have the same length, so key
/// order is suffix order). One entry, the common case, is held inline.
type Group = SmallVec<[(Bytes, Bytes); 1]>;

/// In-memory [`ByteKeyValueStore`]: keys of at least [`GROUP_SUFFIX_LEN`] bytes live in
/// groups by their prefix (all but the last [`GROUP_SUFFIX_LEN`] bytes), each group's
/// entries sorted; shorter keys in a `BTreeMap`. The groups sit in a slab (`Vec`, freed
/// slots reused) and a hash table of slab indices finds a group by its prefix, read from
/// the group's first key: no prefix is stored twice and the table holds 4 bytes a group,
/// so memory per entry stays close to the keys and values themselves. Point operations
/// and [`for_each_in_group`](ByteKeyValueStore::for_each_in_group) hash the prefix once
/// and never compare other groups' bytes (bar a hash collision); an ordered scan over
/// groups ([`for_each_in`](ByteKeyValueStore::for_each_in)) sorts what it visits
/// (snapshots and reopen scans, not the per-record path).
#[derive(Debug, Default, Clone)]
pub struct InMemoryBytesStore {
    index: HashTable<u32>,
    groups: Vec<Group>,
    free_groups: Vec<u32>,
    hasher: foldhash::fast::RandomState,
    short: BTreeMap<Bytes, Bytes>,
    len: usize,
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

    fn prefix_of(key: &[u8]) -> Option<&[u8]> {
        key.len().checked_sub(GROUP_SUFFIX_LEN).map(|n| &key[..n])
    }

    fn removed(&mut self, key: &[u8], old: &Option<Bytes>) {
        if let Some(v) = old {
            self.bytes -= Self::entry_bytes(key, v);
            self.len -= 1;
        }
    }

    /// Slab index of the group of `prefix`, if it has entries.
    fn find_group(&self, prefix: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(prefix);
        let groups = &self.groups;
        self.index
            .find(hash, |&g| group_prefix(&groups[g as usize]) == prefix)
            .copied()
    }

    /// The group of `prefix`, created empty if missing.
    fn group_mut_or_insert(&mut self, prefix: &[u8]) -> &mut Group {
        let hash = self.hasher.hash_one(prefix);
        let Self {
            index,
            groups,
            free_groups,
            hasher,
            ..
        } = self;
        let found = index
            .find(hash, |&g| group_prefix(&groups[g as usize]) == prefix)
            .copied();
        let g = match found {
            Some(g) => g,
            None => {
                let g = match free_groups.pop() {
                    Some(g) => g,
                    None => {
                        groups.push(Group::new());
                        u32::try_from(groups.len() - 1).expect("fewer than 2^32 groups")
                    }
                };
                // Growing the table rehashes the groups already in it (each has a first
                // entry to read its prefix from); the new one joins after, empty until the
                // caller inserts its first entry.
                index.insert_unique(hash, g, |&h| {
                    hasher.hash_one(group_prefix(&groups[h as usize]))
                });
                g
            }
        };
        &mut groups[g as usize]
    }

    /// Frees group `g` (now empty) of `prefix`.
    fn remove_group(&mut self, prefix: &[u8], g: u32) {
        let hash = self.hasher.hash_one(prefix);
        if let Ok(entry) = self.index.find_entry(hash, |&h| h == g) {
            entry.remove();
        }
        self.groups[g as usize] = Group::new();
        self.free_groups.push(g);
    }
}

/// A non-empty group's prefix: its first key without the suffix.
fn group_prefix(group: &Group) -> &[u8] {
    group
        .first()
        .map_or(&[][..], |(k, _)| &k[..k.len() - GROUP_SUFFIX_LEN])
}

/// Whether `key` lies within the bounds.
pub(crate) fn in_bounds(key: &[u8], lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(l) => key >= l,
        Bound::Excluded(l) => key > l,
    };
    above
        && match hi {
            Bound::Unbounded => true,
            Bound::Included(h) => key <= h,
            Bound::Excluded(h) => key < h,
        }
}

impl ByteKeyValueStore for InMemoryBytesStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let Some(prefix) = Self::prefix_of(key) else {
            return Ok(self.short.get(key).cloned());
        };
        Ok(self.find_group(prefix).and_then(|g| {
            let g = &self.groups[g as usize];
            g.binary_search_by(|(k, _)| k[..].cmp(key))
                .ok()
                .map(|i| g[i].1.clone())
        }))
    }

    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        let Some(prefix_len) = key.len().checked_sub(GROUP_SUFFIX_LEN) else {
            let (k, v) = (key.clone(), value.clone());
            let old = self.short.insert(key, value);
            self.bytes += Self::entry_bytes(&k, &v);
            match old {
                Some(old) => self.bytes -= Self::entry_bytes(&k, &old),
                None => self.len += 1,
            }
            return Ok(());
        };
        let (len, value_len) = (key.len(), value.len());
        let group = self.group_mut_or_insert(&key[..prefix_len]);
        let old = match group.binary_search_by(|(k, _)| k[..].cmp(&key[..])) {
            Ok(i) => Some(std::mem::replace(&mut group[i].1, value)),
            Err(i) => {
                group.insert(i, (key, value));
                None
            }
        };
        self.bytes += len + value_len + IN_MEMORY_ENTRY_OVERHEAD;
        match old {
            Some(old) => self.bytes -= len + old.len() + IN_MEMORY_ENTRY_OVERHEAD,
            None => self.len += 1,
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let Some(prefix) = Self::prefix_of(key) else {
            let old = self.short.remove(key);
            self.removed(key, &old);
            return Ok(old);
        };
        let Some(g) = self.find_group(prefix) else {
            return Ok(None);
        };
        let group = &mut self.groups[g as usize];
        let old = match group.binary_search_by(|(k, _)| k[..].cmp(key)) {
            Ok(i) => Some(group.remove(i).1),
            Err(_) => None,
        };
        if group.is_empty() {
            self.remove_group(prefix, g);
        }
        self.removed(key, &old);
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
        let mut hits: Vec<(&Bytes, &Bytes)> = self
            .groups
            .iter()
            .flat_map(|g| g.iter().map(|(k, v)| (k, v)))
            .filter(|(k, _)| in_bounds(k, lo, hi))
            .collect();
        hits.extend(self.short.range::<[u8], _>((lo, hi)));
        hits.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in hits {
            visit(k, v);
        }
        Ok(())
    }

    fn for_each_in_group(
        &self,
        prefix: &[u8],
        suffix_len: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        if suffix_len != GROUP_SUFFIX_LEN {
            return self.for_each_in(lo, hi, &mut |k, v| {
                if k.len() == prefix.len() + suffix_len && k.starts_with(prefix) {
                    visit(k, v);
                }
            });
        }
        if let Some(g) = self.find_group(prefix) {
            for (k, v) in self.groups[g as usize]
                .iter()
                .filter(|(k, _)| in_bounds(k, lo, hi))
            {
                visit(k, v);
            }
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<(), StoreError> {
        self.index.clear();
        self.groups.clear();
        self.free_groups.clear();
        self.short.clear();
        self.len = 0;
        self.bytes = 0;
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
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
                        k.len() == prefix.len() + 16
                            && k.starts_with(prefix)
                            && in_bounds(k, lo, hi)
                    })
                    .cloned()
                    .collect();
                assert_eq!(got, want, "prefix {prefix:?}, bounds {lo:?}..{hi:?}");
            }
        }
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
            fn group_scan_matches_filtered_range() {
                contract::group_scan_matches_filtered_range(($make)());
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
