//! The fault scenarios beyond single kills: a broker bounced and a broker paused (each on a
//! broker of the test's own), a rebalance storm, and a changelog truncated past the
//! checkpoint a worker left.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use rdkafka::admin::AdminOptions;
use rdkafka::TopicPartitionList;

use crate::broker::OwnBroker;
use crate::common;
use crate::common::worker::{
    click_stream, read_topic, reference_by_partition, Click, OutRecord, Worker,
};
use crate::job::{signal, Guarantee, Job, Rng, GAP, GRACE, PARTITIONS};

/// The own broker's streams session timeout (config/broker/server.properties).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

fn refs(workers: &[Worker]) -> Vec<&Worker> {
    workers.iter().collect()
}

/// A job with two exactly-once workers on `bootstrap` that counted the first `counted` of
/// its `clicks`.
struct Counting {
    job: Job,
    workers: Vec<Worker>,
    clicks: Vec<Click>,
    counted: usize,
}

impl Counting {
    async fn start(bootstrap: &str, name: &str, seed: u64, share: usize) -> anyhow::Result<Self> {
        let job = Job::new(bootstrap, name, Guarantee::ExactlyOnce).await?;
        let clicks = crate::job::clicks(seed);
        let mut counting = Self {
            workers: vec![job.worker("a")?, job.worker("b")?],
            job,
            clicks,
            counted: 0,
        };
        counting.more(share).await.context("before the fault")?;
        Ok(counting)
    }

    /// Produces the next `share` of the clicks (a count of clicks) and waits until the
    /// output equals the reference of all produced so far.
    async fn more(&mut self, share: usize) -> anyhow::Result<()> {
        self.produce(share).await?;
        let reference =
            reference_by_partition(&self.clicks[..self.counted], PARTITIONS, GAP, GRACE);
        self.job
            .wait_output(&reference, &refs(&self.workers), Duration::from_secs(120))
            .await?;
        Ok(())
    }

    /// Produces the next `share` of the clicks without waiting for the output.
    async fn produce(&mut self, share: usize) -> anyhow::Result<()> {
        let to = self.counted.saturating_add(share).min(self.clicks.len());
        self.job.produce(&self.clicks[self.counted..to]).await?;
        self.counted = to;
        Ok(())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.workers.iter_mut().try_for_each(Worker::check_alive)
    }
}

pub async fn broker_bounce() -> anyhow::Result<()> {
    let broker = OwnBroker::start()?;
    let mut run = Counting::start(&broker.bootstrap(), "fault-bounce", 101, 1_000).await?;
    let stopped = Instant::now();
    broker.stop()?;
    // Down for longer than the session timeout: the workers' requests fail meanwhile.
    tokio::time::sleep(SESSION_TIMEOUT).await;
    broker.resume()?;
    let back = Instant::now();
    let down = back - stopped;
    run.more(usize::MAX)
        .await
        .context("after the broker came back")?;
    run.check_alive()?;
    println!(
        "broker bounce: down {down:?} (stop + {SESSION_TIMEOUT:?} + resume); output equal to \
         the reference {:?} after the broker answered again",
        back.elapsed()
    );
    Ok(())
}

/// The broker frozen (SIGSTOP) past the session timeout, then thawed: the workers go on,
/// fenced and rejoined or not (whether the broker expires the sessions before it reads the
/// heartbeats queued while it was frozen is its race: reported, not asserted).
pub async fn broker_pause() -> anyhow::Result<()> {
    let mut broker = OwnBroker::start()?;
    let mut run = Counting::start(&broker.bootstrap(), "fault-broker-pause", 202, 700).await?;
    let fenced =
        |run: &Counting| -> Vec<usize> { run.workers.iter().map(|w| w.count("fenced")).collect() };
    let before = fenced(&run);
    broker.pause()?;
    tokio::time::sleep(SESSION_TIMEOUT * 2).await;
    broker.unpause()?;
    let thawed = Instant::now();
    run.more(usize::MAX)
        .await
        .context("after the broker resumed")?;
    let flowing = thawed.elapsed();
    let fenced: Vec<usize> = fenced(&run)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    run.check_alive()?;
    println!(
        "broker pause: SIGSTOPped {:?}: fenced-member log lines per worker {fenced:?}, output \
         equal to the reference {flowing:?} after SIGCONT",
        SESSION_TIMEOUT * 2
    );
    Ok(())
}

