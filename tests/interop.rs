//! One application, two languages: Kafka Streams 4.4.0 (the reference app in
//! `tests/java/streams-reference`, a child process) and `kstate-worker` under the same
//! `application.id`, against the real broker.
//!
//! - The topology kstate declares is the one Kafka Streams declares, field by field, as the
//!   broker describes both groups; and the broker accepts kstate's join into a group Kafka
//!   Streams created (it refuses any difference with "Topology updates are not supported yet").
//! - Handoff both ways, under both guarantees: one side processes the first half of an input
//!   and stops cleanly; the other, with an empty state dir, restores the first side's
//!   changelog, resumes from its committed offsets and processes the second half; the
//!   output's compacted view equals the reference over the whole input.
//! - One group, two languages: a Kafka Streams instance and a kstate worker split the tasks;
//!   after a SIGKILL of either, the other takes every task and the output equals the
//!   reference.

#[path = "interop/app.rs"]
mod app;
mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use app::{
    connect, describe, normalized, App, Guarantee, Instance, Side, View, DEADLINE, GAP, GRACE,
    PARTITIONS, RETENTION, STORE,
};
use common::java::JavaApp;
use common::worker::{click_stream, reference_by_partition, Click};
use kstate::membership::session_count_topology;
use kstate::protocol::{BrokerConnection, StreamsGroupHeartbeatRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kstate_declares_the_topology_kafka_streams_declares() -> anyhow::Result<()> {
    JavaApp::build()?;
    let java_app = App::new("interop-topo-java").await?;
    let kstate_app = App::new("interop-topo-kstate").await?;
    let mut java = java_app.java("java", Guarantee::AtLeastOnce)?;
    let mut worker = kstate_app.kstate("kstate", Guarantee::AtLeastOnce)?;

    let java_group = describe(&java_app.bootstrap, &java_app.id, 1)
        .await
        .with_context(|| java.tail())?;
    let kstate_group = describe(&kstate_app.bootstrap, &kstate_app.id, 1)
        .await
        .with_context(|| worker.tail())?;
    let java_topology = java_group.topology.as_ref().context("no Java topology")?;
    let kstate_topology = kstate_group
        .topology
        .as_ref()
        .context("no kstate topology")?;
    println!("Kafka Streams declared: {java_topology:#?}");
    // Every field the broker describes (epoch, subtopology id, source, repartition and
    // changelog topics with partitions, replication factor and configs in order), with
    // only the application id (the changelog's prefix) and the source topic told apart.
    let java_side = normalized(java_topology, &java_app.id);
    let kstate_side = normalized(kstate_topology, &kstate_app.id);
    assert_eq!(
        kstate_side, java_side,
        "kstate (left) vs Kafka Streams (right)"
    );
    let changelog = &java_topology
        .subtopologies
        .as_ref()
        .and_then(|s| s.first())
        .context("no subtopology")?
        .state_changelog_topics[0];
    assert_eq!(changelog.replication_factor, -1, "Kafka Streams' default");
    let (java_member, kstate_member) = (&java_group.members[0], &kstate_group.members[0]);
    assert_eq!(kstate_member.topology_epoch, java_member.topology_epoch);
    assert_eq!(kstate_member.client_tags, java_member.client_tags);
    assert_eq!(kstate_member.user_endpoint, java_member.user_endpoint);

    // The broker compares a joining member's topology with the group's in full (the
    // declared partitions too, which describe shows resolved): a join into the group
    // Kafka Streams created with kstate's topology is accepted, then leaves.
    let topology = session_count_topology(
        &java_app.input,
        &format!("{}-{STORE}-changelog", java_app.id),
        &kstate::changelog::changelog_topic_configs(Duration::from_millis(RETENTION as u64)),
    );
    let mut conn = connect(&java_app.bootstrap).await?;
    let member_id = common::unique("probe");
    let join = StreamsGroupHeartbeatRequest {
        group_id: java_app.id.clone(),
        member_id: member_id.clone(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        topology: Some(topology),
        process_id: Some(common::unique("probe-process")),
        active_tasks: Some(vec![]),
        standby_tasks: Some(vec![]),
        warmup_tasks: Some(vec![]),
        ..Default::default()
    };
    let joined = conn.heartbeat(&join).await?;
    assert_eq!(
        (joined.error_code, joined.error_message.as_deref()),
        (0, None),
        "the broker refused kstate's topology in the Kafka Streams group"
    );
    let leave = StreamsGroupHeartbeatRequest {
        group_id: java_app.id.clone(),
        member_id,
        member_epoch: -1,
        ..Default::default()
    };
    let left = conn.heartbeat(&leave).await?;
    assert_eq!(left.error_code, 0, "leaving: {:?}", left.error_message);

    java.check_alive()?;
    worker.check_alive()?;
    Ok(())
}

/// The two halves of a generated input: the second half later than the first (Kafka
/// Streams starts stream time afresh after a restart, kstate too), its first bursts within
/// the gap of the first half's last ones, so sessions continue across the handoff.
fn halves(seed: u64, base: i64) -> (Vec<Click>, Vec<Click>) {
    let first = click_stream(12, 10, base, GAP, GRACE, false, seed);
    let last = first.iter().map(|c| c.timestamp).max().unwrap_or(base);
    let second = click_stream(12, 10, last - GAP / 2, GAP, GRACE, false, seed + 1000);
    (first, second)
}

/// Sessions of the reference that hold records of both halves: they prove the second side
/// restored the first side's state (without it, they would be two sessions or a smaller
/// count).
fn spanning(reference: &View, first: &[Click], second: &[Click]) -> usize {
    reference
        .keys()
        .filter(|(key, start, end)| {
            let within = |c: &&Click| c.key == *key && c.timestamp >= *start && c.timestamp <= *end;
            first.iter().any(|c| within(&c)) && second.iter().any(|c| within(&c))
        })
        .count()
}

/// One handoff: `first` processes the first half and stops cleanly; `second`, with an
/// empty state dir, processes the second half. Returns a summary line.
async fn handoff(
    first: Side,
    second: Side,
    guarantee: Guarantee,
    seed: u64,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let app = App::new(&format!(
        "interop-{first:?}-{second:?}-{}",
        guarantee.name()
    ))
    .await?;
    let base = (common::now_ms() - 3_600_000) / 1_000 * 1_000;
    let (first_half, second_half) = halves(seed, base);
    let all: Vec<Click> = first_half.iter().chain(&second_half).cloned().collect();
    let reference = reference_by_partition(&all, PARTITIONS, GAP, GRACE);
    let across = spanning(&reference, &first_half, &second_half);
    ensure!(across > 0, "seed {seed}: no session spans the handoff");

    let mut a = app.start(first, "first", guarantee)?;
    let ends = app.produce(&first_half).await?;
    app.wait_committed(&ends, &mut [&mut a]).await?;
    a.stop_cleanly().await?;
    let first_done = started.elapsed();

    let mut b = app.start(second, "second", guarantee)?;
    let ends = app.produce(&second_half).await?;
    app.wait_committed(&ends, &mut [&mut b]).await?;
    // Committed offsets mean the output is written (and, exactly once, committed); at
    // least once, a clean stop flushes nothing more that counts twice.
    let view = app.view(guarantee)?;
    b.stop_cleanly().await?;
    ensure!(
        view == reference,
        "{first:?} -> {second:?} under {}: the output (left) differs from the reference \
         (right)\nleft:  {view:?}\nright: {reference:?}",
        guarantee.name()
    );
    Ok(format!(
        "{first:?} -> {second:?} {}: {} + {} records, {} sessions ({across} across the \
         handoff), first side done after {} ms, all after {} ms",
        guarantee.name(),
        first_half.len(),
        second_half.len(),
        reference.len(),
        first_done.as_millis(),
        started.elapsed().as_millis()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_moves_between_kafka_streams_and_kstate_both_ways() -> anyhow::Result<()> {
    JavaApp::build()?;
    let started = Instant::now();
    // The four handoffs at once: Java's start-up dominates, and at most two JVMs run at a
    // time (two handoffs start with Java, two end with it).
    let (a, b, c, d) = tokio::join!(
        handoff(Side::Java, Side::Kstate, Guarantee::AtLeastOnce, 11),
        handoff(Side::Kstate, Side::Java, Guarantee::AtLeastOnce, 12),
        handoff(Side::Java, Side::Kstate, Guarantee::ExactlyOnce, 13),
        handoff(Side::Kstate, Side::Java, Guarantee::ExactlyOnce, 14),
    );
    let results = [a, b, c, d];
    for result in &results {
        match result {
            Ok(summary) => println!("{summary}"),
            Err(e) => println!("FAILED: {e:#}"),
        }
    }
    println!("four handoffs in {} ms", started.elapsed().as_millis());
    for result in results {
        result?;
    }
    Ok(())
}

/// Active tasks per member, as the broker describes the group.
async fn owned_tasks(conn: &mut BrokerConnection, app: &App) -> anyhow::Result<Vec<usize>> {
    let described = conn.describe(std::slice::from_ref(&app.id), false).await?;
    Ok(described
        .groups
        .first()
        .map(|g| {
            g.members
                .iter()
                .map(|m| {
                    m.assignment
                        .active_tasks
                        .iter()
                        .map(|t| t.partitions.len())
                        .sum()
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Polls until both instances own some of the `PARTITIONS` tasks.
async fn wait_split(app: &App, running: &mut [&mut Instance]) -> anyhow::Result<Vec<usize>> {
    let mut conn = connect(&app.bootstrap).await?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        for instance in running.iter_mut() {
            instance.check_alive()?;
        }
        let owned = owned_tasks(&mut conn, app).await?;
        if owned.len() == 2
            && owned.iter().all(|n| *n > 0)
            && owned.iter().sum::<usize>() == PARTITIONS as usize
        {
            return Ok(owned);
        }
        if Instant::now() >= deadline {
            let tails: Vec<String> = running.iter().map(|i| i.tail()).collect();
            bail!(
                "{}: the tasks were never split between Kafka Streams and kstate: {owned:?}\n{}",
                app.id,
                tails.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until `instance` runs every one of the `PARTITIONS` tasks per the broker.
async fn wait_all_tasks(app: &App, survivor: &mut Instance) -> anyhow::Result<()> {
    let mut conn = connect(&app.bootstrap).await?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        survivor.check_alive()?;
        let owned = owned_tasks(&mut conn, app).await?;
        if owned == [PARTITIONS as usize] {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{}: the survivor never owned all {PARTITIONS} tasks\n{}",
                app.id,
                survivor.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Java and kstate in one group; `victim` is SIGKILLed after the first half.
async fn mixed_group(victim: Side, seed: u64) -> anyhow::Result<String> {
    let started = Instant::now();
    let guarantee = Guarantee::AtLeastOnce;
    let app = App::new(&format!("interop-mixed-kill-{victim:?}")).await?;
    let base = (common::now_ms() - 3_600_000) / 1_000 * 1_000;
    let (first_half, second_half) = halves(seed, base);
    let all: Vec<Click> = first_half.iter().chain(&second_half).cloned().collect();
    let reference = reference_by_partition(&all, PARTITIONS, GAP, GRACE);

    let mut java = app.java("java", guarantee)?;
    let mut kstate = app.kstate("kstate", guarantee)?;
    let split = wait_split(&app, &mut [&mut java, &mut kstate]).await?;
    let ends = app.produce(&first_half).await?;
    app.wait_committed(&ends, &mut [&mut java, &mut kstate])
        .await?;
    let (mut victim_instance, mut survivor) = match victim {
        Side::Java => (java, kstate),
        Side::Kstate => (kstate, java),
    };
    victim_instance.kill()?;
    wait_all_tasks(&app, &mut survivor).await?;
    let ends = app.produce(&second_half).await?;
    app.wait_committed(&ends, &mut [&mut survivor]).await?;
    let view = app.view(guarantee)?;
    survivor.stop_cleanly().await?;
    // The victim was killed only after the whole first half was committed (its output
    // flushed first), so nothing is processed twice: the output is exactly the reference.
    ensure!(
        view == reference,
        "kill {victim:?}: the output (left) differs from the reference (right)\nleft:  \
         {view:?}\nright: {reference:?}"
    );
    Ok(format!(
        "kill {victim:?}: tasks split {split:?} before; {} sessions; {} ms",
        reference.len(),
        started.elapsed().as_millis()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_streams_and_kstate_share_one_group() -> anyhow::Result<()> {
    JavaApp::build()?;
    let (a, b) = tokio::join!(mixed_group(Side::Java, 21), mixed_group(Side::Kstate, 22));
    for result in [&a, &b] {
        match result {
            Ok(summary) => println!("{summary}"),
            Err(e) => println!("FAILED: {e:#}"),
        }
    }
    a?;
    b?;
    Ok(())
}
