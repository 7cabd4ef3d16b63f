//! The streams worker end to end against the real broker, workers as child processes: the
//! session counts on the output topic equal the reference of docs/DESIGN.md §4; a SIGKILLed
//! worker's tasks are restored by the survivor from the changelog; SIGTERM leaves cleanly; a restart
//! resumes from committed offsets and, after a clean shutdown, from the snapshots and
//! checkpoints in its state dir; a bad config value stops the worker naming the key.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context};
use common::job::{at_least_once_matches, restores, wait_running, Job, GAP, GRACE, PARTITIONS};
use common::worker::{click_stream, produce, read_topic, reference_by_partition, Click, Worker};

#[tokio::test]
async fn one_worker_counts_sessions_like_the_reference() -> anyhow::Result<()> {
    let job = Job::new("worker-one").await?;
    let clicks = click_stream(40, 30, common::now_ms() - 3_600_000, GAP, GRACE, true, 11);
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    job.produce(&clicks).await?;
    let mut worker = job.worker("solo", "at_least_once")?;
    let view = job
        .wait_view(
            "the output to equal the reference",
            false,
            &[&worker],
            &reference,
            |v| v == &reference,
        )
        .await?;
    assert!(
        view.values().any(|&c| c > 1),
        "some sessions merged records"
    );
    let status = worker.terminate(Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "exit status {status}; log:\n{}",
        worker.tail()
    );
    let log = worker.log();
    assert!(log.contains("shutdown complete"), "{}", worker.tail());
    Ok(())
}

#[tokio::test]
async fn output_partitions_and_timestamps_follow_kafka_streams() -> anyhow::Result<()> {
    let job = Job::new("worker-bytes").await?;
    let base = common::now_ms() - 600_000;
    let clicks: Vec<Click> = [
        ("alice", 0),
        ("bob", 1_000),
        ("alice", 4_000),
        ("carol", 9_000),
    ]
    .iter()
    .map(|(k, t)| Click {
        key: k.to_string(),
        timestamp: base + t,
    })
    .collect();
    job.produce(&clicks).await?;
    let worker = job.worker("bytes", "at_least_once")?;
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    job.wait_view("three sessions", false, &[&worker], &reference, |v| {
        v == &reference
    })
    .await?;
    for (partition, key, value, ts) in read_topic(&job.bootstrap, &job.output, false)? {
        let inner = &key[..key.len() - 16];
        assert_eq!(partition, common::worker::partition_of(inner, PARTITIONS));
        let end = i64::from_be_bytes(key[key.len() - 16..key.len() - 8].try_into()?);
        assert_eq!(ts, end, "an output record is stamped with its session end");
        if let Some(v) = value {
            assert_eq!(v.len(), 8, "the count is an i64");
        }
    }
    Ok(())
}

