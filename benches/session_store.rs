//! Hot-path costs of the state core: one record through find_sessions + put on the caching
//! session store (raw and through the aggregate step) with 10k and 1M live sessions, a
//! flush of 100k dirty entries, and the heap bytes per live session (counted by a global
//! allocator wrapper, printed before the benchmarks run).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) criterion runs each benchmark
//! once in a debug build: the fixtures then shrink to 10k live sessions and 1k dirty
//! entries, so the test run takes seconds.

#[path = "common/keys.rs"]
mod keys;
use keys::Keys;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use kstate::session::{
    Count, LongSerde, SessionStore, SessionWindowAggregate, SessionWindows, StringSerde,
};
use kstate::store::session_schema::session_key;
use kstate::store::{
    CacheBudget, CachingSessionStore, InMemoryBytesStore, RecordContext, StoredSession,
};

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Kafka Streams' default `statestore.cache.max.bytes`.
const CACHE_BYTES: usize = 10 * 1024 * 1024;
const GAP_MS: i64 = 5 * 60 * 1000;
const T0: i64 = 1_700_000_000_000;

fn user(i: u64) -> String {
    format!("user-{i:08}")
}

fn ctx(offset: i64, ts: i64) -> RecordContext {
    RecordContext::new("events", 0, offset, ts)
}

/// A store whose inner map holds `n` live sessions (one per user, count 1), cache empty.
fn populated(n: u64) -> CachingSessionStore {
    let mut s = CachingSessionStore::with_retention(
        "counts",
        CacheBudget::new(CACHE_BYTES),
        InMemoryBytesStore::new(),
        i64::MAX / 4,
    )
    .expect("store");
    let one = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1]);
    for i in 0..n {
        s.put_inner(session_key(user(i).as_bytes(), T0, T0), one.clone())
            .expect("put_inner");
    }
    s
}

/// Whether criterion measures (`cargo bench` passes `--bench`) rather than smoke-tests.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Live-session counts of the per-record benchmarks.
fn sizes() -> &'static [u64] {
    if measuring() {
        &[10_000, 1_000_000]
    } else {
        &[10_000]
    }
}

fn per_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_record");
    group.throughput(Throughput::Elements(1));
    for &n in sizes() {
        group.sample_size(if n > 100_000 { 20 } else { 50 });
        group.bench_with_input(BenchmarkId::new("find_sessions+put", n), &n, |b, &n| {
            let mut store = populated(n);
            let mut keys = Keys { x: 0x9E37_79B9, n };
            let names: Vec<String> = (0..n).map(user).collect();
            let mut scratch = Scratch::default();
            let mut t = T0;
            b.iter(|| {
                t += 1;
                raw_step(&mut store, &mut scratch, &names[keys.next() as usize], t);
            });
        });
        group.bench_with_input(BenchmarkId::new("aggregate_count", n), &n, |b, &n| {
            let windows = SessionWindows::with_inactivity_gap(Duration::from_millis(GAP_MS as u64))
                .expect("windows");
            let mut store = SessionStore::new(populated(n), StringSerde, LongSerde);
            let mut step = SessionWindowAggregate::new(windows, Count, Count, Count);
            let mut keys = Keys { x: 0x1234_5678, n };
            let names: Vec<String> = (0..n).map(user).collect();
            let mut t = T0;
            b.iter(|| {
                t += 1;
                let key = &names[keys.next() as usize];
                let out = step
                    .process(&mut store, Some(key), &(), ctx(t, t))
                    .expect("process");
                black_box(out);
                black_box(store.take_evicted().expect("evicted").len());
            });
        });
    }
    group.finish();
}

