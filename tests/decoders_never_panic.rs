//! Fuzzing of the decoders that read bytes kstate did not write itself in this process: the
//! session key decoder, the snapshot reader, and the StreamsGroupHeartbeat and
//! StreamsGroupDescribe response decoders. Each property runs `CASES` inputs (valid
//! encodings under random edits; random bytes for the session key); every one must decode
//! or return an error, never panic. The checkpoint reader's fuzzing sits with its unit tests (its parser
//! is private).

use kstate::protocol::{StreamsGroupDescribeResponse, StreamsGroupHeartbeatResponse, WireMessage};
use kstate::store::session_schema;
use kstate::store::snapshot;
use proptest::prelude::*;

/// Cases per property: 100k, as the fuzzing issue asks, within a few seconds in a debug build.
const CASES: u32 = 100_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A small generator (xorshift64*) the edits of one case are drawn from: a case is one
/// `u64` for proptest, so that generating it costs next to nothing in a debug build and
/// 100k cases fit in seconds; a failure prints the seed, which replays the case.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1) as u64) as usize
    }
}

/// One of `bases` under 1–5 edits drawn from `seed`: a byte set, a boundary value (0, -1,
/// i32::MAX, i32::MIN, 1, 0x80 …) written over 1, 2 or 4 bytes (where a length, a count or
/// a varint sits, this is what breaks decoders), a truncation, bytes inserted, removed or
/// duplicated.
fn mutate(bases: &[Vec<u8>], seed: u64) -> Vec<u8> {
    const BOUNDARY: [u32; 8] = [0, u32::MAX, 0x7fff_ffff, 0x8000_0000, 1, 0x80, 0xff, 0x7f];
    let mut rng = Rng(seed | 1);
    let mut bytes = bases[rng.below(bases.len())].clone();
    for _ in 0..1 + rng.below(5) {
        if bytes.is_empty() {
            bytes.push(0);
        }
        let len = bytes.len();
        let at = rng.below(len);
        match rng.below(6) {
            0 => bytes[at] = rng.below(256) as u8,
            1 => {
                let value = BOUNDARY[rng.below(BOUNDARY.len())].to_be_bytes();
                let width = [1, 2, 4][rng.below(3)];
                for (k, b) in value[4 - width..].iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
            2 => bytes.truncate(at),
            3 => {
                let at = rng.below(len + 1);
                let inserted: Vec<u8> = (0..1 + rng.below(5))
                    .map(|_| rng.below(256) as u8)
                    .collect();
                bytes.splice(at..at, inserted);
            }
            4 => {
                let to = (at + 1 + rng.below(16)).min(len);
                bytes.drain(at..to);
            }
            _ => {
                let to = (at + 1 + rng.below(16)).min(len);
                let slice = bytes[at..to].to_vec();
                bytes.splice(at..at, slice);
            }
        }
    }
    bytes
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/golden/fixtures/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let text = text.trim();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Valid snapshots: empty, one entry, a few sessions.
fn snapshots() -> Vec<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("kstate-fuzz-snapshots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sizes: [usize; 3] = [0, 1, 5];
    let out = sizes
        .iter()
        .map(|&n| {
            let mut store = kstate::store::InMemoryBytesStore::new();
            for i in 0..n {
                let key =
                    session_schema::session_key(format!("user-{i}").as_bytes(), 10, 20 + i as i64);
                kstate::store::ByteKeyValueStore::put(
                    &mut store,
                    key,
                    bytes::Bytes::from((i as i64).to_be_bytes().to_vec()),
                )
                .expect("put");
            }
            let path = dir.join(format!("s{n}"));
            snapshot::write_snapshot(&store, 7, &path).expect("write");
            std::fs::read(&path).expect("read back")
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Sets the trailing CRC to the content's, so that the edit reaches the entry decoding.
fn with_valid_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= 4 {
        let at = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..at]);
        bytes[at..].copy_from_slice(&crc.to_be_bytes());
    }
    bytes
}

static SNAPSHOTS: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(snapshots);
static HEARTBEATS: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
    [
        "heartbeat_response_assign_v0",
        "heartbeat_response_assign_v1",
        "heartbeat_response_unchanged_v0",
        "heartbeat_response_unchanged_v1",
    ]
    .map(fixture)
    .to_vec()
});
static DESCRIBES: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
    ["describe_response_v0", "describe_response_v1"]
        .map(fixture)
        .to_vec()
});

proptest! {
    #![proptest_config(config())]

    #[test]
    fn session_keys_decode_or_fail(seed in any::<u64>()) {
        let mut rng = Rng(seed | 1);
        let key: Vec<u8> = (0..rng.below(40)).map(|_| rng.below(256) as u8).collect();
        match session_schema::decode(&key) {
            Ok(decoded) => {
                prop_assert!(key.len() >= 16);
                let again = session_schema::session_key(decoded.key, decoded.start, decoded.end);
                prop_assert_eq!(again.as_ref(), &key[..]);
            }
            Err(_) => prop_assert!(key.len() < 16),
        }
        let _ = session_schema::session_key_bytes_of(&key);
        let _ = session_schema::session_end_of(&key);
        let _ = session_schema::session_start_of(&key);
        let _ = session_schema::belongs_to(&key, b"user");
    }

    #[test]
    fn snapshots_decode_or_fail(seed in any::<u64>()) {
        let bytes = mutate(&SNAPSHOTS, seed);
        // Mostly with the checksum made right, so that the edit reaches the entries.
        let bytes = if seed % 4 == 0 { bytes } else { with_valid_crc(bytes) };
        let _ = snapshot::decode(&bytes);
    }

    #[test]
    fn heartbeat_responses_decode_or_fail(seed in any::<u64>()) {
        let bytes = mutate(&HEARTBEATS, seed);
        for version in 0..=1 {
            let _ = StreamsGroupHeartbeatResponse::decode(&bytes, version);
        }
    }

    #[test]
    fn describe_responses_decode_or_fail(seed in any::<u64>()) {
        let bytes = mutate(&DESCRIBES, seed);
        for version in 0..=1 {
            let _ = StreamsGroupDescribeResponse::decode(&bytes, version);
        }
    }
}
