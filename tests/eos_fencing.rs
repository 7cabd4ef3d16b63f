//! Exactly-once failover with a transaction left open: a worker is SIGKILLed between
//! producing records into its transaction and committing it. The survivor that takes its
//! tasks fences its transactional id (`<application.id>-<process id>`) with InitProducerId,
//! which aborts that transaction at once: a read_committed reader sees the complete output as
//! soon as the survivor has committed, long before the dead worker's transaction would have
//! timed out (`transaction.timeout.ms` is 60 s here, so the fence and not the timeout is
//! what ends it).

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::job::{wait_running, Job, PARTITIONS};
use common::worker::{click_stream, reference_by_partition};

const GAP: i64 = common::job::GAP;
const GRACE: i64 = common::job::GRACE;
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_dead_peers_open_transaction_is_aborted_at_takeover() -> anyhow::Result<()> {
    let job = Job::new("eos-fence").await?;
    let settings = |interval: &str| {
        vec![
            ("statestore.cache.max.bytes", "0".to_string()),
            ("commit.interval.ms", interval.to_string()),
            (
                "kafka.transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            ),
        ]
    };
    // `a` never commits before it is killed: every record it writes stays in an open
    // transaction.
    let mut a = job.worker_with("a", "exactly_once_v2", &settings("600000"))?;
    wait_running(&a, 4).await?;
    let b = job.worker_with("b", "exactly_once_v2", &settings("300"))?;
    wait_running(&b, 2).await?;

    let clicks = click_stream(40, 20, common::now_ms() - 3_600_000, GAP, GRACE, false, 29);
    let opened = Instant::now();
    job.produce(&clicks).await?;
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    // Everything processed, a's part produced but uncommitted.
    job.wait_view(
        "every record processed",
        false,
        &[&a, &b],
        &reference,
        |v| v == &reference,
    )
    .await?;
    a.kill()?;
    let killed = Instant::now();

    let bound = TRANSACTION_TIMEOUT
        .saturating_sub(opened.elapsed())
        .saturating_sub(Duration::from_secs(5));
    let last = std::sync::Mutex::new(0usize);
    common::wait_for(
        "the read_committed output to equal the reference before a's transaction could time out",
        bound,
        || async {
            let view = job.view(true).ok()?;
            *last.lock().ok()? = view.len();
            (view == reference).then_some(())
        },
    )
    .await
    .with_context(|| {
        format!(
            "read_committed view: {} of {} sessions\n{}",
            last.lock().map(|l| *l).unwrap_or_default(),
            reference.len(),
            b.tail()
        )
    })?;
    assert!(
        b.log()
            .contains("fenced the transactional id of a member that left the group"),
        "{}",
        b.tail()
    );
    println!(
        "read_committed output complete {:?} after the kill ({:?} after a's transaction opened)",
        killed.elapsed(),
        opened.elapsed()
    );
    Ok(())
}
