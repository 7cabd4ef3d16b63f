//! Replays the side-by-side bench's workloads (`benches/worker_vs_streams/load.rs`) through
//! the worker's session count, one store per input partition sharing one cache budget, with
//! a commit (a flush of every store) every `--per-commit` records, and counts the changelog
//! records written by eviction flushes and by commits. No broker: the figures are exact and
//! the same on every run, so cache policy changes can be compared record for record, and at
//! any number of records per commit interval (Kafka Streams at 24k rec/s with
//! `commit.interval.ms = 1000` commits about every 24k records).
//!
//! `cargo run --release --example cache_replay -- [--workload a|b] [--per-commit N,...]
//!  [--cache BYTES] [--runs R]`: `--runs R` hands each partition's records to its task in runs
//! of R (as librdkafka's fetches do); the default, 1, interleaves the partitions record by
//! record in input order (as Kafka Streams picks records by timestamp across partitions).

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context};
use kstate::runtime::{count_factory, ProcessorFactory, TaskProcessor};
use kstate::store::TaskBytesStore;
use kstate::{CacheBudget, InMemoryBytesStore, RecordContext, SessionWindows};

mod common {
    pub mod worker {
        /// One input record of the load generator.
        pub struct Click {
            pub key: String,
            pub timestamp: i64,
        }
    }
}

#[path = "../benches/worker_vs_streams/load.rs"]
#[allow(dead_code)]
mod load;

use load::{KeyDist, Workload};

/// A topic name as long as the bench's (`bench-a-<pid>-<millis>-<n>`).
const TOPIC: &str = "bench-a-123456-1764700000000-0";

struct Args {
    workload: Workload,
    per_commit: Vec<usize>,
    cache_bytes: usize,
    runs: usize,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Workload {
        name: "a",
        records: 1_000_000,
        keys: 50_000,
        dist: KeyDist::Uniform,
        gap_ms: 5_000,
        grace_ms: 2_000,
        max_out_of_order_ms: 10_000,
        retention_ms: None,
        partitions: 4,
    };
    let mut per_commit = vec![24_000, 100_000];
    let mut cache_bytes = 10 * 1024 * 1024;
    let mut runs = 1;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--workload" if value == "a" => {}
            "--workload" if value == "b" => {
                a = Workload {
                    name: "b",
                    records: 300_000,
                    keys: 10_000,
                    dist: KeyDist::Zipf(0.8),
                    gap_ms: 30_000,
                    grace_ms: 10_000,
                    ..a
                }
            }
            "--retention" => a.retention_ms = Some(value.parse()?),
            "--records" => a.records = value.parse()?,
            "--per-commit" => {
                per_commit = value.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--cache" => cache_bytes = value.parse()?,
            "--runs" => runs = value.parse::<usize>()?.max(1),
            _ => bail!("unexpected argument {flag} {value}"),
        }
    }
    Ok(Args {
        workload: a,
        per_commit,
        cache_bytes,
        runs,
    })
}

#[derive(Default, Debug)]
struct Counts {
    evicted_records: u64,
    committed_records: u64,
    evictions: u64,
    eviction_flushes: u64,
    hits: u64,
    misses: u64,
}

fn replay(
    w: &Workload,
    clicks: &[common::worker::Click],
    per_commit: usize,
    cache_bytes: usize,
    runs: usize,
) -> anyhow::Result<Counts> {
    let windows = SessionWindows::new(
        Duration::from_millis(w.gap_ms as u64),
        Duration::from_millis(w.grace_ms as u64),
        w.retention_ms.map(|r| Duration::from_millis(r as u64)),
    )?;
    let factory = count_factory(windows);
    let budget = CacheBudget::new(cache_bytes);
    let mut tasks: Vec<Box<dyn TaskProcessor>> = (0..w.partitions)
        .map(|_| {
            factory.create(
                "counts",
                budget.clone(),
                TaskBytesStore::InMemory(InMemoryBytesStore::new()),
            )
        })
        .collect::<Result<_, _>>()?;
    let mut queues: Vec<VecDeque<(usize, &common::worker::Click)>> =
        vec![VecDeque::new(); tasks.len()];
    for (i, c) in clicks.iter().enumerate() {
        let p = kstate::runtime::partitioner::windowed_partition(c.key.as_bytes(), w.partitions);
        queues[p as usize].push_back((i, c));
    }
    let mut counts = Counts::default();
    let mut since_commit = 0;
    let mut offsets = vec![0i64; tasks.len()];
    let commit = |tasks: &mut Vec<Box<dyn TaskProcessor>>, counts: &mut Counts| {
        for t in tasks.iter_mut() {
            counts.evicted_records += t.take_evicted()?.len() as u64;
            counts.committed_records += t.flush()?.len() as u64;
        }
        anyhow::Ok(())
    };
    // The next task: the one holding the earliest input record (interleaved), for `runs`
    // records.
    while let Some(p) = (0..queues.len())
        .filter(|&p| !queues[p].is_empty())
        .min_by_key(|&p| queues[p][0].0)
    {
        for _ in 0..runs {
            let Some((_, c)) = queues[p].pop_front() else {
                break;
            };
            let ctx = RecordContext::new(TOPIC, p as i32, offsets[p], c.timestamp);
            offsets[p] += 1;
            tasks[p].process(Some(c.key.as_bytes()), Some(b""), ctx)?;
            for t in tasks.iter_mut() {
                counts.evicted_records += t.take_evicted()?.len() as u64;
            }
            since_commit += 1;
            if since_commit == per_commit {
                commit(&mut tasks, &mut counts)?;
                since_commit = 0;
            }
        }
    }
    commit(&mut tasks, &mut counts)?;
    for t in tasks.iter_mut() {
        let m = t.store().cache().metrics();
        counts.evictions += m.evictions;
        counts.eviction_flushes += m.eviction_flushes;
        counts.hits += m.hits;
        counts.misses += m.misses;
    }
    Ok(counts)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let w = &args.workload;
    let clicks = load::generate(w, 1_700_000_000_000, if w.name == "a" { 7 } else { 11 });
    println!(
        "{} ({} B cache, runs of {})",
        w.describe(),
        args.cache_bytes,
        args.runs
    );
    println!("per_commit  changelog/input  by_eviction  by_commit  evictions  eviction_flushes  hit_ratio");
    for &n in &args.per_commit {
        let c = replay(w, &clicks, n, args.cache_bytes, args.runs)?;
        let total = c.evicted_records + c.committed_records;
        println!(
            "{n:>10}  {:>15.4}  {:>11}  {:>9}  {:>9}  {:>16}  {:>9.3}",
            total as f64 / w.records as f64,
            c.evicted_records,
            c.committed_records,
            c.evictions,
            c.eviction_flushes,
            c.hits as f64 / (c.hits + c.misses).max(1) as f64,
        );
    }
    Ok(())
}