/// A worker frozen (SIGSTOP) past the session timeout while input flows, as a long GC pause
/// would: the broker fences the silent member and moves its tasks to the other; once
/// thawed, the zombie learns it was fenced, drops what it had not committed, and rejoins.
pub async fn worker_pause() -> anyhow::Result<()> {
    let mut run = Counting::start(&common::broker(), "fault-worker-pause", 303, 700).await?;
    let before = run.workers[0].count("fenced");
    let running = run.workers[0].count("task running");
    signal(&run.workers[0], "STOP")?;
    let frozen = Instant::now();
    // Input for every task while `a` is frozen: `b` takes over `a`'s once it is fenced.
    run.produce(300).await?;
    tokio::time::sleep((SESSION_TIMEOUT * 2).saturating_sub(frozen.elapsed())).await;
    signal(&run.workers[0], "CONT")?;
    let thawed = Instant::now();
    run.more(usize::MAX)
        .await
        .context("after the worker resumed")?;
    let flowing = thawed.elapsed();
    let zombie = &run.workers[0];
    common::wait_for(
        "the thawed worker to learn it was fenced and run tasks again",
        Duration::from_secs(60),
        || async {
            (zombie.count("fenced") > before && zombie.count("task running") > running)
                .then_some(())
        },
    )
    .await
    .with_context(|| zombie.tail())?;
    let rejoined = thawed.elapsed();
    run.check_alive()?;
    println!(
        "worker pause: SIGSTOPped {:?}: output equal to the reference {flowing:?}, the worker \
         fenced and running tasks again {rejoined:?} after SIGCONT",
        SESSION_TIMEOUT * 2
    );
    Ok(())
}

/// Workers join and leave (SIGTERM) every 1–3 s for `STORM` while input flows.
pub async fn rebalance_storm(seed: u64) -> anyhow::Result<()> {
    const STORM: Duration = Duration::from_secs(60);
    const SLOTS: usize = 3;
    let bootstrap = common::broker();
    let mut rng = Rng::new(seed);
    let job = Job::new(&bootstrap, "fault-storm", Guarantee::ExactlyOnce).await?;
    let clicks = click_stream(
        40,
        60,
        common::now_ms() - 3_600_000,
        GAP,
        GRACE,
        false,
        seed,
    );
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    let producing = {
        let (bootstrap, input) = (job.bootstrap.clone(), job.input.clone());
        let chunk = clicks.len().div_ceil(100);
        let clicks = clicks.clone();
        tokio::spawn(async move {
            let pause = STORM / 100;
            for part in clicks.chunks(chunk) {
                common::worker::produce(&bootstrap, &input, PARTITIONS, part).await?;
                tokio::time::sleep(pause).await;
            }
            anyhow::Ok(())
        })
    };
    let names: Vec<String> = (0..SLOTS).map(|i| format!("s{i}")).collect();
    let mut running: Vec<Option<Worker>> = vec![Some(job.worker(&names[0])?), None, None];
    // Workers told to leave, reaped once they exit: a slot restarts only after that, as its
    // state dir is the same.
    let mut leaving: Vec<(usize, Worker)> = Vec::new();
    let (mut joins, mut leaves) = (1, 0);
    let started = Instant::now();
    while started.elapsed() < STORM {
        tokio::time::sleep(Duration::from_millis(1_000) + rng.millis(2_000)).await;
        let mut still = Vec::new();
        for (slot, mut w) in leaving.drain(..) {
            match w.wait(Duration::ZERO) {
                Ok(status) => ensure!(
                    status.success(),
                    "{} left with {status}:\n{}",
                    w.name,
                    w.tail()
                ),
                Err(_) => still.push((slot, w)),
            }
        }
        leaving = still;
        let slot = rng.below(SLOTS as u64) as usize;
        let alive = running.iter().flatten().count();
        match running[slot].take() {
            Some(w) if alive > 1 => {
                signal(&w, "TERM")?;
                leaving.push((slot, w));
                leaves += 1;
            }
            Some(w) => running[slot] = Some(w),
            None if leaving.iter().all(|(s, _)| *s != slot) => {
                running[slot] = Some(job.worker(&names[slot])?);
                joins += 1;
            }
            None => {}
        }
    }
    producing.await??;
    for (_, mut w) in leaving {
        let status = w.wait(Duration::from_secs(30))?;
        ensure!(status.success(), "{} left with {status}", w.name);
    }
    let mut workers: Vec<Worker> = running.into_iter().flatten().collect();
    let settled = Instant::now();
    job.wait_output(&reference, &refs(&workers), Duration::from_secs(120))
        .await
        .context("after the storm")?;
    for w in &mut workers {
        w.check_alive()?;
    }
    println!(
        "rebalance storm (seed {seed}): {joins} joins, {leaves} leaves in {STORM:?}, {} records; \
         output equal to the reference {:?} after the storm",
        clicks.len(),
        settled.elapsed()
    );
    Ok(())
}

/// One click per key at `base + at`.
fn clicks_at(keys: usize, base: i64, at: i64) -> Vec<Click> {
    (0..keys)
        .map(|k| Click {
            key: format!("user-{k}"),
            timestamp: base + at,
        })
        .collect()
}

