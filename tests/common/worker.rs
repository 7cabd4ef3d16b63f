//! Helpers for end-to-end tests of `kstate-worker`: spawn workers as child processes, feed
//! an input topic, read an output topic's compacted view, and compute the reference result
//! of docs/DESIGN.md §4 from the input as read back per partition.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Kafka's murmur2, as its default partitioner and Kafka Streams' windowed partitioner use.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    kstate::runtime::windowed_partition(key, partitions)
}

/// `(partition, key, value, timestamp)` of a record read back.
pub type OutRecord = (i32, Vec<u8>, Option<Vec<u8>>, i64);

/// One input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub key: String,
    pub timestamp: i64,
}

/// A worker process; killed when dropped.
pub struct Worker {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    /// Starts `kstate-worker` with `--set` overrides; its output goes to a log file.
    pub fn start(name: &str, settings: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_with_env(name, settings, &[])
    }

    /// [`Worker::start`] with extra environment variables for the worker process.
    pub fn start_with_env(
        name: &str,
        settings: &[(&str, String)],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::common::unique("kstate-worker-log"));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kstate-worker"));
        for (k, v) in settings {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        cmd.envs(env.iter().copied());
        let child = cmd
            .env("RUST_LOG", "info,kstate=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("spawning kstate-worker")?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        self.wait(within)
    }

    /// SIGKILL: no commit, no leave.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Fails if the worker has exited (it should run until told to stop).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().context("worker already gone")?;
        if let Some(status) = child.try_wait()? {
            self.child = None;
            bail!(
                "{} exited early: {status}; log:\n{}",
                self.name,
                self.tail()
            );
        }
        Ok(())
    }

    pub fn wait(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("worker already gone")?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not exit within {within:?}; log:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the log, for failure messages.
    pub fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// How many times the log contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Produces clicks to `topic`, each on the partition Kafka's default partitioner picks for
/// its key, in order, and waits for every acknowledgement.
pub async fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    clicks: &[Click],
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let mut pending = Vec::with_capacity(clicks.len());
    for c in clicks {
        let record = FutureRecord::to(topic)
            .key(c.key.as_bytes())
            .payload(b"click".as_slice())
            .partition(partition_of(c.key.as_bytes(), partitions))
            .timestamp(c.timestamp);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?,
        );
    }
    for p in pending {
        p.await?
            .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
    }
    Ok(())
}

/// Every record of every partition of `topic`: `(partition, key, value)` in offset order
/// per partition.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    read_committed: bool,
) -> anyhow::Result<Vec<OutRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", crate::common::unique("reader"))
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .context("no metadata")?;
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    // 30 s without a record (not in total: a bench reads topics of a million records).
    let mut deadline = Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!("reading {topic}: partitions {ends:?} not read to their end");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                deadline = Instant::now() + Duration::from_secs(30);
                out.push((
                    m.partition(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().map(<[u8]>::to_vec),
                    m.timestamp().to_millis().unwrap_or(-1),
                ));
                if ends
                    .get(&m.partition())
                    .is_some_and(|&end| m.offset() + 1 >= end)
                {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                // Transaction markers end a partition without a record at its last offset.
                let positions = consumer.position()?;
                ends.retain(|p, end| {
                    !matches!(
                        positions.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= *end
                    )
                });
            }
        }
    }
    Ok(out)
}

/// The compacted view of output records: the last value of each key, tombstones removed,
/// decoded as `(key, start, end) -> count`.
pub fn compacted(records: &[OutRecord]) -> BTreeMap<(String, i64, i64), i64> {
    let mut view: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (_, k, v, _) in records {
        match v {
            Some(v) => {
                view.insert(k.clone(), v.clone());
            }
            None => {
                view.remove(k);
            }
        }
    }
    view.into_iter()
        .map(|(k, v)| {
            let n = k.len() - 16;
            let end = i64::from_be_bytes(k[n..n + 8].try_into().expect("8 bytes"));
            let start = i64::from_be_bytes(k[n + 8..].try_into().expect("8 bytes"));
            let key = String::from_utf8_lossy(&k[..n]).into_owned();
            let count = i64::from_be_bytes(v.as_slice().try_into().expect("an i64 count"));
            ((key, start, end), count)
        })
        .collect()
}

