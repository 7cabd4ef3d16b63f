//! Output partitioning as Kafka Streams does it for windowed keys
//! (`WindowedStreamPartitioner`): `toPositive(murmur2(inner key bytes)) % partitions`, the
//! window left out so every session of a key lands on one partition. librdkafka's default
//! partitioner hashes differently (CRC32), so kstate always sets the partition itself.

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka Streams picks for a windowed key whose inner key serializes to
/// `key`, among `partitions` (> 0).
pub fn windowed_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by `org.apache.kafka.common.utils.Utils.murmur2` (kafka-clients 4.4.0)
    /// and `toPositive(murmur2) % 4`.
    #[test]
    fn matches_kafka_utils_murmur2() {
        let cases: [(&str, i32, i32); 9] = [
            ("21", -973_932_308, 0),
            ("foobar", -790_332_482, 2),
            ("a-little-bit-long-string", -985_981_536, 0),
            ("a-little-bit-longer-string", -1_486_304_829, 3),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
                1,
            ),
            ("abc", 479_470_107, 3),
            ("", 275_646_681, 1),
            ("user-7", 696_778_364, 0),
            ("é", 186_971_271, 3),
        ];
        for (key, hash, partition) in cases {
            assert_eq!(murmur2(key.as_bytes()), hash, "murmur2({key:?})");
            assert_eq!(windowed_partition(key.as_bytes(), 4), partition, "{key:?}");
        }
    }
}
