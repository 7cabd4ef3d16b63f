//! A restore from scratch starts where Kafka Streams 4.4.0's `StoreChangelogReader` starts
//! it for a windowed or session store: at the first changelog record stamped at or after
//! (the last record's timestamp - the store's retention), against the real broker. When the
//! last offset holds no record (a transaction marker), or the retention reaches back before
//! every record, the whole log is replayed; with a checkpoint the rule does not apply.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use kstate::changelog::{RestoreOptions, RestoreOutcome, RestoreTarget, Restorer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

const RETENTION: Duration = Duration::from_secs(100);

/// Records the restored puts.
#[derive(Default)]
struct Recorded(BTreeMap<Bytes, Bytes>);

impl RestoreTarget for Recorded {
    type Error = Infallible;
    fn restore_put(&mut self, key: Bytes, value: Bytes) -> Result<(), Infallible> {
        self.0.insert(key, value);
        Ok(())
    }
    fn restore_delete(&mut self, key: Bytes) -> Result<(), Infallible> {
        self.0.remove(&key);
        Ok(())
    }
    fn restore_clear(&mut self) -> Result<(), Infallible> {
        self.0.clear();
        Ok(())
    }
}

/// `(key, timestamp offset from the base in ms)`: "a" is stamped 120 s before the last
/// record, beyond the 100 s retention; "b" 60 s before, within it; "c" is the last.
const RECORDS: [(&str, i64); 3] = [("a", 0), ("b", 60_000), ("c", 120_000)];

async fn changelog(name: &str, transactional: bool) -> anyhow::Result<(String, String)> {
    let bootstrap = common::broker();
    let topic = common::unique(name);
    common::create_topic(&bootstrap, &topic, 1, &[]).await?;
    let base = common::now_ms() - 3_600_000;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &bootstrap);
    if transactional {
        config.set("transactional.id", common::unique("restore-retention-txn"));
    }
    let producer: FutureProducer = config.create()?;
    if transactional {
        producer.init_transactions(Duration::from_secs(30))?;
        producer.begin_transaction()?;
    }
    for (key, at) in RECORDS {
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .key(key)
                    .payload(key)
                    .timestamp(base + at),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("producing {key}: {e}"))?;
    }
    if transactional {
        producer.commit_transaction(Duration::from_secs(30))?;
    }
    Ok((bootstrap, topic))
}

async fn restore(
    bootstrap: &str,
    topic: &str,
    retention: Option<Duration>,
    read_committed: bool,
    checkpoint: Option<i64>,
) -> anyhow::Result<(Vec<String>, RestoreOutcome)> {
    let restorer = Restorer::new(
        bootstrap,
        RestoreOptions {
            retention,
            read_committed,
            stall_timeout: Duration::from_secs(30),
            ..RestoreOptions::default()
        },
    )?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut target = Recorded::default();
        let outcome = restorer.restore(&topic, 0, checkpoint, &mut target, &mut |_| {})?;
        let keys = target
            .0
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        Ok((keys, outcome))
    })
    .await?
}

#[tokio::test]
async fn a_restore_from_scratch_skips_records_stamped_before_the_retention() -> anyhow::Result<()> {
    let (bootstrap, topic) = changelog("restore-retention", false).await?;

    let (keys, outcome) = restore(&bootstrap, &topic, Some(RETENTION), false, None).await?;
    assert_eq!(keys, ["b", "c"], "{outcome:?}");
    assert_eq!((outcome.start_offset, outcome.end_offset), (1, 3));
    assert!(outcome.full_restore, "the store was cleared first");

    // Without a retention, or with one reaching back before every record: everything.
    let (keys, _) = restore(&bootstrap, &topic, None, false, None).await?;
    assert_eq!(keys, ["a", "b", "c"]);
    let (keys, _) = restore(
        &bootstrap,
        &topic,
        Some(Duration::from_secs(121)),
        false,
        None,
    )
    .await?;
    assert_eq!(keys, ["a", "b", "c"]);

    // From a checkpoint (after "a"), only the tail, whatever the retention says.
    let (keys, outcome) = restore(&bootstrap, &topic, Some(RETENTION), false, Some(0)).await?;
    assert_eq!(keys, ["b", "c"]);
    assert_eq!(outcome.start_offset, 1);
    assert!(!outcome.full_restore);
    let (keys, outcome) = restore(&bootstrap, &topic, Some(Duration::ZERO), false, Some(0)).await?;
    assert_eq!((keys.len(), outcome.start_offset), (2, 1));
    Ok(())
}

#[tokio::test]
async fn a_transaction_marker_at_the_end_means_a_full_restore() -> anyhow::Result<()> {
    // Kafka Streams reads the last offset and finds no record there (the commit marker), so
    // it restores from the log start; kstate does the same.
    let (bootstrap, topic) = changelog("restore-retention-eos", true).await?;
    let (keys, outcome) = restore(&bootstrap, &topic, Some(RETENTION), true, None).await?;
    assert_eq!(keys, ["a", "b", "c"], "{outcome:?}");
    assert_eq!((outcome.start_offset, outcome.end_offset), (0, 4));
    Ok(())
}
