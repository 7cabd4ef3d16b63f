//! The ground truth: Apache Kafka Streams 4.4.0 itself (`tests/java/streams-reference`, run
//! through `scripts/java-streams`) counting sessions over a small hand-made input, with the
//! streams group protocol, against the real broker. The test states by hand which sessions
//! the input makes (merges, out-of-order records within grace, late records beyond grace
//! dropped) and checks Java's output byte for byte, the partition of every output record
//! (`toPositive(murmur2(inner key)) % partitions`), and the changelog topic Java declared.
//! kstate must produce exactly this.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use common::java::JavaApp;
use kstate::protocol::{BrokerConnection, ConnectionConfig, KeyValue};
use rdkafka::admin::ConfigSource;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const INPUT_PARTITIONS: i32 = 4;
/// Not the input's count, so the output partitioning is the sink's own decision.
const OUTPUT_PARTITIONS: i32 = 3;
const STORE: &str = "counts";
const GAP_MS: i64 = 10_000;
const GRACE_MS: i64 = 5_000;
/// JVM start, the streams-group join (the broker creating the changelog) and processing.
const JAVA_DEADLINE: Duration = Duration::from_secs(60);

/// The input, in the order it is produced: (key, timestamp offset from the base in ms).
///
/// Kafka Streams 4.4.0 drops a record when the session it would end up in ends before
/// `stream time - grace - gap` (here `stream time - 15 s`; the processor's close time
/// includes the inactivity gap), and its session store (retention gap + grace) no longer
/// finds sessions that ended that long ago. Stream time is per task, so it depends on which
/// keys share an input partition; every record below is more than 1 s clear of those
/// boundaries whether its partition's stream time is its own key's newest timestamp or the
/// newest produced so far, so the result does not depend on the partitioning. Each comment
/// gives the key's sessions after the record (gap 10 s, grace 5 s).
const INPUT: [(&str, i64); 16] = [
    ("a", 0),      // a [0,0]=1
    ("b", 1_000),  // b [1000,1000]=1
    ("a", 4_000),  // a [0,4000]=2 (replaces [0,0])
    ("c", 5_000),  // c [5000,5000]=1
    ("a", 2_000),  // out of order, on time: a [0,4000]=3
    ("c", 3_000),  // out of order, on time: c [3000,5000]=2 (replaces [5000,5000])
    ("b", 9_000),  // b [1000,9000]=2 (replaces [1000,1000])
    ("a", 30_000), // a [30000,30000]=1, a new session; a's stream time >= 30000
    ("a", 3_500),  // late: [0,4000] ends before 30000-15000; dropped
    ("b", 40_000), // b [40000,40000]=1; b's stream time >= 40000
    ("b", 20_000), // late: a new [20000,20000] would end before 40000-15000; dropped
    ("d", 50_000), // d [50000,50000]=1
    ("d", 62_000), // d [62000,62000]=1, 12 s later: a separate session
    ("d", 56_000), // out of order, on time: bridges both, d [50000,62000]=3
    ("e", 60_000), // e [60000,60000]=1
    ("e", 48_000), // 12 s behind: on time only because the close time includes the gap
];

/// The sessions that remain, (key, start, end) → count.
const EXPECTED: [(&str, i64, i64, i64); 8] = [
    ("a", 0, 4_000, 3),
    ("a", 30_000, 30_000, 1),
    ("b", 1_000, 9_000, 2),
    ("b", 40_000, 40_000, 1),
    ("c", 3_000, 5_000, 2),
    ("d", 50_000, 62_000, 3),
    ("e", 48_000, 48_000, 1),
    ("e", 60_000, 60_000, 1),
];

/// Sessions Java emitted and later deleted when they merged into a bigger one: their last
/// record is a tombstone, so they are absent from the compacted view.
const REPLACED: [(&str, i64, i64); 5] = [
    ("a", 0, 0),
    ("b", 1_000, 1_000),
    ("c", 5_000, 5_000),
    ("d", 50_000, 50_000),
    ("d", 62_000, 62_000),
];

