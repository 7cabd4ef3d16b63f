//! The bench's restore phase: kstate restoring a wiped store beside Java
//! `ConsumerPerformance` reading the same changelog, alternated over a few rounds
//! (`BENCH_RESTORE_ROUNDS`, default 3) so that both see the same machine load, and the
//! median of each reported; `restore_fraction_of_fetch_ceiling` is the median of the
//! rounds' paired fractions. Kafka Streams' restore of its own changelog is timed once.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use kstate::changelog::changelog_topic_name;
use serde_json::json;

use super::common;
use super::common::java::JavaApp;
use super::common::worker::Worker;
use super::load::Workload;
use super::probes::{self, consumer_perf, peak_rss_mib, topic_records};
use super::report::Figures;
use super::{java_args, worker_settings, Input, RUN_TIMEOUT, STORE};

/// One restore of kstate `app` on a wiped state dir.
struct KstateRestore {
    /// Changelog records per second from launch to every task running.
    rate: f64,
    /// Changelog records per second from the first "task restoring" line to every task
    /// running.
    restore_rate: f64,
    replayed: u64,
    peak_rss_mib: Option<f64>,
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn rounds() -> usize {
    std::env::var("BENCH_RESTORE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// Rounds of (kstate restores `app`'s changelog into a wiped store, ConsumerPerformance
/// reads that changelog), back to back; records every round and the medians.
pub async fn kstate_beside_ceiling(
    f: &mut Figures,
    w: &Workload,
    input: &Input,
    app: &str,
    state: &Path,
) -> anyhow::Result<()> {
    let bootstrap = common::bootstrap();
    let changelog = changelog_topic_name(app, STORE);
    let records = topic_records(&bootstrap, &changelog)?;
    let (mut kstate, mut ceiling, mut fractions) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds() {
        let dir = state.join(format!("round-{round}"));
        let run = restore_kstate(w, input, app, &dir, round == 0).await?;
        let fetch = consumer_perf(&bootstrap, &changelog, records)?;
        println!(
            "[r] round {round}: kstate restore {:.0} rec/s (launch → ready {:.0}), ConsumerPerformance {fetch:.0} rec/s, fraction {:.3}",
            run.restore_rate,
            run.rate,
            run.restore_rate / fetch
        );
        f.set("a.kstate_restore.replayed", run.replayed);
        if let Some(rss) = run.peak_rss_mib {
            let peak = f
                .num("a.kstate_restore.peak_rss_mib")
                .unwrap_or(0.0)
                .max(rss);
            f.set("a.kstate_restore.peak_rss_mib", peak);
        }
        fractions.push(run.restore_rate / fetch);
        ceiling.push(fetch);
        kstate.push(run);
    }
    let rates: Vec<f64> = kstate.iter().map(|r| r.rate).collect();
    let restore_rates: Vec<f64> = kstate.iter().map(|r| r.restore_rate).collect();
    f.set("a.kstate_restore.records", records);
    f.set("a.kstate_restore.rounds", json!(restore_rates));
    f.set("a.kstate_restore.rate", median(rates));
    f.set("a.kstate_restore.restore_rate", median(restore_rates));
    f.set("a.consumer_perf.records", records);
    f.set("a.consumer_perf.rounds", json!(ceiling));
    f.set("a.consumer_perf.fetch_rate", median(ceiling));
    f.set("a.restore_fraction.rounds", json!(fractions));
    f.set("a.restore_fraction.median", median(fractions));
    Ok(())
}

/// Restarts kstate `app` on the wiped state dir `state` and times the restore of its
/// changelog: from launch, and from the first "task restoring" line, to every task running;
/// then stops it cleanly, so that the next round's member is assigned the tasks at once.
/// With `BENCH_PERF` and `profile`, records `perf record -g` of it in FILE.restore.
async fn restore_kstate(
    w: &Workload,
    input: &Input,
    app: &str,
    state: &Path,
    profile: bool,
) -> anyhow::Result<KstateRestore> {
    let bootstrap = common::bootstrap();
    let records = topic_records(&bootstrap, &changelog_topic_name(app, STORE))?;
    let started = Instant::now();
    let mut worker = Worker::start(
        "kstate-restore",
        &worker_settings(app, &input.topic, w, "at_least_once", state),
    )?;
    let perf = match std::env::var("BENCH_PERF") {
        Ok(path) if profile => {
            // Attached once the clients exist (the restore consumer among them).
            let deadline = Instant::now() + Duration::from_secs(30);
            while worker.count("joining the streams group") == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Some(probes::Perf::attach(
                worker.pid(),
                &format!("{path}.restore"),
            )?)
        }
        _ => None,
    };
    let mut restoring = None;
    let deadline = started + RUN_TIMEOUT;
    while worker.count("task running") < w.partitions as usize {
        ensure!(
            Instant::now() < deadline,
            "kstate did not restore in time: {}",
            worker.tail()
        );
        if restoring.is_none() && worker.count("task restoring") > 0 {
            restoring = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ready = Instant::now();
    if let Some(perf) = perf {
        perf.stop()?;
    }
    let restoring = restoring.unwrap_or(started);
    let replayed: u64 = worker
        .log()
        .lines()
        .filter(|l| l.contains("task restored"))
        .filter_map(|l| {
            l.split(" restored=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let peak_rss_mib = peak_rss_mib(worker.pid());
    worker
        .terminate(Duration::from_secs(60))
        .with_context(|| worker.tail())?;
    Ok(KstateRestore {
        rate: records as f64 / (ready - started).as_secs_f64(),
        restore_rate: records as f64 / (ready - restoring).as_secs_f64(),
        replayed,
        peak_rss_mib,
    })
}

/// Restarts Kafka Streams `app` on a wiped state dir; times launch to RUNNING.
pub fn restore_java(
    f: &mut Figures,
    w: &Workload,
    input: &Input,
    app: &str,
    state: &Path,
) -> anyhow::Result<()> {
    let bootstrap = common::bootstrap();
    let records = topic_records(&bootstrap, &changelog_topic_name(app, STORE))?;
    let started = Instant::now();
    let mut java = JavaApp::spawn("streams-restore", &java_args(app, &input.topic, w, state))?;
    while !java.said("RUNNING") {
        ensure!(
            started.elapsed() < RUN_TIMEOUT,
            "Kafka Streams did not restore in time: {}",
            java.tail()
        );
        java.check_alive()?;
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = started.elapsed().as_secs_f64();
    f.set("a.kafka_streams_restore.records", records);
    f.set("a.kafka_streams_restore.rate", records as f64 / secs);
    if let Some(rss) = peak_rss_mib(java.pid()) {
        f.set("a.kafka_streams_restore.peak_rss_mib", rss);
    }
    println!("[a] Kafka Streams restore of {records} changelog records: {secs:.1} s");
    Ok(())
}
