//! Standby tasks (KIP-1071, group config `streams.num.standby.replicas`): a worker keeps a
//! standby store of each task its peer runs, following the changelog and processing nothing;
//! when the peer is SIGKILLed, the promoted standby restores only the changelog tail (under
//! 1% of it) and the output equals the reference.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use common::job::{restores, set_standby_replicas, wait_running, Job, GAP, GRACE, PARTITIONS};
use common::worker::{click_stream, reference_by_partition, Worker};

/// Tasks a worker logged as created with a standby store.
fn standby_tasks(worker: &Worker) -> BTreeSet<String> {
    worker
        .log()
        .lines()
        .filter(|l| l.contains("task created") && l.contains("standby=true"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("task="))
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn a_promoted_standby_restores_only_the_tail_after_its_peer_is_killed() -> anyhow::Result<()>
{
    let job = Job::new("standby").await?;
    set_standby_replicas(&job.bootstrap, &job.app, 1).await?;
    // Every update written through: the changelog is as long as the input.
    let settings = [("statestore.cache.max.bytes", "0".to_string())];
    let clicks = click_stream(200, 60, common::now_ms() - 3_600_000, GAP, GRACE, false, 17);
    job.produce(&clicks).await?;
    let mut a = job.worker_with("a", "at_least_once", &settings)?;
    wait_running(&a, 4).await?;
    let b = job.worker_with("b", "at_least_once", &settings)?;
    wait_running(&b, 2).await?;
    let standbys = common::wait_for(
        "b to keep two standby tasks",
        Duration::from_secs(60),
        || async {
            let s = standby_tasks(&b);
            (s.len() == 2).then_some(s)
        },
    )
    .await
    .with_context(|| b.tail())?;
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    job.wait_view(
        "the output to equal the reference",
        false,
        &[&a, &b],
        &reference,
        |v| v == &reference,
    )
    .await?;
    // Everything processed is committed: no record is processed twice after the kill.
    let ends = job.input_ends()?;
    common::wait_for("the input committed", Duration::from_secs(60), || async {
        let committed = job.committed().await.ok()?;
        (committed.iter().zip(&ends).all(|(c, e)| *c == Some(*e))).then_some(())
    })
    .await?;

    let restored_before = restores(&b).len();
    a.kill()?;
    let killed = Instant::now();
    wait_running(&b, 4).await?;
    let failover = killed.elapsed();
    let changelog = format!("{}-counts-changelog", job.app);
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &job.bootstrap)
        .create()?;
    let promoted: Vec<_> = restores(&b).into_iter().skip(restored_before).collect();
    ensure!(promoted.len() == 2, "{promoted:?}\n{}", b.tail());
    for (task, applied, from, full) in &promoted {
        ensure!(
            standbys.contains(task),
            "{task} was not a standby of b: {standbys:?}"
        );
        let partition: i32 = task.trim_start_matches("0_").parse()?;
        let (_, end) = rdkafka::consumer::Consumer::fetch_watermarks(
            &consumer,
            &changelog,
            partition,
            Duration::from_secs(10),
        )?;
        ensure!(
            !full && *from > 0,
            "{task}: only a tail (from {from}, full {full})"
        );
        ensure!(
            (*applied as i64) * 100 < end,
            "{task}: the promotion applied {applied} of {end} changelog records"
        );
        println!("{task}: promotion applied {applied} of {end} changelog records");
    }
    println!("killed worker's tasks running on the standby's worker {failover:?} after the kill");

    let more = click_stream(200, 5, common::now_ms() - 1_800_000, GAP, GRACE, false, 18);
    job.produce(&more).await?;
    let all: Vec<_> = clicks.iter().chain(&more).cloned().collect();
    let reference = reference_by_partition(&all, PARTITIONS, GAP, GRACE);
    job.wait_view("the survivor's output", false, &[&b], &reference, |v| {
        v == &reference
    })
    .await?;
    Ok(())
}
