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
#[path = "worker_vs_streams/compare.rs"]
mod compare;
#[path = "worker_vs_streams/load.rs"]
mod load;
#[path = "worker_vs_streams/probes.rs"]
mod probes;
#[path = "worker_vs_streams/report.rs"]
mod report;
#[path = "worker_vs_streams/restore.rs"]
mod restore;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use common::java::JavaApp;
use common::worker::{compacted, produce, read_topic, Worker};
use kstate::changelog::changelog_topic_name;
use kstate::protocol::{BrokerConnection, ConnectionConfig};
use load::{KeyDist, Workload};
use probes::{bare_consumer_rate, passthrough_rate, peak_rss_mib, topic_records, watermarks};
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
        ("retention.ms", w.retention().to_string()),
        ("commit.interval.ms", COMMIT_MS.into()),
        ("statestore.cache.max.bytes", CACHE_BYTES.into()),
        ("processing.guarantee", guarantee.into()),
        ("state.dir", state.display().to_string()),
        ("metrics.addr", String::new()),
    ]
    .into_iter()
    .chain(extra_settings())
    .collect()
}

/// `BENCH_KSTATE_SET="k=v,k=v"`: settings added to every kstate-worker run (to measure
/// client settings such as `kafka.fetch.wait.max.ms`).
fn extra_settings() -> Vec<(&'static str, String)> {
    std::env::var("BENCH_KSTATE_SET")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                &*Box::leak(k.trim().to_string().into_boxed_str()),
                v.trim().to_string(),
            )
        })
        .collect()
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
        ("retention.ms", w.retention().to_string()),
        ("commit.interval.ms", COMMIT_MS.into()),
        ("statestore.cache.max.bytes", CACHE_BYTES.into()),
        ("state.dir", state.display().to_string()),
    ]
}

