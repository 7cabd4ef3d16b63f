//! Change logging and restore against the real broker: what a caching session store flushes
//! to its compacted changelog comes back, through `put_inner`/`delete_inner`, into a fresh
//! store — with tombstones, after compaction, from a checkpoint, and bounded by the end
//! offset captured when the restore started.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use kstate::changelog::{
    changelog_topic_name, create_changelog_topic, producer_config, ChangelogError, ChangelogSink,
    ChangelogWriter, Checkpoint, CorruptRecordPolicy, RestoreOptions, RestoreOutcome,
    RestoreProgress, RestoreTarget, Restorer,
};
use kstate::store::session_schema::session_key;
use kstate::store::{CacheBudget, CachingSessionStore, InMemoryBytesStore, RecordContext};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

type Store = CachingSessionStore<InMemoryBytesStore>;
/// (offset, key, value) of a changelog record.
type LoggedRecord = (i64, Vec<u8>, Option<Vec<u8>>);

fn store(cache_bytes: usize) -> Store {
    CachingSessionStore::new(
        "sessions",
        CacheBudget::new(cache_bytes),
        InMemoryBytesStore::new(),
    )
}

/// A record context `timestamp` ms after the test run started. Changelog records carry it,
/// and the changelog's `delete` policy would drop records stamped far in the past.
fn ctx(offset: i64, timestamp: i64) -> RecordContext {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    RecordContext::new(
        "input",
        0,
        offset,
        BASE.get_or_init(common::now_ms) + timestamp,
    )
}

struct Changelog {
    bootstrap: String,
    topic: String,
    admin: AdminClient<DefaultClientContext>,
    producer: FutureProducer,
}

impl Changelog {
    async fn new(name: &str, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let bootstrap = common::broker();
        let app = common::unique(name);
        let topic = changelog_topic_name(&app, "sessions");
        let admin = common::admin(&bootstrap);
        create_changelog_topic(&admin, &topic, 1, Duration::from_secs(3600), extra).await?;
        let producer: FutureProducer = producer_config(&bootstrap, &[]).create()?;
        Ok(Self {
            bootstrap,
            topic,
            admin,
            producer,
        })
    }

    fn writer(&self) -> ChangelogWriter {
        ChangelogWriter::new(self.producer.clone(), self.topic.clone(), 0)
    }

    fn restorer(&self, policy: CorruptRecordPolicy) -> anyhow::Result<Restorer> {
        let options = RestoreOptions {
            corrupt_records: policy,
            stall_timeout: Duration::from_secs(30),
            ..RestoreOptions::default()
        };
        Ok(Restorer::new(&self.bootstrap, options)?)
    }

