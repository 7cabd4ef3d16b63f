//! Restore throughput against the real broker (issue 5): fills a fresh one-partition
//! changelog with realistic session-store records through [`ChangelogWriter`], then reads
//! it back, alternating, with (a) a bare rdkafka `BaseConsumer` that uses the restore
//! consumer's settings and only touches the key and value bytes, and (b)
//! [`Restorer::restore`] into a fresh `CachingSessionStore<InMemoryBytesStore>`. Prints
//! records/s of each (median of the rounds) and the ratio (b)/(a); the target is ≥ 60%.
//!
//! `cargo bench --bench restore` runs 1,000,000 records and 3 rounds of each reader
//! (`RESTORE_BENCH_RECORDS` / `RESTORE_BENCH_ROUNDS` override). Run without `--bench` (as
//! `cargo test --all-targets` does) it is a smoke test: 2,000 records, one round each, still
//! checking the restored session count. Either way it needs the broker at
//! `KAFKA_BOOTSTRAP` (default `127.0.0.1:9092`) and fails clearly when none answers.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use kstate::changelog::{
    changelog_topic_name, create_changelog_topic, producer_config, ChangelogSink, ChangelogWriter,
    RestoreOptions, Restorer,
};
use kstate::store::session_schema::session_key;
use kstate::store::{ByteKeyValueStore, CacheBudget, CachingSessionStore, InMemoryBytesStore};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Kafka Streams' default `statestore.cache.max.bytes`.
const CACHE_BYTES: usize = 10 * 1024 * 1024;
const GAP_MS: i64 = 5 * 60 * 1000;
/// Writer flushes (wait for every acknowledgement) this often, as commits would.
const FLUSH_EVERY: usize = 100_000;

struct Settings {
    records: usize,
    rounds: usize,
    full: bool,
}

fn settings() -> Settings {
    let full = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if full {
        Settings {
            records: env("RESTORE_BENCH_RECORDS", 1_000_000),
            rounds: env("RESTORE_BENCH_ROUNDS", 3).max(1),
            full,
        }
    } else {
        Settings {
            records: 2_000,
            rounds: 1,
            full,
        }
    }
}

/// `KAFKA_BOOTSTRAP` (default `127.0.0.1:9092`) once a TCP connection to it succeeds.
fn broker() -> anyhow::Result<String> {
    let addr = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string());
    let first = addr.split(',').next().unwrap_or_default().to_string();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&first)
        .ok()
        .and_then(|mut it| it.next())
        .is_some_and(|sock| {
            std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(3)).is_ok()
        });
    ensure!(
        reachable,
        "no Kafka broker answers at {addr} (KAFKA_BOOTSTRAP). The restore benchmark needs one: \
         start it with `scripts/kafka start` (or `docker compose up -d`)."
    );
    Ok(addr)
}

/// xorshift64*: the same workload on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// Produces `n` session-store changelog records: ~45% new sessions, ~45% updates of a live
/// session's aggregate, ~10% tombstones of live sessions. Keys are `user-N ‖ end ‖ start`,
/// values 8-byte counts, timestamps within `n` ms of now (the `delete` policy would drop
/// old-stamped records). Returns how many sessions are live at the end.
async fn fill(writer: &mut ChangelogWriter, n: usize) -> anyhow::Result<usize> {
    let users = (n as u64 / 10).max(10);
    let base = common::now_ms();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // Live sessions and their current count; the Vec allows picking one at random.
    let mut live: Vec<(Bytes, u64)> = Vec::new();
    for i in 0..n {
        let ts = base + i as i64 / 1_000;
        let roll = rng.below(100);
        if roll < 10 && !live.is_empty() {
            let at = rng.below(live.len() as u64) as usize;
            let (key, _) = live.swap_remove(at);
            writer.send(&key, None, ts).await?;
        } else if roll < 55 && !live.is_empty() {
            let at = rng.below(live.len() as u64) as usize;
            let (key, count) = &mut live[at];
            *count += 1;
            writer.send(key, Some(&count.to_be_bytes()), ts).await?;
        } else {
            let user = format!("user-{}", rng.below(users));
            // The start is unique per record, so every new session is a new key.
            let start = base + i as i64;
            let end = start + rng.below(GAP_MS as u64) as i64;
            let key = session_key(user.as_bytes(), start, end);
            writer.send(&key, Some(&1u64.to_be_bytes()), ts).await?;
            live.push((key, 1));
        }
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    Ok(live.len())
}

/// (a) Reads the whole partition with the restore consumer's settings, touching every key
/// and value byte. Returns (records, elapsed); the consumer is created before the clock
/// starts, the watermark lookup and assignment are timed (as they are in a restore).
fn bare_read(bootstrap: &str, topic: &str) -> anyhow::Result<(u64, Duration)> {
    let consumer: BaseConsumer =
        Restorer::consumer_config(bootstrap, &RestoreOptions::default()).create()?;
    let started = Instant::now();
    let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(30))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let mut records = 0u64;
    let mut checksum = 0u64;
    let mut last_record = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_record = Instant::now();
                records += 1;
                let k = m.key().unwrap_or_default();
                let v = m.payload().unwrap_or_default();
                checksum = k
                    .iter()
                    .chain(v)
                    .fold(checksum, |acc, &b| acc.wrapping_add(u64::from(b)));
                if m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                if last_record.elapsed() > Duration::from_secs(30) {
                    bail!("bare consumer stalled after {records} records of {topic}");
                }
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
    let elapsed = started.elapsed();
    black_box(checksum);
    Ok((records, elapsed))
}