struct Input {
    topic: String,
    ends: Vec<i64>,
    /// The records produced, in production order (for the output check).
    clicks: Vec<common::worker::Click>,
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
    Ok(Input {
        topic,
        ends,
        clicks: data,
    })
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
    let perf = match std::env::var("BENCH_PERF") {
        Ok(path) if prefix == "a.kstate_alos" => {
            // Attached once a task runs, so that every thread of the worker exists.
            let deadline = Instant::now() + Duration::from_secs(60);
            while worker.count("task running") == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(probes::Perf::attach(worker.pid(), &path)?)
        }
        _ => None,
    };
    let done = committed_to_end(&bootstrap, &app, &input.topic, &input.ends, RUN_TIMEOUT)
        .await
        .with_context(|| worker.tail())?;
    let rate = w.records as f64 / (done - started).as_secs_f64();
    if let Some(perf) = perf {
        perf.stop()?;
    }
    if let Some(rss) = peak_rss_mib(worker.pid()) {
        f.set(format!("{prefix}.peak_rss_mib"), rss);
    }
    // Stopped as Kafka Streams is (SIGTERM, a clean close): a restore started next does not
    // wait out a killed member's session.
    let mut worker = worker;
    worker
        .terminate(Duration::from_secs(60))
        .with_context(|| worker.tail())?;
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

/// Whether two apps' outputs are equal as compacted views on every session no
/// flush-timing-dependent record can reach (`compare.rs`); recorded under `key` with the
/// sessions compared, left out and differing. Prints the first differences.
fn outputs_equal(
    f: &mut Figures,
    key: &str,
    (w, input): (&Workload, &Input),
    a: &str,
    a_committed: bool,
    b: &str,
) -> anyhow::Result<()> {
    let bootstrap = common::bootstrap();
    let va = compacted(&read_topic(&bootstrap, &format!("{a}-out"), a_committed)?);
    let vb = compacted(&read_topic(&bootstrap, &format!("{b}-out"), false)?);
    let c = compare::compare(
        &va,
        &vb,
        &input.clicks,
        w.partitions,
        w.gap_ms,
        w.retention(),
    );
    if !c.differing.is_empty() {
        println!(
            "outputs differ on {} of {} timing-independent sessions ((key, start, end), {a}, {b}): {:?}",
            c.differing.len(),
            c.compared_sessions,
            &c.differing[..c.differing.len().min(5)]
        );
    }
    f.set(key, c.differing.is_empty());
    f.set(format!("{key}_differing_sessions"), c.differing.len());
    f.set(format!("{key}_sessions"), c.compared_sessions);
    f.set(format!("{key}_excluded_sessions"), c.excluded_sessions);
    f.set(
        format!("{key}_flush_dependent_records"),
        c.flush_dependent_records,
    );
    f.set(format!("{key}_differing_sessions_all"), c.differing_all);
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

/// The parts of the bench to run: `BENCH_PHASES=ceilings,alos,restore,eos,java,b` (any
/// subset; default all). A partial run prints its figures and writes nothing.
struct Phases(Option<Vec<String>>);

impl Phases {
    fn from_env() -> Self {
        Self(
            std::env::var("BENCH_PHASES")
                .ok()
                .map(|v| v.split(',').map(|p| p.trim().to_string()).collect()),
        )
    }

    fn on(&self, phase: &str) -> bool {
        self.0.as_ref().is_none_or(|p| p.iter().any(|x| x == phase))
    }

    fn all(&self) -> bool {
        ["ceilings", "alos", "restore", "eos", "java", "b"]
            .iter()
            .all(|p| self.on(p))
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
        retention_ms: None,
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
        retention_ms: None,
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
    let phases = Phases::from_env();
    f.set("load_average_start", report::load_average());
    f.set("a.records", a.records as f64);
    f.set("b.records", b.records as f64);
    if phases.on("java") || phases.on("b") {
        JavaApp::build()?;
    }
    let bootstrap = common::bootstrap();
    let mut notes = Vec::new();
    let started = Instant::now();
    let mark = |what: &str| println!("[{:>4} s] {what}", started.elapsed().as_secs());

    let input = make_input(&a, 7).await?;
    if phases.on("ceilings") {
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
        mark(&format!(
            "[a] ceilings: consumer {:?}, passthrough {:?}",
            f.num("a.bare_consumer.rate"),
            f.num("a.passthrough.rate")
        ));
    }
    let mut alos = None;
    if phases.on("alos") {
        let app = run_kstate(
            &mut f,
            "a.kstate_alos",
            &a,
            &input,
            "at_least_once",
            &state.join("a-alos"),
        )
        .await?;
        mark("[a] kstate at_least_once");
        alos = Some(app);
    }
    // The restores replay the whole changelog: with the default retention (gap + grace) both
    // engines start a restore from scratch at the first changelog record within retention
    // of the last one, a few percent of this changelog. Workload 1's input again, with a
    // retention of a day, processed and then restored by both engines.
    let r = Workload {
        name: "r",
        retention_ms: Some(86_400_000),
        ..a.clone()
    };
    if phases.on("restore") {
        let app = run_kstate(
            &mut f,
            "r.kstate_alos",
            &r,
            &input,
            "at_least_once",
            &state.join("r-alos"),
        )
        .await?;
        restore::kstate_beside_ceiling(&mut f, &r, &input, &app, &state.join("r-alos-restore"))
            .await?;
        mark("[r] kstate restore and ConsumerPerformance");
        if phases.on("java") {
            let java =
                run_java(&mut f, "r.kafka_streams", &r, &input, &state.join("r-java")).await?;
            restore::restore_java(&mut f, &r, &input, &java, &state.join("r-java-restore"))?;
            outputs_equal(
                &mut f,
                "r.outputs_equal_alos",
                (&r, &input),
                &app,
                false,
                &java,
            )?;
            mark("[r] Kafka Streams restore");
        }
    }
    let mut eos = None;
    if phases.on("eos") {
        let app = run_kstate(
            &mut f,
            "a.kstate_eos",
            &a,
            &input,
            "exactly_once_v2",
            &state.join("a-eos"),
        )
        .await?;
        mark("[a] kstate exactly_once_v2");
        eos = Some(app);
    }
    if phases.on("java") {
        let java = run_java(&mut f, "a.kafka_streams", &a, &input, &state.join("a-java")).await?;
        mark("[a] Kafka Streams");
        if let Some(alos) = &alos {
            outputs_equal(
                &mut f,
                "a.outputs_equal_alos",
                (&a, &input),
                alos,
                false,
                &java,
            )?;
        }
        if let Some(eos) = &eos {
            outputs_equal(
                &mut f,
                "a.outputs_equal_eos",
                (&a, &input),
                eos,
                true,
                &java,
            )?;
        }
        mark("[a] outputs compared");
    }

    if phases.on("b") {
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
        outputs_equal(
            &mut f,
            "b.outputs_equal_alos",
            (&b, &input_b),
            &alos_b,
            false,
            &java_b,
        )?;
        mark("[b] kstate and Kafka Streams");
    }
    let _ = std::fs::remove_dir_all(&state);
    if !phases.all() {
        println!(
            "BENCH_PHASES run: nothing written\n{}",
            serde_json::to_string_pretty(&f.0)?
        );
        return Ok(());
    }

    store_log_figures(&mut f);
    match store_ops_per_sec() {
        Some(ops) => f.set("store.find_sessions_put_1m_ops_per_sec", ops),
        None => notes.push("criterion's find_sessions+put at 1M was not run before this bench (scripts/bench runs it first)".to_string()),
    }
    f.set("load_average_end", report::load_average());
    notes.push("Kafka Streams runs at_least_once only (its exactly_once_v2 run would double the bench's time); throughput_ratio_eos divides kstate's exactly_once_v2 rate by Kafka Streams' at_least_once rate.".into());
    notes.push("Restores: with the default retention (gap + grace = 7 s) both engines start a restore from scratch at the first changelog record within retention of the last one, a few percent of workload 1's changelog, so a restore of it measures start-up. The restore figures therefore come from workload 1's input processed again by both engines with `retention.ms` = 1 day (workload \"r\" in results.json: every changelog record is replayed; kstate's replayed count is `a.kstate_restore.replayed`), stopped cleanly (SIGTERM), their state wiped, and restarted. Restore rates divide the changelog's record count (high minus low watermark) by the time to ready; Kafka Streams is ready when it reports RUNNING. kstate's restore and ConsumerPerformance (its fetch.nMsg.sec, group join excluded) on kstate's changelog of that run alternate over BENCH_RESTORE_ROUNDS rounds (default 3), each kstate restore on a freshly wiped state dir; the table shows the medians, results.json every round (`a.kstate_restore.rounds`, `a.consumer_perf.rounds`), and restore_fraction_of_fetch_ceiling is the median of the rounds' paired fractions (`a.restore_fraction.rounds`).".into());
    notes.push("Workload \"r\" (retention 1 day) also compares the two outputs exactly: no record there depends on flush timing (`r.outputs_equal_alos`).".into());
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