    /// Restores into `target` on a blocking thread, collecting progress reports.
    async fn restore<T: RestoreTarget + Send + 'static>(
        &self,
        mut target: T,
        checkpoint: Option<i64>,
    ) -> anyhow::Result<(T, RestoreOutcome, Vec<RestoreProgress>)> {
        let restorer = self.restorer(CorruptRecordPolicy::Fail)?;
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let mut reports = Vec::new();
            let outcome = restorer.restore(&topic, 0, checkpoint, &mut target, &mut |p| {
                reports.push(p.clone())
            })?;
            Ok((target, outcome, reports))
        })
        .await?
    }

    /// Every record of the partition: (offset, key, value).
    fn read_all(&self) -> anyhow::Result<Vec<LoggedRecord>> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", common::unique("changelog-reader"))
            .set("enable.partition.eof", "true")
            .create()?;
        let (low, high) = consumer.fetch_watermarks(&self.topic, 0, Duration::from_secs(10))?;
        let mut out = Vec::new();
        if low >= high {
            return Ok(out);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if std::time::Instant::now() > deadline {
                bail!("reading {} did not reach offset {high}", self.topic);
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    out.push((
                        m.offset(),
                        m.key().unwrap_or_default().to_vec(),
                        m.payload().map(<[u8]>::to_vec),
                    ));
                    if m.offset() + 1 >= high {
                        return Ok(out);
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(out),
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
    }
}

/// Sends what the store flushed (eviction-flushed entries included) to the changelog.
async fn log_flush(store: &mut Store, writer: &mut ChangelogWriter) -> anyhow::Result<usize> {
    let flushed = store.flush_with_old()?;
    for f in &flushed {
        writer
            .send(&f.key, f.new.as_deref(), f.context.timestamp)
            .await?;
    }
    Ok(flushed.len())
}

/// Puts sessions `{prefix}{i}` over `[i, i]` for `i` in `0..n`, each with `value`, at
/// offset and timestamp `i`.
fn put_sessions(
    store: &mut Store,
    prefix: &str,
    n: i64,
    value: &'static [u8],
) -> anyhow::Result<()> {
    for i in 0..n {
        store.put(
            session_key(format!("{prefix}{i}").as_bytes(), i, i),
            Bytes::from_static(value),
            ctx(i, i),
        )?;
    }
    Ok(())
}

/// [`put_sessions`], then sends what the store flushed to the changelog and waits for it.
async fn put_and_log(
    store: &mut Store,
    writer: &mut ChangelogWriter,
    prefix: &str,
    n: i64,
    value: &'static [u8],
) -> anyhow::Result<()> {
    put_sessions(store, prefix, n, value)?;
    log_flush(store, writer).await?;
    writer.flush().await?;
    Ok(())
}

fn contents(store: &Store) -> anyhow::Result<BTreeMap<Bytes, Bytes>> {
    Ok(store.scan_all()?.into_iter().collect())
}

/// Applies `ops` random session updates to `store` — puts that create or widen sessions,
/// merges that put one session and remove two, and plain removals — logging every flush.
async fn random_updates(
    store: &mut Store,
    writer: &mut ChangelogWriter,
    ops: usize,
    seed: u64,
) -> anyhow::Result<usize> {
    // xorshift64*: a fixed seed gives the same workload on every run.
    let mut state = seed.max(1);
    let mut next = |bound: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    };
    let keys = 2_000;
    let mut live: Vec<Bytes> = Vec::new();
    let mut logged = 0;
    for i in 0..ops {
        let op = next(10);
        let k = next(keys);
        let t = next(1_000_000) as i64;
        let key = format!("user-{k}");
        let c = ctx(i as i64, t);
        match op {
            0..=5 => {
                let sk = session_key(key.as_bytes(), t, t + 100);
                store.put(
                    sk.clone(),
                    Bytes::from((i as i64).to_be_bytes().to_vec()),
                    c,
                )?;
                live.push(sk);
            }
            6..=7 if live.len() >= 2 => {
                let a = live.swap_remove(i % live.len());
                let b = live.swap_remove(i % live.len());
                let merged = session_key(key.as_bytes(), t, t + 500);
                store.put(merged.clone(), Bytes::from_static(b"merged"), c.clone())?;
                store.remove(a, c.clone())?;
                store.remove(b, c)?;
                live.push(merged);
            }
            _ if !live.is_empty() => {
                let gone = live.swap_remove(i % live.len());
                store.remove(gone, c)?;
            }
            _ => {}
        }
        if i % 5_000 == 4_999 {
            logged += log_flush(store, writer).await?;
        }
    }
    logged += log_flush(store, writer).await?;
    writer.flush().await?;
    Ok(logged)
}

