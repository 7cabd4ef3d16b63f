//! The side-by-side bench behind `scripts/bench`: the session count job run by
//! `kstate-worker` (at_least_once and exactly_once_v2) and by Apache Kafka Streams 4.4.0
//! (RocksDB) on the same generated input, broker and machine, in one run, with a bare
//! rdkafka consumer and a bare rdkafka passthrough (consume each record, produce it to
//! another topic) as ceilings, restores of a wiped store by both engines, Java
//! `ConsumerPerformance` on kstate's changelog as the fetch ceiling, peak RSS of each
//! process (VmHWM), and changelog records per input record. Both engines' outputs are
//! checked equal as compacted views. Writes `BENCHMARKS.md`, `bench/results.json` and
//! `bench/*.png` (see `report.rs`).
//!
//! `scripts/bench` runs it (`cargo bench --bench worker_vs_streams`; `BENCH_RECORDS` and
//! `BENCH_RECORDS_2` set the two workloads' sizes). Without `--bench` (as
//! `cargo test --all-targets` runs it) it is a smoke run: kstate alone on 2,000 records,
//! nothing written.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "worker_vs_streams/load.rs"]
mod load;
#[path = "worker_vs_streams/probes.rs"]
mod probes;
#[path = "worker_vs_streams/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use common::java::JavaApp;
use common::worker::{compacted, produce, read_topic, Worker};
use kstate::changelog::changelog_topic_name;
use kstate::protocol::{BrokerConnection, ConnectionConfig};
use load::{KeyDist, Workload};
use probes::{
    bare_consumer_rate, consumer_perf, passthrough_rate, peak_rss_mib, topic_records, watermarks,
};
use report::Figures;