/// Sessions the late records would have made: never emitted at all. (The late `a` would
/// have made `a [0,4000]` count 4; its count of 3 shows it was dropped.)
const NEVER: [(&str, i64, i64); 1] = [("b", 20_000, 20_000)];

/// Kafka's `Utils.murmur2` (MurmurHash2, seed 0x9747b28c), written out here so the test's
/// oracle does not share code with kstate.
fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]).wrapping_mul(M);
        k ^= k >> 24;
        h = h.wrapping_mul(M) ^ k.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    for (i, b) in tail.iter().enumerate().rev() {
        h ^= u32::from(*b) << (8 * i);
    }
    if !tail.is_empty() {
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// `toPositive(murmur2(key)) % partitions`: Kafka's default partitioner for keyed records,
/// and Kafka Streams' `WindowedStreamPartitioner` applied to the inner key.
fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_kafka() {
    // Values from kafka-clients' UtilsTest / Utils.murmur2.
    assert_eq!(murmur2(b"21"), -973_932_308);
    assert_eq!(murmur2(b"foobar"), -790_332_482);
    assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
    assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
    assert_eq!(
        murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
        -58_897_971
    );
    assert_eq!(murmur2(b"abc"), 479_470_107);
    assert_eq!(partition_for(b"foobar", 4), 2);
}

/// `SessionWindowedSerializer<String>`: key bytes ‖ end (i64 BE) ‖ start (i64 BE).
fn session_key(key: &str, start: i64, end: i64) -> Vec<u8> {
    let mut out = key.as_bytes().to_vec();
    out.extend_from_slice(&end.to_be_bytes());
    out.extend_from_slice(&start.to_be_bytes());
    out
}

/// Removes the Java app's state directory when dropped; declared before the app, so it is
/// dropped after the app has been terminated.
struct RemoveDirOnDrop(PathBuf);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The output topic as read so far: per windowed key, the last value (None = tombstone)
/// and the partition of every record.
#[derive(Default)]
struct OutputView {
    latest: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    partitions: Vec<(Vec<u8>, i32)>,
    next_offset: BTreeMap<i32, i64>,
}

impl OutputView {
    /// The compacted view: the keys whose last record is not a tombstone.
    fn compacted(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.latest
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect()
    }
}

fn show(view: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<String> {
    view.iter()
        .map(|(k, v)| {
            let count = <[u8; 8]>::try_from(v.as_slice()).map(i64::from_be_bytes);
            format!("{}={count:?}", common::describe_session_key(k))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_kafka_streams_session_counts_are_the_reference() -> anyhow::Result<()> {
    let test_started = Instant::now();
    let bootstrap = common::broker();
    JavaApp::build()?;
    let built = test_started.elapsed();

    let app = common::unique("javaref");
    let input = format!("{app}-input");
    let output = format!("{app}-output");
    let changelog = format!("{app}-{STORE}-changelog");
    common::create_topic(&bootstrap, &input, INPUT_PARTITIONS, &[]).await?;
    common::create_topic(&bootstrap, &output, OUTPUT_PARTITIONS, &[]).await?;

    // Timestamps: a whole second an hour back, inside any broker's timestamp bounds.
    let base = (common::now_ms() - 3_600_000) / 1_000 * 1_000;

    // Produce the input in order, each key on the partition Java's default partitioner
    // would pick, one record at a time so the order within a partition is the list's.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .create()?;
    let mut input_end: BTreeMap<i32, i64> = BTreeMap::new();
    for (i, (key, offset)) in INPUT.iter().enumerate() {
        let value = format!("v{i}");
        let partition = partition_for(key.as_bytes(), INPUT_PARTITIONS);
        let delivery = producer
            .send(
                FutureRecord::to(&input)
                    .key(*key)
                    .payload(&value)
                    .partition(partition)
                    .timestamp(base + offset),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(err, _)| anyhow::anyhow!("producing input record {i}: {err}"))?;
        input_end.insert(delivery.partition, delivery.offset + 1);
    }

    let state_dir = std::env::temp_dir().join(&app);
    let state_dir = RemoveDirOnDrop(state_dir);
    let args = [
        ("application.id", app.clone()),
        ("bootstrap.servers", bootstrap.clone()),
        ("input", input.clone()),
        ("output", output.clone()),
        ("store", STORE.to_string()),
        ("gap.ms", GAP_MS.to_string()),
        ("grace.ms", GRACE_MS.to_string()),
        ("processing.guarantee", "at_least_once".to_string()),
        ("commit.interval.ms", "100".to_string()),
        ("statestore.cache.max.bytes", "0".to_string()),
        ("state.dir", state_dir.0.display().to_string()),
    ];
    let spawned = Instant::now();
    let mut java = JavaApp::spawn(&app, &args)?;

    // Read the output until Java has committed every input record (at-least-once: its
    // output is flushed before the commit) and the whole output up to its end has been
    // read, and the compacted view holds every expected session.
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = EXPECTED
        .iter()
        .map(|(k, s, e, c)| (session_key(k, base + s, base + e), c.to_be_bytes().to_vec()))
        .collect();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", common::unique("javaref-reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..OUTPUT_PARTITIONS {
        tpl.add_partition_offset(&output, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut offsets_conn =
        BrokerConnection::connect(bootstrap.clone(), ConnectionConfig::default()).await?;
    let input_partitions: Vec<(String, i32)> =
        (0..INPUT_PARTITIONS).map(|p| (input.clone(), p)).collect();

    let mut view = OutputView::default();
    let deadline = spawned + JAVA_DEADLINE;
    let mut running_after = None;
    let processed_after = loop {
        java.check_alive()?;
        if running_after.is_none() && java.said("kstate-reference: RUNNING") {
            running_after = Some(spawned.elapsed());
        }
        while let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg?;
            let key = msg.key().context("output record without key")?.to_vec();
            view.latest
                .insert(key.clone(), msg.payload().map(<[u8]>::to_vec));
            view.partitions.push((key, msg.partition()));
            view.next_offset.insert(msg.partition(), msg.offset() + 1);
        }
        let committed = offsets_conn
            .offset_fetch(&app, &input_partitions)
            .await
            .map(|offsets| {
                // Partitions that got no input have nothing to commit.
                offsets.iter().all(|o| match input_end.get(&o.partition) {
                    Some(end) => o.offset >= *end,
                    None => true,
                })
            })
            .unwrap_or_else(|e| {
                println!("OffsetFetch: {e}");
                false
            });
        if committed {
            let mut caught_up = true;
            for p in 0..OUTPUT_PARTITIONS {
                let (_, high) = consumer.fetch_watermarks(&output, p, Duration::from_secs(5))?;
                caught_up &= view.next_offset.get(&p).copied().unwrap_or(0) >= high;
            }
            let compacted = view.compacted();
            if caught_up && expected.keys().all(|k| compacted.contains_key(k)) {
                break spawned.elapsed();
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "within {JAVA_DEADLINE:?} Java did not commit all input and emit every \
                 expected session: committed {committed}, view {:?}, expected {:?}\n{}",
                show(&view.compacted()),
                show(&expected),
                java.tail()
            );
        }
    };

    println!("Java output so far (last lines):\n{}", java.tail());

    // Byte for byte: exactly the expected sessions, nothing else.
    let compacted = view.compacted();
    println!("output (compacted): {:?}", show(&compacted));
    assert_eq!(
        show(&compacted),
        show(&expected),
        "the sessions Java emitted (left) are not the hand-computed ones (right)"
    );
    assert_eq!(compacted, expected, "byte for byte");
    for (k, s, e) in NEVER {
        let key = session_key(k, base + s, base + e);
        assert_eq!(
            view.latest.get(&key),
            None,
            "{k}[{s},{e}] from a late record"
        );
    }
    for (k, s, e) in REPLACED {
        let key = session_key(k, base + s, base + e);
        assert_eq!(
            view.latest.get(&key),
            Some(&None),
            "{k}[{s},{e}] was emitted, then deleted by a tombstone when it merged"
        );
    }
    // Every record, tombstones included, on toPositive(murmur2(inner key)) % partitions.
    for (key, partition) in &view.partitions {
        let inner = &key[..key.len() - 16];
        assert_eq!(
            *partition,
            partition_for(inner, OUTPUT_PARTITIONS),
            "partition of {}",
            common::describe_session_key(key)
        );
    }
    // ... which is not what hashing the whole windowed key (librdkafka's or Java's default
    // for unwindowed serdes) would give for some of them, so the check tells them apart.
    let differ = view
        .partitions
        .iter()
        .filter(|(key, p)| partition_for(key, OUTPUT_PARTITIONS) != *p)
        .count();
    assert!(
        differ > 0,
        "every record would land alike with whole-key hashing"
    );
    println!(
        "{differ} of {} output records would land elsewhere with whole-key hashing",
        view.partitions.len()
    );
    println!(
        "{} output records, {} windowed keys; partitions {:?}",
        view.partitions.len(),
        view.latest.len(),
        ["a", "b", "c", "d", "e"].map(|k| (k, partition_for(k.as_bytes(), OUTPUT_PARTITIONS)))
    );

    // The changelog Java declared: the broker created it with the input's partition count
    // and exactly the configs in the topology Java sent.
    assert_eq!(
        common::partition_count(&bootstrap, &changelog).await?,
        Some(INPUT_PARTITIONS as usize)
    );
    let retention = (GAP_MS + GRACE_MS + 86_400_000).to_string();
    let want = vec![
        KeyValue::new("cleanup.policy", "compact,delete"),
        KeyValue::new("message.timestamp.type", "CreateTime"),
        KeyValue::new("retention.ms", retention.clone()),
    ];
    let described = offsets_conn
        .describe(std::slice::from_ref(&app), false)
        .await?;
    let group = described.groups.first().context("no group described")?;
    ensure!(group.error_code == 0, "describe error {}", group.error_code);
    let subtopologies = group
        .topology
        .as_ref()
        .and_then(|t| t.subtopologies.clone())
        .context("no topology")?;
    let declared: Vec<_> = subtopologies
        .iter()
        .flat_map(|s| s.state_changelog_topics.iter())
        .collect();
    println!("Java declared: {declared:?}");
    assert_eq!(declared.len(), 1, "one changelog");
    assert_eq!(declared[0].name, changelog);
    // Describe shows the topology as the broker configured it: the changelog's partition
    // count resolved from the source topic.
    assert_eq!(
        declared[0].partitions, INPUT_PARTITIONS,
        "resolved changelog partitions"
    );
    let mut declared_configs = declared[0].topic_configs.clone();
    declared_configs.sort();
    assert_eq!(declared_configs, want);
    let configs = common::topic_configs(&bootstrap, &changelog).await?;
    let set_on_topic: BTreeMap<&str, &str> = configs
        .iter()
        .filter(|(_, (_, source))| *source == ConfigSource::DynamicTopic)
        .map(|(k, (v, _))| (k.as_str(), v.as_str()))
        .collect();
    println!("{changelog} topic configs: {set_on_topic:?}");
    assert_eq!(
        set_on_topic,
        BTreeMap::from([
            ("cleanup.policy", "compact,delete"),
            ("message.timestamp.type", "CreateTime"),
            ("retention.ms", retention.as_str()),
        ])
    );

    // SIGTERM: the shutdown hook closes Kafka Streams cleanly.
    let status = java.terminate(Duration::from_secs(30));
    println!(
        "build/check {} ms, RUNNING after {:?} ms, all output after {} ms, exit {status:?}, \
         test {} ms",
        built.as_millis(),
        running_after.map(|d| d.as_millis()),
        processed_after.as_millis(),
        test_started.elapsed().as_millis()
    );
    let status = status.context("the app did not exit within 30 s of SIGTERM")?;
    // The JVM's exit code after SIGTERM once the shutdown hooks have run: 128 + 15.
    assert_eq!(status.code(), Some(143), "exit status {status}");
    // The reader threads drain the pipes after the exit.
    common::wait_for("the app's clean close", Duration::from_secs(5), || {
        let closed = java.said("kstate-reference: closed");
        async move { closed.then_some(()) }
    })
    .await?;
    Ok(())
}
