//! Snapshot files of a [`ByteKeyValueStore`]: every entry of the store written to one file,
//! so that a restarted process loads its state from disk and replays only the changelog tail.
//! Owns the file format, its atomic write and its validating read; must not know Kafka,
//! tasks or sessions (the caller decides what `position` means and where the file lives).
//!
//! Format, version 1 (integers big-endian):
//!
//! ```text
//! magic     4 bytes  "KSNP"
//! version   u32      1
//! position  i64      caller-defined (kstate: the last changelog offset the entries reflect)
//! entries   repeated { key_len u32, key, value_len u32, value }, ascending key order
//! count     u64      number of entries
//! crc       u32      CRC-32 (IEEE, as zlib computes it) of every byte before it
//! ```
//!
//! A write goes to `<file>.tmp`, is fsynced, renamed over the file and the directory is
//! fsynced: a crash leaves the old file or the new one, never a torn one. A read checks the
//! length, magic, version and checksum before it decodes an entry, so a corrupt or truncated
//! file is a typed [`SnapshotError::Corrupt`], never a panic and never a half-loaded store.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::store::bytes_store::ByteKeyValueStore;
use crate::store::error::StoreError;

/// First bytes of every snapshot file.
pub const MAGIC: [u8; 4] = *b"KSNP";
/// The version this code writes (and the only one it reads).
pub const VERSION: u32 = 1;
const HEADER: usize = 4 + 4 + 8;
const TRAILER: usize = 8 + 4;

/// Why a snapshot file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("{len} bytes is shorter than the {min} bytes of an empty snapshot")]
    Truncated { len: usize, min: usize },
    #[error("bad magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported version {version} (this build reads {VERSION})")]
    UnsupportedVersion { version: u32 },
    #[error("checksum {found:#010x} does not match the content's {computed:#010x}")]
    Checksum { found: u32, computed: u32 },
    #[error("entry {entry} at byte {at}: a length of {len} runs past the entries' end")]
    EntryOverrun { entry: u64, at: usize, len: u64 },
    #[error("the trailer counts {declared} entries, the file holds {found}")]
    Count { declared: u64, found: u64 },
}

/// Errors reading or writing a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt {
        path: PathBuf,
        #[source]
        reason: Corruption,
    },
    #[error("snapshot {path}: an entry is too large for the format ({len} bytes)")]
    EntryTooLarge { path: PathBuf, len: usize },
    #[error("snapshot {path}: reading the store")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
}

/// A snapshot read back: the writer's position and the entries in ascending key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub position: i64,
    pub entries: Vec<(Bytes, Bytes)>,
}

/// What a write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    pub entries: u64,
    pub bytes: u64,
}

/// A `Write` that feeds every byte to a CRC-32 on its way to the file.
struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn len_u32(len: usize, path: &Path) -> Result<[u8; 4], SnapshotError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| SnapshotError::EntryTooLarge {
            path: path.to_path_buf(),
            len,
        })
}

/// Writes every entry of `store` with `position` to `path`, atomically and durably (see the
/// module doc). Creates the parent directory.
pub fn write_snapshot<S: ByteKeyValueStore + ?Sized>(
    store: &S,
    position: i64,
    path: &Path,
) -> Result<SnapshotStats, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = write_file(store, position, path, &tmp);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    fs::rename(&tmp, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    result
}

fn write_file<S: ByteKeyValueStore + ?Sized>(
    store: &S,
    position: i64,
    path: &Path,
    tmp: &Path,
) -> Result<SnapshotStats, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(io)?;
    let mut out = Checksummed {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        written: 0,
    };
    out.write_all(&MAGIC).map_err(io)?;
    out.write_all(&VERSION.to_be_bytes()).map_err(io)?;
    out.write_all(&position.to_be_bytes()).map_err(io)?;
    // The visitor cannot return an error: keep the first one and skip the rest.
    let mut failed: Option<SnapshotError> = None;
    let mut count = 0u64;
    store
        .for_each_in(Bound::Unbounded, Bound::Unbounded, &mut |k, v| {
            if failed.is_some() {
                return;
            }
            let entry = len_u32(k.len(), path).and_then(|kl| {
                let vl = len_u32(v.len(), path)?;
                out.write_all(&kl)
                    .and_then(|()| out.write_all(k))
                    .and_then(|()| out.write_all(&vl))
                    .and_then(|()| out.write_all(v))
                    .map_err(io)
            });
            match entry {
                Ok(()) => count += 1,
                Err(e) => failed = Some(e),
            }
        })
        .map_err(|source| SnapshotError::Store {
            path: path.to_path_buf(),
            source,
        })?;
    if let Some(e) = failed {
        return Err(e);
    }
    out.write_all(&count.to_be_bytes()).map_err(io)?;
    let crc = out.crc.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_be_bytes()).map_err(io)?;
    let bytes = out.written + 4;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(SnapshotStats {
        entries: count,
        bytes,
    })
}

