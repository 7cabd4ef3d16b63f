//! A rebalance that lands while a worker restores: the restore of the revoked tasks is
//! cancelled, the revocation is acknowledged without waiting for the whole changelog, the
//! tasks it had not finished stay dormant with the prefix they restored, and both workers end
//! up with correct state and output (Faust and Quix Streams have hung here).

mod common;

use std::time::Duration;

use anyhow::Context;
use common::worker::{
    click_stream, compacted, produce, read_topic, reference_by_partition, write_earlier_changelog,
    Worker,
};

const PARTITIONS: i32 = 4;
const GAP: i64 = 10_000;
const GRACE: i64 = 20_000;
/// Changelog records per partition: enough that a restore takes seconds in a debug build.
const CHANGELOG_RECORDS: i64 = 250_000;

#[tokio::test]
async fn a_rebalance_mid_restore_cancels_it_and_hands_the_tasks_over() -> anyhow::Result<()> {
    let bootstrap = common::broker();
    let app = common::unique("restore-rebalance");
    let input = format!("{app}-clicks");
    let output = format!("{app}-counts");
    common::create_topic(&bootstrap, &input, PARTITIONS, &[]).await?;
    common::create_topic(&bootstrap, &output, PARTITIONS, &[]).await?;

    // A changelog as an earlier owner left it: 10,000 sessions per partition, each updated
    // CHANGELOG_RECORDS / 10,000 times, keys apart from the input's.
    let changelog = format!("{app}-counts-changelog");
    write_earlier_changelog(&bootstrap, &changelog, PARTITIONS, CHANGELOG_RECORDS).await?;

    let settings = |name: &str| {
        vec![
            ("application.id", app.clone()),
            ("bootstrap.servers", bootstrap.clone()),
            ("input.topic", input.clone()),
            ("output.topic", output.clone()),
            ("store.name", "counts".to_string()),
            ("inactivity.gap.ms", GAP.to_string()),
            ("grace.ms", GRACE.to_string()),
            ("retention.ms", "86400000".to_string()),
            ("commit.interval.ms", "300".to_string()),
            (
                "state.dir",
                std::env::temp_dir()
                    .join(&app)
                    .join(name)
                    .display()
                    .to_string(),
            ),
            ("metrics.addr", String::new()),
        ]
    };
    let a = Worker::start("a", &settings("a"))?;
    common::wait_for("a to start restoring", Duration::from_secs(60), || async {
        (a.count("task restoring") > 0).then_some(())
    })
    .await
    .with_context(|| a.tail())?;
    let b = Worker::start("b", &settings("b"))?;

    common::wait_for(
        "both workers to run two tasks each",
        Duration::from_secs(120),
        || async { (a.count("task running") >= 2 && b.count("task running") >= 2).then_some(()) },
    )
    .await
    .with_context(|| format!("--- a ---\n{}\n--- b ---\n{}", a.tail(), b.tail()))?;
    assert!(
        a.log().contains("cancelling the restore"),
        "the revocation reached a while it restored, and cancelled it:\n{}",
        a.tail()
    );
    assert!(
        a.log().contains("restore cancelled; task kept dormant"),
        "{}",
        a.tail()
    );

    // The state both restored is whole: new input merges with it and the output is right.
    let clicks = click_stream(20, 10, common::now_ms() - 3_600_000, GAP, GRACE, false, 3);
    produce(&bootstrap, &input, PARTITIONS, &clicks).await?;
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    common::wait_for(
        "the output to equal the reference",
        Duration::from_secs(90),
        || async {
            let view = compacted(&read_topic(&bootstrap, &output, false).ok()?);
            (view == reference).then_some(())
        },
    )
    .await
    .with_context(|| format!("--- a ---\n{}\n--- b ---\n{}", a.tail(), b.tail()))?;
    for line in a
        .log()
        .lines()
        .filter(|l| l.contains("task restor") || l.contains("cancel"))
    {
        println!("a: {line}");
    }
    Ok(())
}