#[tokio::test]
async fn restore_reproduces_100k_updates_with_merges_and_removals() -> anyhow::Result<()> {
    let log = Changelog::new("restore-100k", &[]).await?;
    let mut writer = log.writer();
    // A small cache budget makes evictions write through between flushes.
    let mut original = store(64 * 1024);
    let logged = random_updates(&mut original, &mut writer, 100_000, 7).await?;
    let expected = contents(&original)?;
    assert!(
        expected.len() > 1_000,
        "only {} live sessions",
        expected.len()
    );
    assert_eq!(writer.acked_total(), logged as u64);
    drop(original);

    let (restored, outcome, reports) = log.restore(store(1 << 20), None).await?;
    let got = contents(&restored)?;
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .take(3)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, _)| !expected.contains_key(*k))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} restored vs {} expected ({outcome:?}); missing/different {missing:?}; extra {extra:?}",
        got.len(),
        expected.len()
    );
    assert!(outcome.full_restore);
    assert_eq!(
        outcome.applied, logged as u64,
        "every changelog record applied once"
    );
    assert_eq!(outcome.last_offset, Some(outcome.end_offset - 1));
    let last = reports.last().context("no progress report")?;
    assert!(last.done && last.restored == last.total && last.total == logged as u64);
    Ok(())
}

#[tokio::test]
async fn removed_sessions_stay_removed_after_restore() -> anyhow::Result<()> {
    let log = Changelog::new("restore-tombstones", &[]).await?;
    let mut writer = log.writer();
    let mut original = store(1 << 20);
    let kept = session_key(b"alice", 10, 20);
    let removed = session_key(b"bob", 10, 20);
    original.put(kept.clone(), Bytes::from_static(b"1"), ctx(0, 10))?;
    original.put(removed.clone(), Bytes::from_static(b"2"), ctx(1, 10))?;
    log_flush(&mut original, &mut writer).await?;
    original.remove(removed.clone(), ctx(2, 30))?;
    // Created and removed between two flushes: Kafka Streams logs nothing for it.
    let transient = session_key(b"carol", 40, 40);
    original.put(transient.clone(), Bytes::from_static(b"3"), ctx(3, 40))?;
    original.remove(transient, ctx(4, 41))?;
    assert_eq!(log_flush(&mut original, &mut writer).await?, 1);
    writer.flush().await?;

    let records = log.read_all()?;
    assert_eq!(records.len(), 3, "put, put, tombstone: {records:?}");
    assert_eq!(records[2].1, removed.to_vec());
    assert_eq!(records[2].2, None, "a remove is a tombstone");

    let (restored, _, _) = log.restore(store(1 << 20), None).await?;
    assert_eq!(restored.scan_all()?, vec![(kept, Bytes::from_static(b"1"))]);
    Ok(())
}

#[tokio::test]
async fn restore_after_compaction_equals_the_original() -> anyhow::Result<()> {
    // Tiny segments and an eager cleaner so compaction happens within seconds.
    let log = Changelog::new(
        "restore-compacted",
        &[
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "100"),
            ("min.compaction.lag.ms", "0"),
        ],
    )
    .await?;
    let mut writer = log.writer();
    let mut original = store(1 << 20);
    let mut produced = 0;
    for round in 0..20i64 {
        for k in 0..50 {
            let sk = session_key(format!("k{k}").as_bytes(), 0, 1_000);
            original.put(
                sk,
                Bytes::from(round.to_be_bytes().to_vec()),
                ctx(round, round * 200),
            )?;
        }
        if round % 3 == 0 {
            original.remove(
                session_key(format!("k{round}").as_bytes(), 0, 1_000),
                ctx(round, round * 200),
            )?;
        }
        produced += log_flush(&mut original, &mut writer).await?;
        writer.flush().await?;
    }
    let expected = contents(&original)?;

    let compacted = common::wait_for(
        "the cleaner to compact the changelog",
        Duration::from_secs(90),
        || async {
            // A record with a timestamp past segment.ms rolls the active segment so the
            // earlier ones become cleanable.
            let mut w = log.writer();
            let filler = session_key(b"zz-roll", 0, 1);
            w.send(&filler, Some(b"x"), common::now_ms()).await.ok()?;
            w.flush().await.ok()?;
            let n = log.read_all().ok()?.len();
            (n < produced).then_some(n)
        },
    )
    .await?;
    println!("changelog compacted from {produced}+ to {compacted} records");

    let (restored, _, _) = log.restore(store(1 << 20), None).await?;
    let mut got = contents(&restored)?;
    got.remove(&session_key(b"zz-roll", 0, 1));
    assert_eq!(got, expected);
    Ok(())
}