/// Per partition, the highest offset `d` such that every key whose last record below `d`
/// is a value has a later record at or above `d`: deleting the records below `d` loses only
/// what later records supersede (as compaction would), so a full restore of what is left
/// gives the whole state. The changelog is not transactional here: offsets are positions.
fn superseded_prefix(records: &[OutRecord]) -> BTreeMap<i32, i64> {
    let mut by_partition: BTreeMap<i32, Vec<(&[u8], bool)>> = BTreeMap::new();
    for (p, k, v, _) in records {
        by_partition
            .entry(*p)
            .or_default()
            .push((k.as_slice(), v.is_some()));
    }
    by_partition
        .into_iter()
        .map(|(p, log)| {
            let d = (0..=log.len())
                .rev()
                .find(|&d| {
                    let mut last: BTreeMap<&[u8], bool> = BTreeMap::new();
                    for (k, live) in &log[..d] {
                        last.insert(k, *live);
                    }
                    last.iter()
                        .filter(|(_, live)| **live)
                        .all(|(k, _)| log[d..].iter().any(|(later, _)| later == k))
                })
                .unwrap_or(0);
            (p, d as i64)
        })
        .collect()
}

pub async fn truncated_changelog() -> anyhow::Result<()> {
    const KEYS: usize = 40;
    let bootstrap = common::broker();
    let job = Job::new(&bootstrap, "fault-truncate", Guarantee::AtLeastOnce).await?;
    let base = common::now_ms() - 3_600_000;
    // One session per key, grown three times: each growth replaces the session's key.
    let phases = [
        [clicks_at(KEYS, base, 0), clicks_at(KEYS, base, 1_000)].concat(),
        clicks_at(KEYS, base, 5_000),
        clicks_at(KEYS, base, 9_000),
    ];
    let mut all = Vec::new();
    let mut a = job.worker("a")?;
    all.extend_from_slice(&phases[0]);
    job.produce(&phases[0]).await?;
    job.wait_output(
        &reference_by_partition(&all, PARTITIONS, GAP, GRACE),
        &[&a],
        Duration::from_secs(60),
    )
    .await?;
    ensure!(
        a.terminate(Duration::from_secs(30))?.success(),
        "{}",
        a.tail()
    );
    let checkpoints = checkpoints(&job.state_dir("a"), &job.changelog())?;
    ensure!(
        checkpoints.len() == PARTITIONS as usize,
        "a clean close checkpoints every task: {checkpoints:?}\n{}",
        a.tail()
    );

    // Another worker, state dir of its own, moves the changelog on.
    let mut b = job.worker("b")?;
    for phase in &phases[1..] {
        all.extend_from_slice(phase);
        job.produce(phase).await?;
        job.wait_output(
            &reference_by_partition(&all, PARTITIONS, GAP, GRACE),
            &[&b],
            Duration::from_secs(60),
        )
        .await?;
    }
    ensure!(
        b.terminate(Duration::from_secs(30))?.success(),
        "{}",
        b.tail()
    );

    let changelog = job.changelog();
    let records = {
        let (bootstrap, changelog) = (bootstrap.clone(), changelog.clone());
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, &changelog, false)).await??
    };
    let cut = superseded_prefix(&records);
    let mut tpl = TopicPartitionList::new();
    for (p, d) in &cut {
        let checkpoint = checkpoints.get(p).copied().unwrap_or(-1);
        ensure!(
            *d > checkpoint + 1,
            "partition {p}: deleting below {d} leaves the record after checkpoint {checkpoint}"
        );
        tpl.add_partition_offset(&changelog, *p, rdkafka::Offset::Offset(*d))?;
    }
    let admin = common::admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.delete_records(&tpl, &opts).await?.elements() {
        ensure!(
            result.error().is_ok(),
            "DeleteRecords on partition {}: {:?}",
            result.partition(),
            result.error()
        );
    }

    // `a` comes back to a snapshot and checkpoints the changelog no longer holds the records
    // after. A session its snapshot holds is stale: merging the next click with it would
    // count 2 + 4 + 1.
    let a = job.worker("a")?;
    let last = clicks_at(KEYS, base, 9_500);
    all.extend_from_slice(&last);
    job.produce(&last).await?;
    let reference = reference_by_partition(&all, PARTITIONS, GAP, GRACE);
    ensure!(reference.values().all(|&c| c == 5), "{reference:?}");
    job.wait_output(&reference, &[&a], Duration::from_secs(60))
        .await?;
    println!(
        "truncated changelog: checkpoints {checkpoints:?}, deleted below {cut:?}; full restores \
         logged: {}",
        a.count("clearing the store for a full restore")
    );
    Ok(())
}

/// The changelog offsets in the checkpoint files under a worker's state dir, by partition.
fn checkpoints(state_dir: &std::path::Path, changelog: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![state_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == ".checkpoint") {
                if let Some(cp) = kstate::changelog::Checkpoint::read(&path)? {
                    for (topic, partition, offset) in cp.iter() {
                        if topic == changelog {
                            found.insert(partition, offset);
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}