type Store = CachingSessionStore<InMemoryBytesStore>;

/// (b) Restores the partition into a fresh store. Returns (records applied, elapsed, the
/// store) — the store is dropped by the caller, after the clock stopped.
fn restore(bootstrap: &str, topic: &str) -> anyhow::Result<(u64, Duration, Store)> {
    let restorer = Restorer::new(bootstrap, RestoreOptions::default())?;
    let mut store = CachingSessionStore::new(
        "sessions",
        CacheBudget::new(CACHE_BYTES),
        InMemoryBytesStore::new(),
    );
    let started = Instant::now();
    let outcome = restorer.restore(topic, 0, None, &mut store, &mut |_| {})?;
    let elapsed = started.elapsed();
    Ok((outcome.applied, elapsed, store))
}

fn rate(records: u64, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let s = settings();
    let bootstrap = broker()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let millis = common::now_ms();
    let app = format!("restore-bench-{}-{millis}", std::process::id());
    let topic = changelog_topic_name(&app, "sessions");
    let (expected, produce_elapsed) = runtime.block_on(async {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        create_changelog_topic(&admin, &topic, 1, Duration::from_secs(3600), &[])
            .await
            .with_context(|| format!("creating {topic}"))?;
        let producer: FutureProducer = producer_config(&bootstrap, &[]).create()?;
        let mut writer = ChangelogWriter::new(producer, topic.clone(), 0);
        let started = Instant::now();
        let live = fill(&mut writer, s.records).await?;
        let elapsed = started.elapsed();
        ensure!(
            writer.acked_total() == s.records as u64,
            "{} of {} records acknowledged",
            writer.acked_total(),
            s.records
        );
        anyhow::Ok((live, elapsed))
    })?;
    println!(
        "restore bench: topic {topic}, {} records ({expected} live sessions at the end)",
        s.records
    );
    println!(
        "produce (ChangelogWriter, acks=all, idempotent): {:.0} records/s ({:.2?})",
        rate(s.records as u64, produce_elapsed),
        produce_elapsed
    );

    let mut bare_rates = Vec::new();
    let mut restore_rates = Vec::new();
    for round in 1..=s.rounds {
        let (n, elapsed) = bare_read(&bootstrap, &topic)?;
        ensure!(
            n == s.records as u64,
            "bare consumer read {n} of {} records",
            s.records
        );
        let r = rate(n, elapsed);
        println!("round {round}: (a) bare consumer {r:>12.0} records/s ({elapsed:.2?})");
        bare_rates.push(r);

        let (applied, elapsed, store) = restore(&bootstrap, &topic)?;
        ensure!(
            applied == s.records as u64,
            "restore applied {applied} of {} records",
            s.records
        );
        let sessions = store.inner().len();
        ensure!(
            sessions == expected,
            "restored store holds {sessions} sessions, expected {expected}"
        );
        let r = rate(applied, elapsed);
        println!("round {round}: (b) restore       {r:>12.0} records/s ({elapsed:.2?})");
        restore_rates.push(r);
        drop(store);
    }
    let bare = median(bare_rates);
    let restored = median(restore_rates);
    let ratio = restored / bare;
    println!(
        "median of {} rounds: (a) bare consumer {bare:.0} records/s, (b) restore {restored:.0} \
         records/s, ratio (b)/(a) = {:.1}% (target >= 60%){}",
        s.rounds,
        ratio * 100.0,
        if s.full {
            ""
        } else {
            " [smoke run: pass --bench, i.e. `cargo bench --bench restore`, for the 1M figures]"
        }
    );
    runtime.block_on(async {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        let opts = rdkafka::admin::AdminOptions::new();
        // Best effort: a leftover topic only costs broker disk.
        let _ = admin.delete_topics(&[&topic], &opts).await;
        anyhow::Ok(())
    })?;
    Ok(())
}