#[tokio::test]
async fn restore_from_a_checkpoint_applies_only_the_tail() -> anyhow::Result<()> {
    let log = Changelog::new("restore-checkpoint", &[]).await?;
    let mut writer = log.writer();
    let mut original = store(1 << 20);
    put_and_log(&mut original, &mut writer, "k", 300, b"a").await?;

    let (restored, first, _) = log.restore(store(1 << 20), None).await?;
    let checkpoint = first.last_offset.context("first restore read nothing")?;
    let path = std::env::temp_dir()
        .join(common::unique("cp"))
        .join(".checkpoint");
    let mut cp = Checkpoint::new();
    cp.set(&log.topic, 0, checkpoint);
    cp.write(&path)?;

    put_sessions(&mut original, "tail", 40, b"b")?;
    original.remove(session_key(b"k0", 0, 0), ctx(0, 0))?;
    log_flush(&mut original, &mut writer).await?;
    writer.flush().await?;

    let from_file = Checkpoint::read(&path)?.context("checkpoint vanished")?;
    let (restored, second, _) = log
        .restore(restored, from_file.offset(&log.topic, 0))
        .await?;
    assert!(!second.full_restore);
    assert_eq!(second.start_offset, checkpoint + 1);
    assert_eq!(second.applied, 41, "only the tail is applied");
    assert_eq!(contents(&restored)?, contents(&original)?);
    Ok(())
}

/// A target that produces more changelog records while the restore runs.
struct ProducingTarget {
    store: Store,
    producer: Option<(FutureProducer, String)>,
    runtime: tokio::runtime::Handle,
}

impl RestoreTarget for ProducingTarget {
    type Error = kstate::store::StoreError;
    fn restore_put(&mut self, key: Bytes, value: Bytes) -> Result<(), Self::Error> {
        if let Some((producer, topic)) = self.producer.take() {
            let mut late = ChangelogWriter::new(producer, topic, 0);
            self.runtime.block_on(async {
                for i in 0..25i64 {
                    let k = session_key(format!("late{i}").as_bytes(), i, i);
                    late.send(&k, Some(b"late"), i).await.expect("enqueue");
                }
                late.flush().await.expect("late records acknowledged");
            });
        }
        self.store.put_inner(key, value)
    }
    fn restore_delete(&mut self, key: Bytes) -> Result<(), Self::Error> {
        self.store.delete_inner(&key)
    }
    fn restore_clear(&mut self) -> Result<(), Self::Error> {
        self.store.clear()
    }
}

#[tokio::test]
async fn records_produced_after_the_end_offset_was_captured_are_not_applied() -> anyhow::Result<()>
{
    let log = Changelog::new("restore-end-offset", &[]).await?;
    let mut writer = log.writer();
    let mut original = store(1 << 20);
    put_and_log(&mut original, &mut writer, "k", 100, b"a").await?;

    let target = ProducingTarget {
        store: store(1 << 20),
        producer: Some((log.producer.clone(), log.topic.clone())),
        runtime: tokio::runtime::Handle::current(),
    };
    let (target, outcome, _) = log.restore(target, None).await?;
    assert_eq!(outcome.end_offset, 100);
    assert_eq!(outcome.applied, 100);
    assert_eq!(contents(&target.store)?, contents(&original)?);
    assert_eq!(
        log.read_all()?.len(),
        125,
        "the late records did reach the changelog"
    );
    Ok(())
}

