//! [`shared_copy`]: a `Bytes` copy of a short byte string in one heap allocation that
//! clones without allocating. Owns nothing else.
//!
//! `Bytes::copy_from_slice` (and `BytesMut::freeze`) make a "promotable" `Bytes`: its first
//! clone allocates a shared header, so a key or value that is created, staged in the cache
//! and cloned into a flush costs two allocations. The store clones every key and value it
//! holds at least once (cache to flush, flush to inner store), so the keys and values of the
//! per-record path are built here instead: the bytes sit inline next to the reference count.

use bytes::Bytes;

/// A byte string of at most `N` bytes stored inline.
struct Inline<const N: usize> {
    len: u8,
    buf: [u8; N],
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

fn inline<const N: usize>(src: &[u8]) -> Bytes {
    let mut buf = [0u8; N];
    buf[..src.len()].copy_from_slice(src);
    let len = u8::try_from(src.len()).expect("inline sizes fit a u8");
    Bytes::from_owner(Inline { len, buf })
}

/// A copy of `src` whose clones share it by reference count: one allocation for up to 128
/// bytes (sized to the next of 8, 16, 24, 32, 48, 64, 96 or 128), two beyond; none for an
/// empty slice.
pub fn shared_copy(src: &[u8]) -> Bytes {
    match src.len() {
        0 => Bytes::new(),
        1..=8 => inline::<8>(src),
        9..=16 => inline::<16>(src),
        17..=24 => inline::<24>(src),
        25..=32 => inline::<32>(src),
        33..=48 => inline::<48>(src),
        49..=64 => inline::<64>(src),
        65..=96 => inline::<96>(src),
        97..=128 => inline::<128>(src),
        _ => Bytes::from_owner(src.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_exactly() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..=200 {
            let b = shared_copy(&data[..len]);
            assert_eq!(&b[..], &data[..len], "length {len}");
            let c = b.clone();
            drop(b);
            assert_eq!(
                &c[..],
                &data[..len],
                "clone outlives the original, length {len}"
            );
            assert_eq!(c.slice(len / 2..), &data[len / 2..len]);
        }
    }
}
