//! Throughput of the session count job: `kstate-worker` beside Apache Kafka Streams 4.4.0
//! running the same topology on the same input and broker in the same run, with a bare
//! rdkafka consumer reading the same input as the ceiling (docs/DESIGN.md §7).
//!
//! `cargo bench --bench worker_vs_streams` (needs the broker; `BENCH_RECORDS` sets the input
//! size, default 1,000,000). Without `--bench` (as `cargo test --all-targets` runs it) it is
//! a smoke run of kstate alone on 2,000 records.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::java::JavaApp;
use common::worker::{produce, Click, Worker};
use kstate::protocol::{BrokerConnection, ConnectionConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const GAP: i64 = 30_000;
const GRACE: i64 = 10_000;

/// 10,000 users clicking in sessions, in time order per user.
fn clicks(n: usize) -> Vec<Click> {
    let users = 10_000u64;
    let start = common::now_ms() - 6 * 3_600_000;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut clock = vec![start; users as usize];
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let u = (r % users) as usize;
            clock[u] += if r.is_multiple_of(17) {
                GAP * 3
            } else {
                500 + (r >> 40) as i64 % 5_000
            };
            Click {
                key: format!("user-{u:05}"),
                timestamp: clock[u],
            }
        })
        .collect()
}

/// Waits until `group` committed every input partition up to `ends`; returns when.
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
    let partitions: Vec<(String, i32)> = (0..PARTITIONS).map(|p| (input.to_string(), p)).collect();
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

fn bare_consumer_rate(bootstrap: &str, input: &str, total: usize) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", common::unique("bench-bare"))
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(input, p, Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&tpl)?;
    let mut seen = 0;
    let mut bytes = 0usize;
    while seen < total {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("bare consumer read {seen} of {total}");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            bytes += rdkafka::Message::key(&m).map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    std::hint::black_box(bytes);
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn worker_settings(
    app: &str,
    bootstrap: &str,
    input: &str,
    state: &std::path::Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("application.id", app.to_string()),
        ("bootstrap.servers", bootstrap.to_string()),
        ("input.topic", input.to_string()),
        ("output.topic", format!("{app}-out")),
        ("store.name", "counts".into()),
        ("inactivity.gap.ms", GAP.to_string()),
        ("grace.ms", GRACE.to_string()),
        ("commit.interval.ms", "1000".into()),
        ("state.dir", state.display().to_string()),
        ("metrics.addr", String::new()),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let records: usize = if full {
        std::env::var("BENCH_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    } else {
        2_000
    };
    let bootstrap = common::broker();
    let input = common::unique("bench-clicks");
    common::create_topic(&bootstrap, &input, PARTITIONS, &[]).await?;
    let data = clicks(records);
    let t = Instant::now();
    for chunk in data.chunks(100_000) {
        produce(&bootstrap, &input, PARTITIONS, chunk).await?;
    }
    println!(
        "produced {records} clicks in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let ends: Vec<i64> = {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        (0..PARTITIONS)
            .map(|p| Ok(c.fetch_watermarks(&input, p, Duration::from_secs(10))?.1))
            .collect::<anyhow::Result<_>>()?
    };
    let state = std::env::temp_dir().join(common::unique("bench-state"));

    let app = common::unique("bench-kstate");
    common::create_topic(&bootstrap, &format!("{app}-out"), PARTITIONS, &[]).await?;
    let started = Instant::now();
    let worker = Worker::start(
        "kstate",
        &worker_settings(&app, &bootstrap, &input, &state.join("k")),
    )?;
    let done = committed_to_end(&bootstrap, &app, &input, &ends, Duration::from_secs(600))
        .await
        .with_context(|| worker.tail())?;
    let kstate_rate = records as f64 / (done - started).as_secs_f64();
    drop(worker);
    println!("kstate-worker: {kstate_rate:>10.0} records/s (start-up included)");
    if !full {
        println!("smoke run: `cargo bench --bench worker_vs_streams` compares with Kafka Streams");
        return Ok(());
    }

    let bare = bare_consumer_rate(&bootstrap, &input, records)?;
    JavaApp::build()?;
    let app = common::unique("bench-java");
    common::create_topic(&bootstrap, &format!("{app}-out"), PARTITIONS, &[]).await?;
    let started = Instant::now();
    let java = JavaApp::spawn(
        "streams",
        &[
            ("application.id", app.clone()),
            ("bootstrap.servers", bootstrap.clone()),
            ("input", input.clone()),
            ("output", format!("{app}-out")),
            ("store", "counts".into()),
            ("gap.ms", GAP.to_string()),
            ("grace.ms", GRACE.to_string()),
            ("commit.interval.ms", "1000".into()),
            ("state.dir", state.join("j").display().to_string()),
        ],
    )?;
    let done = committed_to_end(&bootstrap, &app, &input, &ends, Duration::from_secs(600))
        .await
        .with_context(|| java.tail())?;
    let java_rate = records as f64 / (done - started).as_secs_f64();
    drop(java);
    println!("Kafka Streams: {java_rate:>10.0} records/s (start-up included)");
    println!("bare consumer: {bare:>10.0} records/s (reading only: the ceiling)");
    println!(
        "kstate / Kafka Streams = {:.2}; kstate / bare consumer = {:.2}",
        kstate_rate / java_rate,
        kstate_rate / bare
    );
    Ok(())
}
