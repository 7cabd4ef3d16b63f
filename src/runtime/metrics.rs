//! Names of the worker's metrics and the calls that record them, through the `metrics`
//! facade (the worker installs a Prometheus exporter; without one these calls are no-ops).
//! Owns metric names and labels so that dashboards see one vocabulary.

use metrics::{counter, gauge, histogram};

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

/// How many changelog records a standby task is behind its active task.
pub fn standby_lag(task: &str, records: i64) {
    gauge!("kstate_standby_lag_records", "task" => task.to_string()).set(records as f64);
}