const CACHE_BYTES: &str = "10485760";
const COMMIT_MS: &str = "1000";
const STORE: &str = "counts";
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// Waits until `group` committed every partition of `input` up to `ends`; returns when.
async fn committed_to_end(
    bootstrap: &str,
    group: &str,
    input: &str,
    ends: &[i64],
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let mut conn = BrokerConnection::connect(bootstrap, ConnectionConfig::default()).await?;
    let coordinator = conn.find_coordinator(group).await?;
    let mut conn =
        BrokerConnection::connect(coordinator.addr(), ConnectionConfig::default()).await?;
    let partitions: Vec<(String, i32)> = (0..ends.len() as i32)
        .map(|p| (input.to_string(), p))
        .collect();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(fetched) = conn.offset_fetch(group, &partitions).await {
            let done = partitions.iter().zip(ends).all(|((_, p), end)| {
                fetched
                    .iter()
                    .any(|f| f.partition == *p && f.offset >= *end)
            });
            if done {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            bail!("{group} did not commit {input} to its end within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn worker_settings(
    app: &str,
    input: &str,
    w: &Workload,
    guarantee: &str,
    state: &Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("application.id", app.to_string()),
        ("bootstrap.servers", common::bootstrap()),
        ("input.topic", input.to_string()),
        ("output.topic", format!("{app}-out")),
        ("store.name", STORE.into()),
        ("inactivity.gap.ms", w.gap_ms.to_string()),
        ("grace.ms", w.grace_ms.to_string()),
        ("commit.interval.ms", COMMIT_MS.into()),
        ("statestore.cache.max.bytes", CACHE_BYTES.into()),
        ("processing.guarantee", guarantee.into()),
        ("state.dir", state.display().to_string()),
        ("metrics.addr", String::new()),
    ]
}

fn java_args(app: &str, input: &str, w: &Workload, state: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("application.id", app.to_string()),
        ("bootstrap.servers", common::bootstrap()),
        ("input", input.to_string()),
        ("output", format!("{app}-out")),
        ("store", STORE.into()),
        ("gap.ms", w.gap_ms.to_string()),
        ("grace.ms", w.grace_ms.to_string()),
        ("commit.interval.ms", COMMIT_MS.into()),
        ("statestore.cache.max.bytes", CACHE_BYTES.into()),
        ("state.dir", state.display().to_string()),
    ]
}

struct Input {
    topic: String,
    ends: Vec<i64>,
}

async fn make_input(w: &Workload, seed: u64) -> anyhow::Result<Input> {
    let bootstrap = common::bootstrap();
    let topic = common::unique(&format!("bench-{}", w.name));
    common::create_topic(&bootstrap, &topic, w.partitions, &[]).await?;
    let data = load::generate(w, common::now_ms() - 3_600_000, seed);
    let t = Instant::now();
    for chunk in data.chunks(100_000) {
        produce(&bootstrap, &topic, w.partitions, chunk).await?;
    }
    println!(
        "[{}] produced {} records in {:.1} s",
        w.name,
        w.records,
        t.elapsed().as_secs_f64()
    );
    let ends = watermarks(&bootstrap, &topic)?
        .iter()
        .map(|w| w.1)
        .collect();
    Ok(Input { topic, ends })
}

/// Runs kstate-worker over the input; records rate, peak RSS and changelog records.
async fn run_kstate(
    f: &mut Figures,
    prefix: &str,
    w: &Workload,
    input: &Input,
    guarantee: &str,
    state: &Path,
) -> anyhow::Result<String> {
    let bootstrap = common::bootstrap();
    let app = common::unique(&format!("bench-kstate-{}", w.name));
    common::create_topic(&bootstrap, &format!("{app}-out"), w.partitions, &[]).await?;
    let started = Instant::now();
    let worker = Worker::start(
        "kstate",
        &worker_settings(&app, &input.topic, w, guarantee, state),
    )?;
    let done = committed_to_end(&bootstrap, &app, &input.topic, &input.ends, RUN_TIMEOUT)
        .await
        .with_context(|| worker.tail())?;
    let rate = w.records as f64 / (done - started).as_secs_f64();
    if let Some(rss) = peak_rss_mib(worker.pid()) {
        f.set(format!("{prefix}.peak_rss_mib"), rss);
    }
    drop(worker);
    f.set(format!("{prefix}.rate"), rate);
    if guarantee == "at_least_once" {
        let changelog = topic_records(&bootstrap, &changelog_topic_name(&app, STORE))?;
        f.set(format!("{prefix}.changelog_records"), changelog);
    }
    println!("[{}] kstate {guarantee}: {rate:.0} records/s", w.name);
    Ok(app)
}

/// Runs Kafka Streams over the input; records rate, peak RSS and changelog records.
async fn run_java(
    f: &mut Figures,
    prefix: &str,
    w: &Workload,
    input: &Input,
    state: &Path,
) -> anyhow::Result<String> {
    let bootstrap = common::bootstrap();
    let app = common::unique(&format!("bench-java-{}", w.name));
    common::create_topic(&bootstrap, &format!("{app}-out"), w.partitions, &[]).await?;
    let started = Instant::now();
    let java = JavaApp::spawn("streams", &java_args(&app, &input.topic, w, state))?;
    let done = committed_to_end(&bootstrap, &app, &input.topic, &input.ends, RUN_TIMEOUT)
        .await
        .with_context(|| java.tail())?;
    let rate = w.records as f64 / (done - started).as_secs_f64();
    if let Some(rss) = peak_rss_mib(java.pid()) {
        f.set(format!("{prefix}.peak_rss_mib"), rss);
    }
    drop(java);
    f.set(format!("{prefix}.rate"), rate);
    let changelog = topic_records(&bootstrap, &changelog_topic_name(&app, STORE))?;
    f.set(format!("{prefix}.changelog_records"), changelog);
    println!("[{}] Kafka Streams: {rate:.0} records/s", w.name);
    Ok(app)
}

/// Restarts kstate `app` on a wiped state dir and times the restore of its changelog:
/// from launch, and from the first "task restoring" line, to every task running.
async fn restore_kstate(
    f: &mut Figures,
    w: &Workload,
    input: &Input,
    app: &str,
    state: &Path,
) -> anyhow::Result<()> {
    let bootstrap = common::bootstrap();
    let records = topic_records(&bootstrap, &changelog_topic_name(app, STORE))?;
    let started = Instant::now();
    let worker = Worker::start(
        "kstate-restore",
        &worker_settings(app, &input.topic, w, "at_least_once", state),
    )?;
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
    let restoring = restoring.unwrap_or(started);
    f.set("a.kstate_restore.records", records);
    f.set(
        "a.kstate_restore.rate",
        records as f64 / (ready - started).as_secs_f64(),
    );
    f.set(
        "a.kstate_restore.restore_rate",
        records as f64 / (ready - restoring).as_secs_f64(),
    );
    if let Some(rss) = peak_rss_mib(worker.pid()) {
        f.set("a.kstate_restore.peak_rss_mib", rss);
    }
    println!(
        "[a] kstate restore of {records} changelog records: {:.1} s",
        (ready - started).as_secs_f64()
    );
    Ok(())
}

/// Restarts Kafka Streams `app` on a wiped state dir; times launch to RUNNING.
fn restore_java(
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

/// Whether two apps' outputs are equal as compacted views (recorded under `key`, with the
/// number of sessions that differ); prints the first differences.
fn outputs_equal(
    f: &mut Figures,
    key: &str,
    a: &str,
    a_committed: bool,
    b: &str,
) -> anyhow::Result<()> {
    let bootstrap = common::bootstrap();
    let va = compacted(&read_topic(&bootstrap, &format!("{a}-out"), a_committed)?);
    let vb = compacted(&read_topic(&bootstrap, &format!("{b}-out"), false)?);
    let only_a: Vec<_> = va.iter().filter(|(k, v)| vb.get(*k) != Some(v)).collect();
    let only_b: Vec<_> = vb.iter().filter(|(k, v)| va.get(*k) != Some(v)).collect();
    if va != vb {
        println!(
            "outputs differ ({} vs {} sessions): {a} has {:?}; {b} has {:?}",
            va.len(),
            vb.len(),
            &only_a[..only_a.len().min(5)],
            &only_b[..only_b.len().min(5)]
        );
    }
    f.set(key, va == vb);
    f.set(
        format!("{key}_differing_sessions"),
        only_a.len() + only_b.len(),
    );
    f.set(format!("{key}_sessions"), vb.len());
    Ok(())
}

/// ops/s of criterion's `per_record/find_sessions+put/1000000`, if `scripts/bench` ran it.
fn store_ops_per_sec() -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let path = dir.join("criterion/per_record/find_sessions+put/1000000/new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let ns = v.get("mean")?.get("point_estimate")?.as_f64()?;
    Some(1e9 / ns)
}

/// Allocations per record and heap bytes per live session from `benches/session_store.rs`'s
/// output, which `scripts/bench` saves to `BENCH_STORE_LOG`.
fn store_log_figures(f: &mut Figures) {
    let Ok(log) = std::env::var("BENCH_STORE_LOG")
        .and_then(|p| std::fs::read_to_string(p).map_err(|_| std::env::VarError::NotPresent))
    else {
        return;
    };
    let number_before = |line: &str, suffix: &str| -> Option<f64> {
        line.split(suffix).next()?.rsplit(' ').nth(1)?.parse().ok()
    };
    for line in log.lines() {
        if line.starts_with("allocations: find_sessions+put, 1000000") {
            if let Some(v) = number_before(line, "per record") {
                f.set("store.allocations_per_record_find_sessions_put_1m", v);
            }
        } else if line.starts_with("allocations: aggregate step") {
            if let Some(v) = number_before(line, "per record") {
                f.set("store.allocations_per_record_aggregate_step", v);
            }
        } else if line.starts_with("memory: 1000000 live sessions") {
            if let Some(v) = number_before(line, "heap bytes/session") {
                f.set("store.heap_bytes_per_live_session_1m", v);
            }
        }
    }
}

fn workloads(full: bool) -> [Workload; 2] {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let a = Workload {
        name: "a",
        records: if full {
            env("BENCH_RECORDS", 1_000_000)
        } else {
            2_000
        },
        keys: 50_000,
        dist: KeyDist::Uniform,
        gap_ms: 5_000,
        grace_ms: 2_000,
        max_out_of_order_ms: 10_000,
        partitions: 4,
    };
    let b = Workload {
        name: "b",
        records: env("BENCH_RECORDS_2", 300_000),
        keys: 10_000,
        dist: KeyDist::Zipf(0.8),
        gap_ms: 30_000,
        grace_ms: 10_000,
        max_out_of_order_ms: 10_000,
        partitions: 4,
    };
    [a, b]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    common::broker();
    let [a, b] = workloads(full);
    let state = std::env::temp_dir().join(common::unique("bench-state"));
    let mut f = Figures::default();
    if !full {
        let input = make_input(&a, 7).await?;
        run_kstate(
            &mut f,
            "a.kstate_alos",
            &a,
            &input,
            "at_least_once",
            &state.join("k"),
        )
        .await?;
        println!("smoke run: scripts/bench runs the whole comparison");
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    f.set("load_average_start", report::load_average());
    f.set("a.records", a.records as f64);
    f.set("b.records", b.records as f64);
    JavaApp::build()?;
    let bootstrap = common::bootstrap();
    let mut notes = Vec::new();

    let input = make_input(&a, 7).await?;
    f.set(
        "a.bare_consumer.rate",
        bare_consumer_rate(&bootstrap, &input.topic, &a)?,
    );
    let pass_out = common::unique("bench-passthrough");
    common::create_topic(&bootstrap, &pass_out, a.partitions, &[]).await?;
    f.set(
        "a.passthrough.rate",
        passthrough_rate(&bootstrap, &input.topic, &pass_out, &a)?,
    );
    println!(
        "[a] ceilings: consumer {:?}, passthrough {:?}",
        f.num("a.bare_consumer.rate"),
        f.num("a.passthrough.rate")
    );
    let alos = run_kstate(
        &mut f,
        "a.kstate_alos",
        &a,
        &input,
        "at_least_once",
        &state.join("a-alos"),
    )
    .await?;
    restore_kstate(&mut f, &a, &input, &alos, &state.join("a-alos-restore")).await?;
    let changelog = changelog_topic_name(&alos, STORE);
    let records = topic_records(&bootstrap, &changelog)?;
    f.set("a.consumer_perf.records", records);
    f.set(
        "a.consumer_perf.fetch_rate",
        consumer_perf(&bootstrap, &changelog, records)?,
    );
    let eos = run_kstate(
        &mut f,
        "a.kstate_eos",
        &a,
        &input,
        "exactly_once_v2",
        &state.join("a-eos"),
    )
    .await?;
    let java = run_java(&mut f, "a.kafka_streams", &a, &input, &state.join("a-java")).await?;
    restore_java(&mut f, &a, &input, &java, &state.join("a-java-restore"))?;
    outputs_equal(&mut f, "a.outputs_equal_alos", &alos, false, &java)?;
    outputs_equal(&mut f, "a.outputs_equal_eos", &eos, true, &java)?;

    let input_b = make_input(&b, 11).await?;
    let alos_b = run_kstate(
        &mut f,
        "b.kstate_alos",
        &b,
        &input_b,
        "at_least_once",
        &state.join("b-alos"),
    )
    .await?;
    let java_b = run_java(
        &mut f,
        "b.kafka_streams",
        &b,
        &input_b,
        &state.join("b-java"),
    )
    .await?;
    outputs_equal(&mut f, "b.outputs_equal_alos", &alos_b, false, &java_b)?;

    store_log_figures(&mut f);
    match store_ops_per_sec() {
        Some(ops) => f.set("store.find_sessions_put_1m_ops_per_sec", ops),
        None => notes.push("criterion's find_sessions+put at 1M was not run before this bench (scripts/bench runs it first)".to_string()),
    }
    f.set("load_average_end", report::load_average());
    notes.push("Kafka Streams runs at_least_once only (its exactly_once_v2 run would double the bench's time); throughput_ratio_eos divides kstate's exactly_once_v2 rate by Kafka Streams' at_least_once rate.".into());
    notes.push("Restore rates divide the changelog's record count (high minus low watermark) by the time to ready; Kafka Streams is ready when it reports RUNNING.".into());
    let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| "scripts/bench".into());
    report::write_json(&root.join("bench/results.json"), &f)?;
    report::register_font()?;
    report::plots(&root.join("bench"), &f)?;
    report::write_markdown(
        &root.join("BENCHMARKS.md"),
        &f,
        &[a.describe(), b.describe()],
        &command,
        &notes,
    )?;
    let _ = std::fs::remove_dir_all(&state);
    let equal = [
        "a.outputs_equal_alos",
        "a.outputs_equal_eos",
        "b.outputs_equal_alos",
    ]
    .iter()
    .all(|k| f.0.get(*k).and_then(serde_json::Value::as_bool) == Some(true));
    ensure!(
        equal,
        "kstate's and Kafka Streams' outputs differ (see above); figures written anyway"
    );
    Ok(())
}
