//! The demo behind `scripts/demo`: a sample click stream counted per user session by two
//! `kstate-worker` processes; one is killed midway and the survivor restores its tasks from
//! the changelog and finishes the job; then the top sessions are printed.
//!
//! `demo --worker PATH [--bootstrap HOST:PORT] [--records N]`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use kstate::protocol::ConnectionConfig;
use kstate::runtime::{windowed_partition, CoordinatorOffsets, OffsetCommitter};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const GAP_MS: i64 = 30_000;
const GRACE_MS: i64 = 10_000;

#[derive(Parser)]
struct Args {
    /// Path of the kstate-worker binary.
    #[arg(long)]
    worker: String,
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Number of clicks to generate.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Users click in bursts: a session per burst, bursts closer than the gap merge. Clicks are
/// in time order, as a live stream would be, so none is late.
fn clicks(n: usize, start: i64) -> Vec<(String, i64)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |bound: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    };
    let users = 500;
    let mut clock: Vec<i64> = (0..users).map(|_| start + next(600_000) as i64).collect();
    let mut all: Vec<(String, i64)> = (0..n)
        .map(|_| {
            let u = next(users as u64) as usize;
            // Mostly a click seconds after the last one; now and then a pause that ends the
            // session.
            clock[u] += if next(20) == 0 {
                GAP_MS + next(300_000) as i64
            } else {
                1_000 + next(20_000) as i64
            };
            (format!("user-{u:03}"), clock[u])
        })
        .collect();
    all.sort_by_key(|(_, t)| *t);
    all
}

struct Worker {
    name: &'static str,
    child: Child,
    running: Arc<AtomicUsize>,
}

