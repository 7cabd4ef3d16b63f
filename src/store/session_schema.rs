//! Session composite key layout, byte-compatible with Kafka Streams' `SessionKeySchema`:
//! `key ‖ end (i64 big-endian) ‖ start (i64 big-endian)`, no length prefix. Owns encoding,
//! decoding and the byte ranges that list one key's sessions. Must not know about caches,
//! stores or serdes: it only moves bytes.
//!
//! Decoding never panics: a buffer shorter than the 16-byte suffix is
//! [`StoreError::ShortSessionKey`]. Because there is no length prefix, the sessions of `k`
//! and of `kk` can share a byte range; [`belongs_to`] is the check every listing applies.

use bytes::{BufMut, Bytes, BytesMut};

use crate::store::error::StoreError;
use crate::store::shared_bytes::shared_copy;

/// Bytes taken by the `end ‖ start` suffix.
pub const SUFFIX_LEN: usize = 16;

/// A decoded session composite key, borrowing the inner key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeyRef<'a> {
    /// Inner (record) key bytes.
    pub key: &'a [u8],
    /// Session start in milliseconds.
    pub start: i64,
    /// Session end in milliseconds.
    pub end: i64,
}

/// Encodes the composite key of session `[start, end]` of `key`.
/// One allocation (see [`shared_copy`]) for keys up to 112 bytes; clones allocate nothing.
pub fn session_key(key: &[u8], start: i64, end: i64) -> Bytes {
    const INLINE: usize = 128;
    let len = key.len() + SUFFIX_LEN;
    if len > INLINE {
        let mut buf = BytesMut::with_capacity(len);
        write_session_key(&mut buf, key, start, end);
        return shared_copy(&buf);
    }
    let mut buf = [0u8; INLINE];
    buf[..key.len()].copy_from_slice(key);
    buf[key.len()..key.len() + 8].copy_from_slice(&end.to_be_bytes());
    buf[key.len() + 8..len].copy_from_slice(&start.to_be_bytes());
    shared_copy(&buf[..len])
}

/// Appends the composite key of session `[start, end]` of `key` to `buf`.
pub fn write_session_key(buf: &mut BytesMut, key: &[u8], start: i64, end: i64) {
    buf.reserve(key.len() + SUFFIX_LEN);
    buf.put_slice(key);
    append_suffix(buf, start, end);
}

/// Appends the `end ‖ start` suffix to a buffer that already holds the serialized key.
pub fn append_suffix(buf: &mut BytesMut, start: i64, end: i64) {
    buf.put_i64(end);
    buf.put_i64(start);
}

/// Decodes a composite key into its inner key, start and end.
pub fn decode(composite: &[u8]) -> Result<SessionKeyRef<'_>, StoreError> {
    let key_len = composite
        .len()
        .checked_sub(SUFFIX_LEN)
        .ok_or(StoreError::ShortSessionKey {
            len: composite.len(),
            min: SUFFIX_LEN,
        })?;
    let (key, suffix) = composite.split_at(key_len);
    let (end, start) = suffix.split_at(8);
    Ok(SessionKeyRef {
        key,
        start: i64::from_be_bytes(to_array(start)),
        end: i64::from_be_bytes(to_array(end)),
    })
}

/// Inner key bytes of a composite key.
pub fn session_key_bytes_of(composite: &[u8]) -> Result<&[u8], StoreError> {
    decode(composite).map(|d| d.key)
}

/// Session end of a composite key.
pub fn session_end_of(composite: &[u8]) -> Result<i64, StoreError> {
    decode(composite).map(|d| d.end)
}

/// Session start of a composite key.
pub fn session_start_of(composite: &[u8]) -> Result<i64, StoreError> {
    decode(composite).map(|d| d.start)
}

/// Whether `composite` is a session key of exactly `key` (not of a key sharing its prefix).
pub fn belongs_to(composite: &[u8], key: &[u8]) -> bool {
    composite.len() == key.len() + SUFFIX_LEN && composite.starts_with(key)
}

/// Inclusive lower byte bound of the sessions of `key` whose end is at least
/// `earliest_end`, given that ends are non-negative (they sort as unsigned bytes).
///
/// A negative `earliest_end` selects every session of `key`. Sessions with negative ends
/// (possible only through the raw byte API) sort after all non-negative ones and stay
/// inside the range; callers filter on the decoded end.
pub fn lower_bound(key: &[u8], earliest_end: i64) -> Bytes {
    let mut buf = BytesMut::with_capacity(key.len() + SUFFIX_LEN);
    buf.put_slice(key);
    buf.put_i64(earliest_end.max(0));
    buf.put_i64(0);
    buf.freeze()
}