/// Reads the snapshot at `path`; `Ok(None)` when there is no file. The whole file is checked
/// before any entry is returned.
pub fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    decode(&data)
        .map(Some)
        .map_err(|reason| SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })
}

/// Reads a big-endian integer of `N` bytes at `at`; the caller checked the bounds.
fn be<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&data[at..at + N]);
    b
}

/// Decodes a snapshot held in memory.
pub fn decode(data: &[u8]) -> Result<Snapshot, Corruption> {
    let min = HEADER + TRAILER;
    if data.len() < min {
        return Err(Corruption::Truncated {
            len: data.len(),
            min,
        });
    }
    let magic: [u8; 4] = be(data, 0);
    if magic != MAGIC {
        return Err(Corruption::BadMagic { found: magic });
    }
    let version = u32::from_be_bytes(be(data, 4));
    if version != VERSION {
        return Err(Corruption::UnsupportedVersion { version });
    }
    let crc_at = data.len() - 4;
    let found = u32::from_be_bytes(be(data, crc_at));
    let computed = crc32fast::hash(&data[..crc_at]);
    if found != computed {
        return Err(Corruption::Checksum { found, computed });
    }
    let position = i64::from_be_bytes(be(data, 8));
    let declared = u64::from_be_bytes(be(data, crc_at - 8));
    let end = crc_at - 8;
    let mut at = HEADER;
    let mut entries = Vec::new();
    // Takes one length-prefixed field at `at`, checked against the entries' end.
    let field = |at: &mut usize, entry: u64| -> Result<Bytes, Corruption> {
        let overrun = |len: u64| Corruption::EntryOverrun {
            entry,
            at: *at,
            len,
        };
        if end - *at < 4 {
            return Err(overrun(4));
        }
        let len = u32::from_be_bytes(be(data, *at)) as usize;
        if end - *at - 4 < len {
            return Err(overrun(len as u64));
        }
        let bytes = Bytes::copy_from_slice(&data[*at + 4..*at + 4 + len]);
        *at += 4 + len;
        Ok(bytes)
    };
    while at < end {
        let n = entries.len() as u64;
        let key = field(&mut at, n)?;
        let value = field(&mut at, n)?;
        entries.push((key, value));
    }
    if declared != entries.len() as u64 {
        return Err(Corruption::Count {
            declared,
            found: entries.len() as u64,
        });
    }
    Ok(Snapshot { position, entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InMemoryBytesStore;
    use proptest::prelude::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kstate-snapshot-{}-{name}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn store(entries: &[(&[u8], &[u8])]) -> InMemoryBytesStore {
        let mut s = InMemoryBytesStore::new();
        for (k, v) in entries {
            s.put(Bytes::copy_from_slice(k), Bytes::copy_from_slice(v))
                .unwrap();
        }
        s
    }

    fn sample() -> InMemoryBytesStore {
        store(&[
            (b"b", b"2"),
            (b"a", b""),
            (b"\xff\x00", b"value"),
            (b"", b"x"),
        ])
    }

    #[test]
    fn round_trip_keeps_entries_in_order_and_the_position() {
        let path = dir("rt").join("store.snapshot");
        let s = sample();
        let stats = write_snapshot(&s, 41, &path).unwrap();
        assert_eq!(stats.entries, 4);
        assert_eq!(stats.bytes, fs::metadata(&path).unwrap().len());
        let back = read_snapshot(&path).unwrap().unwrap();
        assert_eq!(back.position, 41);
        assert_eq!(back.entries, s.scan_all().unwrap());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        assert!(!PathBuf::from(tmp).exists(), "no tmp file is left behind");
    }

    #[test]
    fn an_empty_store_round_trips() {
        let path = dir("empty").join("store.snapshot");
        write_snapshot(&InMemoryBytesStore::new(), -1, &path).unwrap();
        assert_eq!(
            read_snapshot(&path).unwrap(),
            Some(Snapshot {
                position: -1,
                entries: vec![]
            })
        );
    }

    #[test]
    fn missing_file_is_no_snapshot() {
        assert_eq!(read_snapshot(&dir("missing").join("nope")).unwrap(), None);
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let path = dir("layout").join("s");
        write_snapshot(&store(&[(b"k", b"vv")]), 7, &path).unwrap();
        let data = fs::read(&path).unwrap();
        let mut want = b"KSNP".to_vec();
        want.extend(1u32.to_be_bytes());
        want.extend(7i64.to_be_bytes());
        want.extend(1u32.to_be_bytes());
        want.extend(b"k");
        want.extend(2u32.to_be_bytes());
        want.extend(b"vv");
        want.extend(1u64.to_be_bytes());
        let crc = crc32fast::hash(&want);
        want.extend(crc.to_be_bytes());
        assert_eq!(data, want);
    }

    fn encoded() -> Vec<u8> {
        let path = dir("enc").join("s");
        write_snapshot(&sample(), 3, &path).unwrap();
        fs::read(&path).unwrap()
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let data = encoded();
        for len in 0..data.len() {
            assert!(decode(&data[..len]).is_err(), "truncated to {len} bytes");
        }
        assert!(matches!(
            decode(&data[..10]),
            Err(Corruption::Truncated { len: 10, .. })
        ));
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let data = encoded();
        for i in 8..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(decode(&bad), Err(Corruption::Checksum { .. })),
                "byte {i}"
            );
        }
    }

    #[test]
    fn bad_magic_and_version_are_named() {
        let mut data = encoded();
        data[0] = b'X';
        assert!(matches!(decode(&data), Err(Corruption::BadMagic { .. })));
        let mut data = encoded();
        data[7] = 9;
        assert_eq!(
            decode(&data),
            Err(Corruption::UnsupportedVersion { version: 9 })
        );
    }

    /// A file with a valid checksum whose structure lies (a writer bug, or a forgery): the
    /// length checks still hold.
    #[test]
    fn lying_lengths_with_a_valid_checksum_are_errors() {
        let reseal = |mut body: Vec<u8>| {
            let crc = crc32fast::hash(&body);
            body.extend(crc.to_be_bytes());
            body
        };
        let mut header = b"KSNP".to_vec();
        header.extend(1u32.to_be_bytes());
        header.extend(0i64.to_be_bytes());
        let mut overrun = header.clone();
        overrun.extend(u32::MAX.to_be_bytes());
        overrun.extend(1u64.to_be_bytes());
        assert!(matches!(
            decode(&reseal(overrun)),
            Err(Corruption::EntryOverrun { entry: 0, .. })
        ));
        let mut miscount = header.clone();
        miscount.extend(0u32.to_be_bytes());
        miscount.extend(0u32.to_be_bytes());
        miscount.extend(5u64.to_be_bytes());
        assert_eq!(
            decode(&reseal(miscount)),
            Err(Corruption::Count {
                declared: 5,
                found: 1
            })
        );
        let file = dir("lie").join("s");
        let mut half = header;
        half.extend([0u8, 0]);
        half.extend(0u64.to_be_bytes());
        fs::write(&file, reseal(half)).unwrap();
        assert!(matches!(
            read_snapshot(&file),
            Err(SnapshotError::Corrupt {
                reason: Corruption::EntryOverrun { .. },
                ..
            })
        ));
    }

    #[test]
    fn a_rewrite_replaces_the_file() {
        let path = dir("rewrite").join("s");
        write_snapshot(&sample(), 1, &path).unwrap();
        write_snapshot(&store(&[(b"z", b"1")]), 2, &path).unwrap();
        let back = read_snapshot(&path).unwrap().unwrap();
        assert_eq!(back.position, 2);
        assert_eq!(back.entries.len(), 1);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data);
        }

        #[test]
        fn arbitrary_stores_round_trip(
            entries in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..24),
                proptest::collection::vec(any::<u8>(), 0..40),
                0..50),
            position in any::<i64>(),
        ) {
            let mut s = InMemoryBytesStore::new();
            for (k, v) in &entries {
                s.put(Bytes::from(k.clone()), Bytes::from(v.clone())).unwrap();
            }
            let path = dir("prop").join("s");
            write_snapshot(&s, position, &path).unwrap();
            let back = read_snapshot(&path).unwrap().unwrap();
            prop_assert_eq!(back.position, position);
            prop_assert_eq!(back.entries, s.scan_all().unwrap());
        }
    }
}
