//! Committed input offsets only move forward: a task given away and taken back (kept dormant
//! with its store meanwhile) starts at the offset its other owner committed, and a commit
//! with nothing new never writes the position it had when it was revoked.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use common::job::{wait_running, Job, GAP, GRACE, PARTITIONS};
use common::worker::{click_stream, partition_of, Click, Worker};

/// The partitions of the tasks a worker logged as running.
fn running_partitions(worker: &Worker) -> BTreeSet<i32> {
    worker
        .log()
        .lines()
        .filter(|l| l.contains("task running"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("task=0_"))
                .and_then(|p| p.parse().ok())
        })
        .collect()
}

/// Waits until the group's committed offset of every partition in `partitions` is its end.
async fn wait_committed(
    job: &Job,
    partitions: &BTreeSet<i32>,
    workers: &[&Worker],
) -> anyhow::Result<Vec<i64>> {
    let ends = job.input_ends()?;
    common::wait_for(
        "the input committed to its end",
        Duration::from_secs(60),
        || async {
            let committed = job.committed().await.ok()?;
            partitions
                .iter()
                .all(|&p| committed[p as usize] == Some(ends[p as usize]))
                .then_some(())
        },
    )
    .await
    .with_context(|| {
        let logs: Vec<String> = workers.iter().map(|w| w.tail()).collect();
        format!("ends {ends:?}\n{}", logs.join("\n---\n"))
    })?;
    Ok(ends)
}

#[tokio::test]
async fn a_quiet_partition_handed_away_and_back_never_sees_its_committed_offset_decrease(
) -> anyhow::Result<()> {
    let job = Job::new("offsets-forward").await?;
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    let base = common::now_ms() - 3_600_000;
    job.produce(&click_stream(40, 10, base, GAP, GRACE, false, 3))
        .await?;
    let a = job.worker("a", "at_least_once")?;
    wait_running(&a, 4).await?;
    wait_committed(&job, &all, &[&a]).await?;

    let mut b = job.worker("b", "at_least_once")?;
    wait_running(&b, 2).await?;
    let moved = running_partitions(&b);
    ensure!(moved.len() == 2, "{moved:?}");
    // More input everywhere; B commits its share beyond what A had when it gave it away.
    job.produce(&click_stream(40, 10, base + 600_000, GAP, GRACE, false, 4))
        .await?;
    let before = wait_committed(&job, &all, &[&a, &b]).await?;
    ensure!(
        b.terminate(Duration::from_secs(30))?.success(),
        "{}",
        b.tail()
    );
    wait_running(&a, 6).await?;

    // Input only for the partitions A kept: once A has committed them, it has committed
    // (in the same cycles) the quiet ones it took back.
    let kept: BTreeSet<i32> = all.difference(&moved).copied().collect();
    let more: Vec<Click> = click_stream(40, 10, base + 1_200_000, GAP, GRACE, false, 5)
        .into_iter()
        .filter(|c| kept.contains(&partition_of(c.key.as_bytes(), PARTITIONS)))
        .collect();
    job.produce(&more).await?;
    wait_committed(&job, &kept, &[&a]).await?;
    let committed = job.committed().await?;
    for p in &moved {
        assert_eq!(
            committed[*p as usize],
            Some(before[*p as usize]),
            "partition {p}: the committed offset must stay where B left it\n{}",
            a.tail()
        );
    }
    Ok(())
}
