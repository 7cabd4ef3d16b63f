//! Names of the worker's metrics and the calls that record them, through the `metrics`
//! facade (the worker installs a Prometheus exporter; without one these calls are no-ops).
//! Owns metric names and labels so that dashboards see one vocabulary, and [`describe`],
//! which registers every worker-level series up front so a scrape shows them from the start.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::changelog::RestoreProgress;
use crate::session::AggregateMetrics;
use crate::store::CacheMetrics;

pub fn records_processed(n: u64) {
    counter!("kstate_records_processed_total").increment(n);
}

pub fn records_skipped(reason: &'static str, n: u64) {
    counter!("kstate_records_skipped_total", "reason" => reason).increment(n);
}

pub fn late_records_dropped(n: u64) {
    counter!("kstate_late_records_dropped_total").increment(n);
}

/// Adds the difference between two snapshots of a task's aggregate counters.
pub fn aggregate_delta(before: AggregateMetrics, after: AggregateMetrics) {
    records_processed(after.processed - before.processed);
    late_records_dropped(after.late_dropped - before.late_dropped);
    records_skipped("null_key", after.skipped_null_key - before.skipped_null_key);
    records_skipped(
        "negative_timestamp",
        after.skipped_negative_ts - before.skipped_negative_ts,
    );
}

pub fn restore_progress(task: &str, p: &RestoreProgress) {
    let task = task.to_string();
    gauge!("kstate_restore_restored_records", "task" => task.clone()).set(p.restored as f64);
    gauge!("kstate_restore_remaining_records", "task" => task.clone())
        .set(p.total.saturating_sub(p.restored) as f64);
    gauge!("kstate_restore_records_per_second", "task" => task).set(p.records_per_sec);
}

pub fn cache(m: CacheMetrics) {
    gauge!("kstate_cache_hits").set(m.hits as f64);
    gauge!("kstate_cache_misses").set(m.misses as f64);
    gauge!("kstate_cache_evictions").set(m.evictions as f64);
    gauge!("kstate_cache_flushes", "cause" => "commit").set(m.commit_flushes as f64);
    gauge!("kstate_cache_flushes", "cause" => "eviction").set(m.eviction_flushes as f64);
}

/// Memory held by the running tasks' byte stores (in memory: their contents; persistent:
/// block caches and memtables, bounded by `store.persistent.memory.bytes` per store).
pub fn store_memory(bytes: usize) {
    gauge!("kstate_store_memory_bytes").set(bytes as f64);
}

pub fn commit_latency(seconds: f64) {
    histogram!("kstate_commit_latency_seconds").record(seconds);
    counter!("kstate_commits_total").increment(1);
}

pub fn assigned_tasks(n: usize) {
    gauge!("kstate_assigned_tasks").set(n as f64);
}

pub fn produced(kind: &'static str, n: u64) {
    counter!("kstate_records_produced_total", "topic" => kind).increment(n);
}

/// The gauges derived from the status board: standby tasks and the changelog records they
/// are behind their active tasks, active tasks not yet running, records their restores
/// still have to replay, and the input lag of the running ones.
pub fn task_board(
    standby: usize,
    standby_lag: i64,
    restoring: usize,
    pending_restore: u64,
    lag: i64,
) {
    gauge!("kstate_standby_tasks").set(standby as f64);
    gauge!("kstate_standby_lag_records").set(standby_lag as f64);
    gauge!("kstate_restoring_tasks").set(restoring as f64);
    gauge!("kstate_restore_pending_records").set(pending_restore as f64);
    gauge!("kstate_input_lag_records").set(lag as f64);
}

/// Changelog records applied by restores (all tasks).
pub fn restored(n: u64) {
    counter!("kstate_restore_records_total").increment(n);
}

/// Reasons a record is skipped, as `kstate_records_skipped_total{reason}` labels them.
pub const SKIP_REASONS: [&str; 3] = ["null_key", "negative_timestamp", "deserialization"];

/// Describes every metric and registers each worker-level series at zero, so that the
/// exporter shows them before the first event (a dashboard's queries then find a series,
/// and a test can check them). Call once, after installing the recorder.
pub fn describe() {
    describe_counter!(
        "kstate_records_processed_total",
        "Input records handed to the aggregation."
    );
    describe_counter!(
        "kstate_records_skipped_total",
        "Input records skipped, by reason."
    );
    describe_counter!(
        "kstate_late_records_dropped_total",
        "Input records dropped as later than the grace period."
    );
    describe_gauge!(
        "kstate_restore_restored_records",
        "Records restored so far, per restoring task."
    );
    describe_gauge!(
        "kstate_restore_remaining_records",
        "Records left to restore, per restoring task."
    );
    describe_gauge!(
        "kstate_restore_records_per_second",
        "Restore rate, per restoring task."
    );
    describe_counter!(
        "kstate_restore_records_total",
        "Changelog records applied by restores."
    );
    describe_gauge!(
        "kstate_restore_pending_records",
        "Changelog records the restoring tasks still have to replay."
    );
    describe_gauge!(
        "kstate_cache_hits",
        "Record cache hits of the running tasks' stores."
    );
    describe_gauge!(
        "kstate_cache_misses",
        "Record cache misses of the running tasks' stores."
    );
    describe_gauge!(
        "kstate_cache_evictions",
        "Record cache evictions of the running tasks' stores."
    );
    describe_gauge!(
        "kstate_cache_flushes",
        "Record cache flushes of the running tasks' stores, by cause: a commit (or close), \
         or the eviction of a dirty entry."
    );
    describe_gauge!(
        "kstate_store_memory_bytes",
        metrics::Unit::Bytes,
        "Memory held by the running tasks' byte stores: their contents in memory, or a persistent store's block cache and memtables."
    );
    describe_histogram!(
        "kstate_commit_latency_seconds",
        metrics::Unit::Seconds,
        "Duration of a commit cycle: flush, produce, acknowledgements, offset commit."
    );
    describe_counter!("kstate_commits_total", "Commit cycles completed.");
    describe_gauge!("kstate_assigned_tasks", "Active tasks running.");
    describe_gauge!("kstate_standby_tasks", "Standby tasks assigned.");
    describe_gauge!(
        "kstate_standby_lag_records",
        "Changelog records the standby tasks are behind their active tasks."
    );
    describe_gauge!(
        "kstate_restoring_tasks",
        "Active tasks assigned but not yet running."
    );
    describe_gauge!(
        "kstate_input_lag_records",
        "Input records behind the high watermark, all running tasks."
    );
    describe_counter!(
        "kstate_records_produced_total",
        "Records produced, by topic kind."
    );

    counter!("kstate_records_processed_total").absolute(0);
    for reason in SKIP_REASONS {
        counter!("kstate_records_skipped_total", "reason" => reason).absolute(0);
    }
    counter!("kstate_late_records_dropped_total").absolute(0);
    counter!("kstate_restore_records_total").absolute(0);
    counter!("kstate_commits_total").absolute(0);
    for kind in ["changelog", "output"] {
        counter!("kstate_records_produced_total", "topic" => kind).absolute(0);
    }
    // A histogram series exists once registered, with a zero count until the first commit.
    let _ = histogram!("kstate_commit_latency_seconds");
    cache(CacheMetrics::default());
    store_memory(0);
    assigned_tasks(0);
    task_board(0, 0, 0, 0, 0);
}