#[tokio::test]
async fn checkpoint_below_the_log_start_restores_everything_again() -> anyhow::Result<()> {
    let log = Changelog::new("restore-log-start", &[]).await?;
    let mut writer = log.writer();
    let mut original = store(1 << 20);
    put_and_log(&mut original, &mut writer, "old", 50, b"a").await?;
    let (stale, first, _) = log.restore(store(1 << 20), None).await?;
    let checkpoint = first.last_offset.context("nothing restored")?;

    // The retained tail re-puts part of the state; everything before it is deleted, as
    // retention would, moving the log start past the checkpoint.
    let mut tail = store(1 << 20);
    put_and_log(&mut tail, &mut writer, "new", 10, b"b").await?;
    let mut before = TopicPartitionList::new();
    before.add_partition_offset(&log.topic, 0, Offset::Offset(50))?;
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    log.admin.delete_records(&before, &opts).await?;

    // The stale store last applied offset 20; the log now starts at 50.
    assert!(checkpoint > 20);
    let (restored, outcome, _) = log.restore(stale, Some(20)).await?;
    assert!(outcome.full_restore, "the store was cleared");
    assert_eq!(outcome.start_offset, 50);
    assert_eq!(
        contents(&restored)?,
        contents(&tail)?,
        "old sessions are gone"
    );
    Ok(())
}

#[tokio::test]
async fn a_corrupt_changelog_record_fails_the_restore_or_is_skipped_and_counted(
) -> anyhow::Result<()> {
    let log = Changelog::new("restore-corrupt", &[]).await?;
    let mut writer = log.writer();
    // Stamped now: records stamped in 1970 are past the topic's retention, and the broker
    // deletes them (active segment included) at its next retention check, mid-test.
    let now = common::now_ms();
    writer
        .send(&session_key(b"a", 1, 2), Some(b"1"), now)
        .await?;
    writer.send(b"short", Some(b"x"), now + 1).await?;
    writer
        .send(&session_key(b"b", 1, 2), Some(b"2"), now + 2)
        .await?;
    writer.flush().await?;

    let restorer = log.restorer(CorruptRecordPolicy::Fail)?;
    let mut target = store(1 << 20);
    match restorer.restore(&log.topic, 0, None, &mut target, &mut |_| {}) {
        Err(ChangelogError::CorruptRecord { offset, topic, .. }) => {
            assert_eq!(offset, 1);
            assert_eq!(topic, log.topic);
        }
        other => bail!("expected CorruptRecord at offset 1, got {other:?}"),
    }

    let restorer = log.restorer(CorruptRecordPolicy::Skip)?;
    let mut target = store(1 << 20);
    let outcome = restorer.restore(&log.topic, 0, None, &mut target, &mut |_| {})?;
    assert_eq!((outcome.applied, outcome.skipped), (2, 1), "{outcome:?}");
    assert_eq!(target.scan_all()?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn restoring_a_missing_topic_is_a_named_error() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let topic = common::unique("no-such-changelog");
    let restorer = Restorer::new(&bootstrap, RestoreOptions::default())?;
    let mut target = store(1 << 20);
    let result = tokio::task::spawn_blocking(move || {
        restorer.restore(&topic, 0, None, &mut target, &mut |_| {})
    })
    .await?;
    match result {
        Err(ChangelogError::Offsets {
            topic, partition, ..
        }) => {
            assert!(topic.starts_with("no-such-changelog"));
            assert_eq!(partition, 0);
        }
        other => bail!("expected an Offsets error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn an_empty_changelog_restores_nothing_at_once() -> anyhow::Result<()> {
    let log = Changelog::new("restore-empty", &[]).await?;
    let (restored, outcome, reports) = log.restore(store(1 << 20), None).await?;
    assert_eq!(
        (outcome.applied, outcome.start_offset, outcome.end_offset),
        (0, 0, 0)
    );
    assert!(restored.scan_all()?.is_empty());
    assert!(reports.last().is_some_and(|r| r.done && r.total == 0));
    Ok(())
}