/// Exclusive upper byte bound of every session of `key`: `key ‖ 0xFF×16 ‖ 0x00`, the
/// smallest byte string above all 16-byte suffixes of `key`.
pub fn upper_bound(key: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(key.len() + SUFFIX_LEN + 1);
    buf.put_slice(key);
    buf.put_bytes(0xFF, SUFFIX_LEN);
    buf.put_u8(0);
    buf.freeze()
}

/// Writes [`lower_bound`]`(key, earliest_end)` followed by [`upper_bound`]`(key)` into
/// `buf` (cleared first) without allocating once `buf` has grown, and returns the index
/// where the upper bound starts: `(&buf[..i], &buf[i..])` are the two bounds.
pub fn write_bounds(buf: &mut Vec<u8>, key: &[u8], earliest_end: i64) -> usize {
    buf.clear();
    buf.extend_from_slice(key);
    buf.extend_from_slice(&earliest_end.max(0).to_be_bytes());
    buf.extend_from_slice(&0i64.to_be_bytes());
    let split = buf.len();
    buf.extend_from_slice(key);
    buf.extend_from_slice(&[0xFF; SUFFIX_LEN]);
    buf.push(0);
    split
}

fn to_array(slice: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(slice);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn write_bounds_equals_the_allocating_bounds() {
        let mut buf = Vec::new();
        for (key, end) in [(&b"ab"[..], 7i64), (b"", -3), (b"longer key", i64::MAX)] {
            let split = write_bounds(&mut buf, key, end);
            assert_eq!(&buf[..split], &lower_bound(key, end)[..]);
            assert_eq!(&buf[split..], &upper_bound(key)[..]);
        }
    }

    #[test]
    fn layout_is_key_then_end_then_start_big_endian() {
        let k = session_key(b"ab", 0x0102, 0x0A0B);
        let mut want = b"ab".to_vec();
        want.extend_from_slice(&0x0A0Bi64.to_be_bytes());
        want.extend_from_slice(&0x0102i64.to_be_bytes());
        assert_eq!(&k[..], &want[..]);
    }

    #[test]
    fn short_buffers_are_errors_not_panics() {
        for len in 0..SUFFIX_LEN {
            let buf = vec![7u8; len];
            assert_eq!(
                decode(&buf),
                Err(StoreError::ShortSessionKey {
                    len,
                    min: SUFFIX_LEN
                })
            );
            assert!(session_end_of(&buf).is_err());
            assert!(session_start_of(&buf).is_err());
            assert!(session_key_bytes_of(&buf).is_err());
        }
        let empty_key = session_key(b"", 3, 4);
        assert_eq!(
            decode(&empty_key).map(|d| (d.key.len(), d.start, d.end)),
            Ok((0, 3, 4))
        );
    }

    #[test]
    fn prefix_keys_do_not_belong_to_each_other() {
        let k = session_key(b"k", 0, 10);
        let kk = session_key(b"kk", 0, 10);
        assert!(belongs_to(&k, b"k"));
        assert!(!belongs_to(&kk, b"k"));
        assert!(!belongs_to(&k, b"kk"));
        assert!(belongs_to(&kk, b"kk"));
    }

    proptest! {
        #[test]
        fn round_trip(key in proptest::collection::vec(any::<u8>(), 0..24), start in any::<i64>(), end in any::<i64>()) {
            let composite = session_key(&key, start, end);
            let d = decode(&composite).expect("encoded key decodes");
            prop_assert_eq!(d.key, &key[..]);
            prop_assert_eq!(d.start, start);
            prop_assert_eq!(d.end, end);
            prop_assert!(belongs_to(&composite, &key));
        }

        #[test]
        fn same_key_orders_by_end_then_start(
            key in proptest::collection::vec(any::<u8>(), 0..8),
            a in (0i64..i64::MAX, 0i64..i64::MAX),
            b in (0i64..i64::MAX, 0i64..i64::MAX),
        ) {
            let ka = session_key(&key, a.0, a.1);
            let kb = session_key(&key, b.0, b.1);
            prop_assert_eq!(ka.cmp(&kb), (a.1, a.0).cmp(&(b.1, b.0)));
        }

        #[test]
        fn bounds_cover_exactly_the_wanted_sessions(
            key in proptest::collection::vec(any::<u8>(), 0..6),
            other in proptest::collection::vec(any::<u8>(), 0..6),
            start in 0i64..1000,
            end in 0i64..1000,
            earliest_end in -5i64..1000,
        ) {
            let lo = lower_bound(&key, earliest_end);
            let hi = upper_bound(&key);
            let own = session_key(&key, start, end);
            let in_range = own >= lo && own < hi;
            prop_assert_eq!(in_range, end >= earliest_end);
            let foreign = session_key(&other, start, end);
            if foreign >= lo && foreign < hi {
                prop_assert!(!belongs_to(&foreign, &key) || other == key);
            }
        }
    }
}