fn flush_100k(c: &mut Criterion) {
    let dirty: u64 = if measuring() { 100_000 } else { 1_000 };
    let mut group = c.benchmark_group("flush");
    group.sample_size(10);
    group.throughput(Throughput::Elements(dirty));
    group.bench_function("flush_with_old_100k_dirty", |b| {
        b.iter_batched(
            || {
                let mut s = CachingSessionStore::new(
                    "counts",
                    CacheBudget::new(usize::MAX),
                    InMemoryBytesStore::new(),
                );
                for i in 0..dirty {
                    let t = T0 + i as i64;
                    s.put(
                        session_key(user(i).as_bytes(), t, t),
                        Bytes::from_static(&[0; 8]),
                        ctx(t, t),
                    )
                    .expect("put");
                }
                s
            },
            |mut s| {
                let flushed = s.flush_with_old().expect("flush");
                black_box((s, flushed))
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn report_memory() {
    for &n in sizes() {
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let store = populated(n);
        let heap = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
        println!(
            "memory: {n} live sessions (key 13 B + 16 B window, value 8 B): {:.1} heap bytes/session \
             (store's own estimate {:.1})",
            heap as f64 / n as f64,
            store.approximate_bytes() as f64 / n as f64
        );
        drop(store);
    }
}

/// Heap allocations (alloc + realloc calls) per record of the aggregate step on 10k live
/// sessions, averaged over 20k records after 20k warm-up records (eviction flushes
/// included; 2k each when smoke-testing). Deterministic, unlike timings on a shared machine.
fn report_allocations() {
    let n = 10_000u64;
    let windows =
        SessionWindows::with_inactivity_gap(Duration::from_millis(GAP_MS as u64)).expect("windows");
    let mut store = SessionStore::new(populated(n), StringSerde, LongSerde);
    let mut step = SessionWindowAggregate::new(windows, Count, Count, Count);
    let mut keys = Keys { x: 0x1234_5678, n };
    let names: Vec<String> = (0..n).map(user).collect();
    let ctx0 = ctx(0, T0);
    let mut t = T0;
    let mut run = |records: usize| {
        for _ in 0..records {
            t += 1;
            let key = &names[keys.next() as usize];
            let mut c = ctx0.clone();
            c.offset = t;
            c.timestamp = t;
            black_box(
                step.process(&mut store, Some(key), &(), c)
                    .expect("process"),
            );
            black_box(store.take_evicted().expect("evicted").len());
        }
    };
    let records = if measuring() { 20_000 } else { 2_000 };
    run(records);
    let before = ALLOCS.load(Ordering::Relaxed);
    run(records);
    let per = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / records as f64;
    println!("allocations: aggregate step, {n} live sessions: {per:.2} per record");
}

/// Reused buffers of [`raw_step`]: the sessions found and the keys they are replaced by.
#[derive(Default)]
struct Scratch {
    found: Vec<StoredSession>,
    removed: Vec<Bytes>,
}

/// One record of the raw store path, as the aggregate step drives it: `find_sessions_into`
/// of a key, then one `replace` that removes the sessions found and puts the merged one.
fn raw_step(store: &mut CachingSessionStore, scratch: &mut Scratch, key: &str, t: i64) {
    thread_local! {
        static BASE: RecordContext = ctx(0, 0);
    }
    let ctx = |offset: i64, ts: i64| {
        let mut c = BASE.with(RecordContext::clone);
        c.offset = offset;
        c.timestamp = ts;
        c
    };
    store
        .find_sessions_into(key.as_bytes(), t - GAP_MS, t + GAP_MS, &mut scratch.found)
        .expect("find");
    let start = scratch.found.first().map_or(t, |s| s.start.min(t));
    scratch.removed.clear();
    scratch
        .removed
        .extend(scratch.found.drain(..).map(|s| s.key));
    store
        .replace(
            session_key(key.as_bytes(), start, t),
            Bytes::from_static(&[0; 8]),
            &scratch.removed,
            ctx(t, t),
        )
        .expect("replace");
    scratch.removed.clear();
    black_box(store.take_evicted().len());
}

/// Heap allocations per record of [`raw_step`] at the largest live-session count, after a
/// warm-up that fills the cache so that eviction flushes run in the measured window.
fn report_raw_allocations() {
    let n = *sizes().last().expect("a size");
    let mut store = populated(n);
    let mut keys = Keys { x: 0x9E37_79B9, n };
    let names: Vec<String> = (0..n).map(user).collect();
    let mut scratch = Scratch::default();
    let mut t = T0;
    let records = if measuring() { 200_000 } else { 2_000 };
    for _ in 0..records {
        t += 1;
        raw_step(&mut store, &mut scratch, &names[keys.next() as usize], t);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..records {
        t += 1;
        raw_step(&mut store, &mut scratch, &names[keys.next() as usize], t);
    }
    let per = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / records as f64;
    println!("allocations: find_sessions+put, {n} live sessions: {per:.2} per record");
}

fn main() {
    report_raw_allocations();
    report_allocations();
    report_memory();
    let mut c = Criterion::default().without_plots().configure_from_args();
    per_record(&mut c);
    flush_100k(&mut c);
    c.final_summary();
}
