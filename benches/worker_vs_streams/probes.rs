//! Measurements around the engines of the side-by-side bench: topic record counts, peak
//! RSS of a process, and the ceilings (a bare rdkafka consumer, a bare rdkafka
//! passthrough, Java `ConsumerPerformance` from the broker's jars).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::load::Workload;
use crate::{common, RUN_TIMEOUT};

/// `perf record -g` attached to a process (`BENCH_PERF=<file>` for the at_least_once run of
/// workload 1); stopped with SIGINT, so that perf writes its file.
pub struct Perf(std::process::Child);

impl Perf {
    pub fn attach(pid: u32, path: &str) -> anyhow::Result<Self> {
        let child = Command::new("perf")
            .args(["record", "-g", "-o", path, "-p", &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("running perf (apt-get install linux-perf)")?;
        Ok(Self(child))
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()?;
        self.0.wait()?;
        Ok(())
    }
}

/// `(low, high)` watermarks of every partition of `topic`.
pub fn watermarks(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    ensure!(n > 0, "topic {topic} has no partitions");
    (0..n)
        .map(|p| Ok(c.fetch_watermarks(topic, p, Duration::from_secs(10))?))
        .collect()
}

/// Records in `topic` (high minus low watermark, summed over partitions).
pub fn topic_records(bootstrap: &str, topic: &str) -> anyhow::Result<i64> {
    Ok(watermarks(bootstrap, topic)?
        .iter()
        .map(|(lo, hi)| hi - lo)
        .sum())
}

/// Peak resident set size of a live process in MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

pub fn assign_all(consumer: &BaseConsumer, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(())
}

pub fn bare_consumer(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

/// Records/s of a bare rdkafka consumer reading `input` once (touching key and value).
pub fn bare_consumer_rate(bootstrap: &str, input: &str, w: &Workload) -> anyhow::Result<f64> {
    let consumer = bare_consumer(bootstrap, &common::unique("bench-bare"))?;
    let started = Instant::now();
    assign_all(&consumer, input, w.partitions)?;
    let (mut seen, mut bytes) = (0, 0usize);
    while seen < w.records {
        ensure!(
            started.elapsed() < RUN_TIMEOUT,
            "bare consumer read {seen} of {}",
            w.records
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            bytes += m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    std::hint::black_box(bytes);
    Ok(w.records as f64 / started.elapsed().as_secs_f64())
}

/// Records/s of a bare rdkafka passthrough: each input record produced to `output` (same
/// partition), until every produced record is acknowledged.
pub fn passthrough_rate(
    bootstrap: &str,
    input: &str,
    output: &str,
    w: &Workload,
) -> anyhow::Result<f64> {
    let consumer = bare_consumer(bootstrap, &common::unique("bench-pass"))?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()?;
    let started = Instant::now();
    assign_all(&consumer, input, w.partitions)?;
    let mut seen = 0;
    while seen < w.records {
        ensure!(
            started.elapsed() < RUN_TIMEOUT,
            "passthrough moved {seen} of {}",
            w.records
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        let mut record = BaseRecord::<[u8], [u8]>::to(output).partition(m.partition());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(1));
                    record = r;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        seen += 1;
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(w.records as f64 / started.elapsed().as_secs_f64())
}

/// Java `ConsumerPerformance` (the broker's own tools jar) reading `records` of `topic`;
/// returns its fetch rate (records/s, group join excluded).
pub fn consumer_perf(bootstrap: &str, topic: &str, records: i64) -> anyhow::Result<f64> {
    let cache = std::env::var("KSTATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/kstate")
        });
    let libs = cache.join("kafka-4.4.0/libs");
    ensure!(
        libs.is_dir(),
        "{} missing: run scripts/kafka start once",
        libs.display()
    );
    let out = Command::new("java")
        .arg("-Xmx512m")
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg("org.apache.kafka.tools.ConsumerPerformance")
        .args(["--bootstrap-server", bootstrap, "--topic", topic])
        .args(["--num-records", &records.to_string(), "--timeout", "30000"])
        .output()
        .context("running ConsumerPerformance")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "ConsumerPerformance failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Header: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
    // nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.split(',').count() >= 10)
        .context("no ConsumerPerformance result line")?;
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    Ok(fields[9].parse()?)
}