async fn survivor_restores_a_killed_peer(guarantee: &str) -> anyhow::Result<()> {
    let eos = guarantee == "exactly_once_v2";
    let job = Job::new(if eos {
        "worker-kill-eos"
    } else {
        "worker-kill"
    })
    .await?;
    let clicks = click_stream(60, 40, common::now_ms() - 3_600_000, GAP, GRACE, false, 23);
    let (first, second) = clicks.split_at(clicks.len() / 2);
    let reference_first = reference_by_partition(first, PARTITIONS, GAP, GRACE);
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    job.produce(first).await?;
    let mut a = job.worker("a", guarantee)?;
    wait_running(&a, 4).await?;
    let b = job.worker("b", guarantee)?;
    wait_running(&b, 2).await?;
    job.wait_view(
        "the first half counted",
        eos,
        &[&a, &b],
        &reference_first,
        |v| v == &reference_first,
    )
    .await?;

    // Kill one worker while the second half streams in.
    let producing = {
        let (bootstrap, input) = (job.bootstrap.clone(), job.input.clone());
        let second = second.to_vec();
        tokio::spawn(async move {
            for chunk in second.chunks(100) {
                produce(&bootstrap, &input, PARTITIONS, chunk).await?;
            }
            anyhow::Ok(())
        })
    };
    a.kill()?;
    producing.await??;
    let killed_at = std::time::Instant::now();
    wait_running(&b, 4).await?;
    let failover = killed_at.elapsed();
    let view = if eos {
        job.wait_view(
            "the read_committed output to equal the reference",
            true,
            &[&b],
            &reference,
            |v| v == &reference,
        )
        .await?
    } else {
        let bound = second.len() as i64;
        job.wait_view(
            "the output to match the reference",
            false,
            &[&b],
            &reference,
            |v| at_least_once_matches(v, &reference, bound),
        )
        .await?
    };
    assert!(b.log().contains("task restored"), "{}", b.tail());
    println!(
        "{guarantee}: {} sessions; survivor running all tasks {failover:?} after the kill",
        view.len()
    );
    if eos {
        // No update is seen twice: per session key, committed counts only grow.
        let mut last: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for (_, key, value, _) in read_topic(&job.bootstrap, &job.output, true)? {
            match value {
                Some(v) => {
                    let count = i64::from_be_bytes(v.as_slice().try_into()?);
                    if let Some(prev) = last.insert(key.clone(), count) {
                        assert!(
                            count > prev,
                            "count {count} after {prev}: a duplicate update"
                        );
                    }
                }
                None => {
                    last.remove(&key);
                }
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn survivor_restores_the_tasks_of_a_killed_worker() -> anyhow::Result<()> {
    survivor_restores_a_killed_peer("at_least_once").await
}

#[tokio::test]
async fn survivor_restores_a_killed_worker_exactly_once() -> anyhow::Result<()> {
    survivor_restores_a_killed_peer("exactly_once_v2").await
}

#[tokio::test]
async fn sigterm_leaves_cleanly_and_the_peer_takes_over() -> anyhow::Result<()> {
    let job = Job::new("worker-term").await?;
    let clicks = click_stream(30, 20, common::now_ms() - 3_600_000, GAP, GRACE, false, 5);
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    job.produce(&clicks).await?;
    let mut a = job.worker("a", "at_least_once")?;
    wait_running(&a, 4).await?;
    let b = job.worker("b", "at_least_once")?;
    wait_running(&b, 2).await?;
    job.wait_view(
        "the output to equal the reference",
        false,
        &[&a, &b],
        &reference,
        |v| v == &reference,
    )
    .await?;
    let stopped = std::time::Instant::now();
    let status = a.terminate(Duration::from_secs(30))?;
    ensure!(status.success(), "exit status {status}");
    assert!(a.log().contains("left the streams group"), "{}", a.tail());
    wait_running(&b, 4).await?;
    println!("peer runs all tasks {:?} after SIGTERM", stopped.elapsed());
    // More input after the hand-over is counted by the survivor.
    let more: Vec<Click> = click_stream(30, 5, common::now_ms() - 1_800_000, GAP, GRACE, false, 6);
    job.produce(&more).await?;
    let all: Vec<Click> = clicks.iter().chain(&more).cloned().collect();
    let reference = reference_by_partition(&all, PARTITIONS, GAP, GRACE);
    job.wait_view("the survivor's output", false, &[&b], &reference, |v| {
        v == &reference
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_restarted_worker_resumes_without_counting_twice() -> anyhow::Result<()> {
    let job = Job::new("worker-restart").await?;
    let clicks = click_stream(30, 20, common::now_ms() - 3_600_000, GAP, GRACE, false, 9);
    let (first, second) = clicks.split_at(clicks.len() / 2);
    job.produce(first).await?;
    let mut w = job.worker("w", "exactly_once_v2")?;
    let reference_first = reference_by_partition(first, PARTITIONS, GAP, GRACE);
    job.wait_view("the first half", true, &[&w], &reference_first, |v| {
        v == &reference_first
    })
    .await?;
    ensure!(
        w.terminate(Duration::from_secs(30))?.success(),
        "{}",
        w.tail()
    );

    job.produce(second).await?;
    let w = job.worker("w", "exactly_once_v2")?;
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    job.wait_view(
        "both halves, each counted once",
        true,
        &[&w],
        &reference,
        |v| v == &reference,
    )
    .await?;
    assert!(w.log().contains("task restored"), "{}", w.tail());
    Ok(())
}

#[tokio::test]
async fn a_clean_restart_loads_snapshots_and_restores_only_the_tail() -> anyhow::Result<()> {
    let job = Job::new("worker-snapshot").await?;
    let clicks = click_stream(40, 30, common::now_ms() - 3_600_000, GAP, GRACE, false, 31);
    let thirds: Vec<&[Click]> = clicks.chunks(clicks.len().div_ceil(3)).collect();
    let changelog = format!("{}-counts-changelog", job.app);
    let task_dir = |p: i32| job.state.join("w").join(&job.app).join(format!("0_{p}"));
    let mut seen: Vec<Click> = Vec::new();
    let mut restarts = Vec::new();
    for (run, third) in thirds.iter().enumerate() {
        job.produce(third).await?;
        seen.extend_from_slice(third);
        let mut w = job.worker("w", "at_least_once")?;
        let reference = reference_by_partition(&seen, PARTITIONS, GAP, GRACE);
        job.wait_view(
            "the output to equal the reference",
            false,
            &[&w],
            &reference,
            |v| v == &reference,
        )
        .await?;
        ensure!(
            w.terminate(Duration::from_secs(30))?.success(),
            "{}",
            w.tail()
        );
        let restored = restores(&w);
        ensure!(
            restored.len() == PARTITIONS as usize,
            "{restored:?}\n{}",
            w.tail()
        );
        match run {
            0 => ensure!(
                restored.iter().all(|r| r.2 == 0 && r.1 == 0),
                "{restored:?}"
            ),
            // The snapshot of the clean close holds the whole state: nothing to replay.
            1 => {
                ensure!(
                    restored.iter().all(|r| r.1 == 0 && r.2 > 0 && !r.3),
                    "only the tail is restored: {restored:?}\n{}",
                    w.tail()
                );
                ensure!(w.count("task state loaded from its snapshot") == PARTITIONS as usize);
            }
            // Partition 1's snapshot was corrupted: it alone restores the whole changelog.
            _ => {
                ensure!(w.log().contains("cannot use the snapshot"), "{}", w.tail());
                for (task, n, from, full) in &restored {
                    if task == "0_1" {
                        ensure!(*full && *from == 0 && *n > 0, "{restored:?}");
                    } else {
                        ensure!(!*full && *from > 0 && *n == 0, "{restored:?}");
                    }
                }
            }
        }
        restarts.push(restored);
        // Every task directory holds a Kafka Streams checkpoint of its changelog partition
        // and the snapshot it names.
        for p in 0..PARTITIONS {
            let text = std::fs::read_to_string(task_dir(p).join(".checkpoint"))
                .with_context(|| format!("0_{p}/.checkpoint"))?;
            let lines: Vec<&str> = text.lines().collect();
            ensure!(
                lines.len() == 3 && lines[0] == "0" && lines[1] == "1",
                "{text:?}"
            );
            let entry: Vec<&str> = lines[2].split(' ').collect();
            ensure!(entry.len() == 3 && entry[0] == changelog && entry[1] == p.to_string());
            ensure!(entry[2].parse::<i64>()? > 0, "{text:?}");
            ensure!(task_dir(p).join("counts.snapshot").exists());
        }
        if run == 1 {
            let snapshot = task_dir(1).join("counts.snapshot");
            let mut data = std::fs::read(&snapshot)?;
            let mid = data.len() / 2;
            data[mid] ^= 0x5a;
            std::fs::write(&snapshot, data)?;
        }
    }
    let sum = |r: &Vec<(String, u64, i64, bool)>| r.iter().map(|x| x.1).sum::<u64>();
    println!(
        "records restored per start: first {}, with snapshots {}, with 0_1's snapshot corrupt {} \
         (0_1 alone {:?})",
        sum(&restarts[0]),
        sum(&restarts[1]),
        sum(&restarts[2]),
        restarts[2].iter().find(|r| r.0 == "0_1").map(|r| r.1)
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_config_value_stops_the_worker_naming_the_key() -> anyhow::Result<()> {
    let mut w = Worker::start("bad", &[("processing.guarantee", "exactly_once".into())])?;
    let status = w.wait(Duration::from_secs(10))?;
    assert_eq!(status.code(), Some(2));
    assert!(w.log().contains("'processing.guarantee'"), "{}", w.log());
    let mut w = Worker::start("unknown", &[("colour", "red".into())])?;
    assert_eq!(w.wait(Duration::from_secs(10))?.code(), Some(2));
    assert!(w.log().contains("'colour'"), "{}", w.log());
    Ok(())
}

#[tokio::test]
async fn incomplete_security_settings_stop_the_worker_naming_the_key() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let job = Job::new("worker-sasl").await?;
    let mut w = Worker::start(
        "sasl",
        &[
            ("bootstrap.servers", bootstrap),
            ("input.topic", job.input.clone()),
            ("output.topic", job.output.clone()),
            ("kafka.security.protocol", "SASL_SSL".into()),
            ("kafka.sasl.mechanism", "SCRAM-SHA-512".into()),
            ("kafka.sasl.username", "kstate".into()),
            ("metrics.addr", String::new()),
        ],
    )?;
    let status = w.wait(Duration::from_secs(30))?;
    assert!(!status.success());
    assert!(w.log().contains("sasl.password"), "{}", w.tail());
    Ok(())
}

#[tokio::test]
async fn a_missing_output_topic_stops_the_worker_naming_it() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let missing = common::unique("no-such-output");
    let mut w = Worker::start(
        "no-output",
        &[
            ("bootstrap.servers", bootstrap),
            ("output.topic", missing.clone()),
            ("metrics.addr", String::new()),
        ],
    )?;
    let status = w.wait(Duration::from_secs(60))?;
    assert!(!status.success());
    assert!(w.log().contains(&missing), "{}", w.log());
    Ok(())
}

#[tokio::test]
async fn a_second_worker_on_the_same_state_dir_stops_naming_it() -> anyhow::Result<()> {
    let job = Job::new("worker-lock").await?;
    let mut first = job.worker("shared", "at_least_once")?;
    wait_running(&first, 4).await?;
    let mut second = job.worker("shared", "at_least_once")?;
    let status = second.wait(Duration::from_secs(60))?;
    assert!(!status.success(), "{}", second.tail());
    let dir = job.state.join("shared").join(&job.app);
    assert!(
        second
            .log()
            .contains(&format!("state directory {}", dir.display())),
        "{}",
        second.tail()
    );
    first.check_alive()?;
    Ok(())
}

/// Kafka Streams' state directory cleaner: a task directory left from a task this worker
/// does not hold is deleted once it was idle `state.cleanup.delay.ms`; the directories of the
/// tasks it runs (persistent stores, open), made to look just as idle, stay.
#[tokio::test]
async fn task_dirs_of_tasks_not_held_are_deleted_after_the_cleanup_delay() -> anyhow::Result<()> {
    let job = Job::new("worker-cleanup").await?;
    let app_dir = job.state.join("cleaner").join(&job.app);
    let mut worker = job.worker_with(
        "cleaner",
        "at_least_once",
        &[
            ("state.cleanup.delay.ms", "1000".into()),
            ("store.type", "persistent".into()),
        ],
    )?;
    wait_running(&worker, 4).await?;
    let obsolete = app_dir.join("0_9");
    std::fs::create_dir_all(obsolete.join("counts"))?;
    std::fs::write(obsolete.join(".checkpoint"), "0\n0\n")?;
    let held: Vec<_> = (0..PARTITIONS)
        .map(|p| app_dir.join(format!("0_{p}")))
        .collect();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for dir in held.iter().chain([&obsolete]) {
        std::fs::File::open(dir)
            .and_then(|d| d.set_modified(an_hour_ago))
            .with_context(|| format!("backdating {}", dir.display()))?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while obsolete.exists() {
        worker.check_alive()?;
        ensure!(
            std::time::Instant::now() < deadline,
            "{} still there after 60 s; log:\n{}",
            obsolete.display(),
            worker.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for dir in &held {
        ensure!(dir.is_dir(), "{} of a held task was deleted", dir.display());
    }
    ensure!(
        worker
            .log()
            .contains("deleted the obsolete state directory"),
        "{}",
        worker.tail()
    );
    worker.check_alive()?;
    Ok(())
}

/// Changelog records of the task that restores while the others process.
const BIG_CHANGELOG: i64 = 1_000_000;

#[tokio::test]
async fn running_tasks_keep_committing_while_another_restores_a_million_records(
) -> anyhow::Result<()> {
    use kstate::changelog::create_changelog_topic;
    use kstate::store::session_schema::session_key;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    let job = Job::new("worker-big-restore").await?;
    let changelog = format!("{}-counts-changelog", job.app);
    let admin = common::admin(&job.bootstrap);
    create_changelog_topic(
        &admin,
        &changelog,
        PARTITIONS,
        Duration::from_secs(86_400),
        &[],
    )
    .await?;
    // Task 0_0's changelog: 20,000 sessions of keys the input never uses, 50 updates each.
    let producer: ThreadedProducer<DefaultProducerContext> =
        kstate::changelog::producer_config(&job.bootstrap, &[]).create()?;
    let base = common::now_ms() - 3_000_000;
    for i in 0..BIG_CHANGELOG {
        let key = session_key(format!("old-{}", i % 20_000).as_bytes(), base, base + 1);
        let value = (i / 20_000 + 1).to_be_bytes();
        let mut record = BaseRecord::<[u8], [u8]>::to(&changelog)
            .partition(0)
            .key(&key[..])
            .payload(&value[..])
            .timestamp(base + 1);
        while let Err((e, r)) = producer.send(record) {
            ensure!(
                matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ),
                "producing the changelog: {e}"
            );
            record = r;
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(120))?;

    let w = job.worker("w", "at_least_once")?;
    common::wait_for("0_0 to restore", Duration::from_secs(60), || async {
        (w.count("task restoring task=0_0") > 0).then_some(())
    })
    .await
    .with_context(|| w.tail())?;
    wait_running(&w, 3).await?;
    let clicks = click_stream(60, 20, common::now_ms() - 3_600_000, GAP, GRACE, false, 41);
    let (others, zero): (Vec<Click>, Vec<Click>) = clicks
        .iter()
        .cloned()
        .partition(|c| common::worker::partition_of(c.key.as_bytes(), PARTITIONS) != 0);
    job.produce(&others).await?;
    let ends = job.input_ends()?;
    common::wait_for("tasks 1-3 to commit", Duration::from_secs(60), || async {
        let committed = job.committed().await.ok()?;
        (1..PARTITIONS as usize)
            .all(|p| committed[p] == Some(ends[p]))
            .then_some(())
    })
    .await
    .with_context(|| w.tail())?;
    ensure!(
        w.count("task restored task=0_0") == 0,
        "the other tasks committed only after 0_0's restore:\n{}",
        w.tail()
    );

    let restored = common::wait_for("0_0 restored", Duration::from_secs(120), || async {
        restores(&w).into_iter().find(|r| r.0 == "0_0")
    })
    .await
    .with_context(|| w.tail())?;
    ensure!(
        restored.1 == BIG_CHANGELOG as u64 && restored.3,
        "{restored:?}"
    );
    job.produce(&zero).await?;
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    job.wait_view(
        "the output to equal the reference",
        false,
        &[&w],
        &reference,
        |v| v == &reference,
    )
    .await?;
    let elapsed_ms = w
        .log()
        .lines()
        .find(|l| l.contains("task restored task=0_0"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("elapsed_ms="))
        })
        .unwrap_or_default()
        .to_string();
    println!("0_0 restored {BIG_CHANGELOG} records in {elapsed_ms} ms while 0_1..0_3 committed");
    Ok(())
}