impl Worker {
    fn start(
        args: &Args,
        name: &'static str,
        app: &str,
        input: &str,
        output: &str,
        port: u16,
    ) -> anyhow::Result<Self> {
        let state = std::env::temp_dir().join(format!("{app}-{name}"));
        let mut child = Command::new(&args.worker)
            .args(["--config", "config/worker.toml"])
            .args(["--set", &format!("application.id={app}")])
            .args(["--set", &format!("bootstrap.servers={}", args.bootstrap)])
            .args(["--set", &format!("input.topic={input}")])
            .args(["--set", &format!("output.topic={output}")])
            .args(["--set", &format!("inactivity.gap.ms={GAP_MS}")])
            .args(["--set", &format!("grace.ms={GRACE_MS}")])
            .args(["--set", "commit.interval.ms=1000"])
            .args(["--set", &format!("state.dir={}", state.display())])
            .args(["--set", &format!("metrics.addr=127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", args.worker))?;
        let running = Arc::new(AtomicUsize::new(0));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let running = running.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("task running") {
                        running.fetch_add(1, Ordering::Relaxed);
                    }
                    let shown = [
                        "worker started",
                        "task running",
                        "task restored",
                        "restore progress",
                        "revoking",
                        "task closed",
                        "shutdown",
                        "left the streams group",
                        "ERROR",
                    ];
                    if shown.iter().any(|s| line.contains(s)) {
                        let text = line.split("kstate::").last().unwrap_or(&line);
                        println!("  [worker {name}] {text}");
                    }
                }
            });
        }
        println!(
            "started worker {name} (pid {}), /metrics, /readyz and /status at http://127.0.0.1:{port}",
            child.id()
        );
        Ok(Self {
            name,
            child,
            running,
        })
    }

    fn tasks_started(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    clicks: &[(String, i64)],
) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(clicks.len());
    for (key, ts) in clicks {
        let record = FutureRecord::to(topic)
            .key(key.as_bytes())
            .payload(b"click".as_slice())
            .partition(windowed_partition(key.as_bytes(), PARTITIONS))
            .timestamp(*ts);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("{e}"))?,
        );
    }
    for p in pending {
        p.await?.map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// The output's compacted view: session key → count.
fn top_sessions(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<(String, i64, i64, i64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if hi > lo {
            ends.insert(p, hi);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut view: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            view.insert(
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(<[u8]>::to_vec),
            );
            if ends
                .get(&m.partition())
                .is_some_and(|&e| m.offset() + 1 >= e)
            {
                ends.remove(&m.partition());
            }
        }
    }
    let mut sessions: Vec<(String, i64, i64, i64)> = view
        .into_iter()
        .filter_map(|(k, v)| {
            let v = v?;
            let n = k.len().checked_sub(16)?;
            let end = i64::from_be_bytes(k[n..n + 8].try_into().ok()?);
            let start = i64::from_be_bytes(k[n + 8..].try_into().ok()?);
            let count = i64::from_be_bytes(v.as_slice().try_into().ok()?);
            Some((
                String::from_utf8_lossy(&k[..n]).into_owned(),
                start,
                end,
                count,
            ))
        })
        .collect();
    sessions.sort_by(|a, b| b.3.cmp(&a.3).then(a.cmp(b)));
    Ok(sessions)
}

/// Polls the group's committed offsets until every partition reached `ends`.
async fn wait_committed(
    offsets: &mut CoordinatorOffsets,
    partitions: &[(String, i32)],
    ends: &[i64],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let committed = offsets.fetch(partitions).await?;
        if committed
            .iter()
            .zip(ends)
            .all(|(c, e)| c.is_some_and(|c| c >= *e))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("committed offsets {committed:?} did not reach {ends:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = format!("kstate-demo-{}", now_ms());
    let input = format!("{app}-clicks");
    let output = format!("{app}-session-counts");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()?;
    let topics = [
        NewTopic::new(&input, PARTITIONS, TopicReplication::Fixed(1)),
        NewTopic::new(&output, PARTITIONS, TopicReplication::Fixed(1)),
    ];
    for r in admin.create_topics(&topics, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    println!("== 1. topics {input} and {output} ({PARTITIONS} partitions each)");

    let all = clicks(args.records, now_ms() - 6 * 3_600_000);
    let (first, second) = all.split_at(all.len() / 2);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("linger.ms", "20")
        .create()?;
    let t = Instant::now();
    produce(&producer, &input, first).await?;
    println!(
        "== 2. produced {} clicks of 500 users ({:.0} records/s); the second half comes later",
        first.len(),
        first.len() as f64 / t.elapsed().as_secs_f64()
    );

    println!("== 3. two workers join the streams group {app}");
    let started = Instant::now();
    let mut a = Worker::start(&args, "A", &app, &input, &output, 9471)?;
    let b = Worker::start(&args, "B", &app, &input, &output, 9472)?;
    wait_until("both workers to run tasks", Duration::from_secs(60), || {
        Ok(a.tasks_started() >= 1 && b.tasks_started() >= 1)
    })?;

    let connection = ConnectionConfig::default();
    let mut offsets =
        CoordinatorOffsets::new(&app, &args.bootstrap, connection, Duration::from_secs(30));
    let partitions: Vec<(String, i32)> = (0..PARTITIONS).map(|p| (input.clone(), p)).collect();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", format!("{app}-watermarks"))
        .create()?;
    let ends = |consumer: &BaseConsumer| -> anyhow::Result<Vec<i64>> {
        (0..PARTITIONS)
            .map(|p| {
                Ok(consumer
                    .fetch_watermarks(&input, p, Duration::from_secs(10))?
                    .1)
            })
            .collect()
    };

    let half = ends(&consumer)?;
    wait_committed(&mut offsets, &partitions, &half, Duration::from_secs(120))
        .await
        .context("the workers committing the first half")?;
    let rate = first.len() as f64 / started.elapsed().as_secs_f64();
    println!("== 4. first half counted and committed: {rate:.0} records/s including start-up");

    println!(
        "== 5. killing worker {} (SIGKILL) while the second half streams in",
        a.name
    );
    let killed = Instant::now();
    a.child.kill()?;
    a.child.wait()?;
    let before = b.tasks_started();
    produce(&producer, &input, second).await?;
    wait_until(
        "the survivor to take over the lost tasks",
        Duration::from_secs(60),
        || Ok(b.tasks_started() > before),
    )?;
    println!(
        "   survivor runs the lost tasks {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let end = ends(&consumer)?;
    wait_committed(&mut offsets, &partitions, &end, Duration::from_secs(180))
        .await
        .context("the survivor committing the second half")?;
    println!(
        "== 6. all {} clicks counted; {:.1} s from the kill to the last commit",
        all.len(),
        killed.elapsed().as_secs_f64()
    );

    let sessions = top_sessions(&args.bootstrap, &output)?;
    println!("== 7. {} sessions; the top 10 by clicks:", sessions.len());
    println!("   {:<10} {:>8}  {:>10}", "user", "clicks", "minutes");
    for (user, start, end, count) in sessions.iter().take(10) {
        println!(
            "   {user:<10} {count:>8}  {:>10.1}",
            (end - start) as f64 / 60_000.0
        );
    }
    let mut b = b;
    Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()?;
    let status = b.child.wait()?;
    println!("== 8. worker {} stopped with {status}", b.name);
    Ok(())
}