/// docs/DESIGN.md §4 applied to `clicks` in order (one partition's records), without expiry.
pub fn reference(clicks: &[Click], gap: i64, grace: i64) -> BTreeMap<(String, i64, i64), i64> {
    let mut stream_time = i64::MIN;
    let mut sessions: BTreeMap<String, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for c in clicks {
        if c.timestamp < 0 {
            continue;
        }
        let t = c.timestamp;
        stream_time = stream_time.max(t);
        let close = stream_time - grace - gap;
        let list = sessions.entry(c.key.clone()).or_default();
        let (found, rest): (Vec<&(i64, i64, i64)>, Vec<_>) = list
            .iter()
            .partition(|(s, e, _)| *e >= t - gap && *s <= t + gap);
        let start = found.iter().map(|f| f.0).chain([t]).min().unwrap_or(t);
        let end = found.iter().map(|f| f.1).chain([t]).max().unwrap_or(t);
        if end < close {
            continue;
        }
        let count = found.iter().map(|f| f.2).sum::<i64>() + 1;
        let mut next: Vec<(i64, i64, i64)> = rest.into_iter().copied().collect();
        next.push((start, end, count));
        *list = next;
    }
    sessions
        .into_iter()
        .flat_map(|(k, l)| l.into_iter().map(move |(s, e, c)| ((k.clone(), s, e), c)))
        .collect()
}

/// The reference for all clicks: each partition's clicks in production order.
pub fn reference_by_partition(
    clicks: &[Click],
    partitions: i32,
    gap: i64,
    grace: i64,
) -> BTreeMap<(String, i64, i64), i64> {
    let mut by_partition: BTreeMap<i32, Vec<Click>> = BTreeMap::new();
    for c in clicks {
        by_partition
            .entry(partition_of(c.key.as_bytes(), partitions))
            .or_default()
            .push(c.clone());
    }
    by_partition
        .values()
        .flat_map(|cs| reference(cs, gap, grace))
        .collect()
}

/// A click stream with sessions: `keys` users, bursts of clicks separated by more than the
/// gap, some bursts bridging two earlier sessions (merges), records out of order within
/// grace, and (with `late`) a few records beyond grace. Streams replayed after a crash or a
/// restart leave late records out: stream time is not restored (docs/DESIGN.md §4), so a
/// record late before the restart may be accepted after it, in Kafka Streams as in kstate.
pub fn click_stream(
    keys: usize,
    bursts: usize,
    base: i64,
    gap: i64,
    grace: i64,
    late: bool,
    seed: u64,
) -> Vec<Click> {
    let mut state = seed.max(1);
    let mut next = move |bound: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    };
    let mut clicks = Vec::new();
    let mut now = base;
    for b in 0..bursts {
        now += gap / 2 + next(gap as u64) as i64;
        for k in 0..keys {
            if next(3) == 0 {
                continue;
            }
            let key = format!("user-{k}");
            let n = 1 + next(4);
            for i in 0..n {
                let mut t = now + (i as i64) * gap / 4 + next(100) as i64;
                // Out of order by less than a quarter gap: within grace when grace ≥ gap, and
                // never reaching a session the store may already have expired.
                if next(10) == 0 {
                    t -= next((gap / 4).max(1) as u64) as i64;
                }
                clicks.push(Click {
                    key: key.clone(),
                    timestamp: t,
                });
            }
            // Now and then a record far behind: late beyond grace, dropped.
            if late && b > 3 && next(25) == 0 {
                clicks.push(Click {
                    key: key.clone(),
                    timestamp: now - 3 * (gap + grace),
                });
            }
        }
    }
    clicks
}

/// Writes a changelog as an earlier owner of the store would have left it, two hours old:
/// per partition, `records` updates of 10,000 sessions (`old-<partition>-<n>`, each updated
/// `records / 10,000` times, the count as value), keys apart from any input's.
pub async fn write_earlier_changelog(
    bootstrap: &str,
    changelog: &str,
    partitions: i32,
    records: i64,
) -> anyhow::Result<()> {
    use kstate::changelog::{
        create_changelog_topic, producer_config, ChangelogSink, ChangelogWriter,
    };
    use kstate::store::session_schema::session_key;

    create_changelog_topic(
        &super::admin(bootstrap),
        changelog,
        partitions,
        Duration::from_secs(3_600),
        &[],
    )
    .await?;
    let producer: FutureProducer = producer_config(bootstrap, &[]).create()?;
    let base = super::now_ms() - 7_200_000;
    for p in 0..partitions {
        let mut writer = ChangelogWriter::new(producer.clone(), changelog.to_string(), p);
        for i in 0..records {
            let key = session_key(format!("old-{p}-{}", i % 10_000).as_bytes(), base, base + 1);
            writer
                .send(&key, Some(&(i / 10_000 + 1).to_be_bytes()), base + 1)
                .await?;
        }
        writer.flush().await?;
    }
    Ok(())
}
