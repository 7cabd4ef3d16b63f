//! The Grafana dashboard (`ops/grafana/kstate.json`) queries only series a worker exports:
//! a `kstate-worker` started against the real broker is scraped before it has a task, and
//! every `kstate_*` name in every panel query must be in that scrape (series that only an
//! event would create are registered when the worker starts). And the cache series count:
//! after a real run they are above zero.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::http::{get, http_addr, ANY_PORT};
use common::worker::{click_stream, produce, Worker};
use serde_json::Value;

/// Every `kstate_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("kstate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported_from_the_start() -> anyhow::Result<()> {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/ops/grafana/kstate.json"
    ))?)?;
    let mut queried = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        titles.push(panel["title"].as_str().unwrap_or_default().to_lowercase());
        for target in panel["targets"].as_array().context("targets")? {
            let expr = target["expr"].as_str().context("expr")?;
            let names = metric_names(expr);
            assert!(!names.is_empty(), "a query without a kstate metric: {expr}");
            queried.extend(names);
        }
    }
    for wanted in [
        "records processed",
        "restore progress",
        "restore rate",
        "commit latency",
        "cache hit ratio",
        "assigned and standby tasks",
        "late and skipped",
        "lag",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel for {wanted}: {titles:?}"
        );
    }

    let bootstrap = common::broker();
    let app = common::unique("dashboard");
    let (input, output) = (format!("{app}-clicks"), format!("{app}-counts"));
    common::create_topic(&bootstrap, &input, 1, &[]).await?;
    common::create_topic(&bootstrap, &output, 1, &[]).await?;
    let mut worker = Worker::start(
        "w",
        &[
            ("application.id", app.clone()),
            ("bootstrap.servers", bootstrap.clone()),
            ("input.topic", input),
            ("output.topic", output),
            (
                "state.dir",
                std::env::temp_dir().join(&app).display().to_string(),
            ),
            ("metrics.addr", ANY_PORT.to_string()),
        ],
    )?;
    let addr = http_addr(&worker).await?;
    let (code, scrape) = get(&addr, "/metrics").await?;
    assert_eq!(code, 200, "{scrape}");
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which a starting worker does not export:\n{scrape}"
    );
    println!(
        "dashboard queries {} metrics, all exported: {queried:?}",
        queried.len()
    );
    worker.check_alive()?;
    let exit = worker.terminate(Duration::from_secs(30))?;
    assert!(exit.success(), "{}", worker.tail());
    Ok(())
}

/// The cache counters reach `/metrics` once a worker has processed records: hits, misses,
/// evictions (a cache of a few entries) and flushes by cause, each above zero.
#[tokio::test]
async fn cache_metrics_count_after_a_real_run() -> anyhow::Result<()> {
    const GAP: i64 = 10_000;
    let bootstrap = common::broker();
    let app = common::unique("cache-metrics");
    let (input, output) = (format!("{app}-clicks"), format!("{app}-counts"));
    common::create_topic(&bootstrap, &input, 1, &[]).await?;
    common::create_topic(&bootstrap, &output, 1, &[]).await?;
    let clicks = click_stream(200, 6, common::now_ms() - 600_000, GAP, GAP, false, 11);
    produce(&bootstrap, &input, 1, &clicks).await?;
    let mut worker = Worker::start(
        "w",
        &[
            ("application.id", app.clone()),
            ("bootstrap.servers", bootstrap.clone()),
            ("input.topic", input),
            ("output.topic", output),
            ("inactivity.gap.ms", GAP.to_string()),
            ("grace.ms", GAP.to_string()),
            // A few dozen entries: evictions and eviction flushes happen between commits.
            ("statestore.cache.max.bytes", "8192".to_string()),
            ("commit.interval.ms", "200".to_string()),
            (
                "state.dir",
                std::env::temp_dir().join(&app).display().to_string(),
            ),
            ("metrics.addr", ANY_PORT.to_string()),
        ],
    )?;
    let addr = http_addr(&worker).await?;
    let wanted = [
        "kstate_cache_hits",
        "kstate_cache_misses",
        "kstate_cache_evictions",
        "kstate_cache_flushes{cause=\"commit\"}",
        "kstate_cache_flushes{cause=\"eviction\"}",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let values = loop {
        let (code, scrape) = get(&addr, "/metrics").await?;
        assert_eq!(code, 200, "{scrape}");
        let values: Vec<(&str, f64)> = wanted
            .iter()
            .map(|&name| (name, sample(&scrape, name).unwrap_or(0.0)))
            .collect();
        let processed = sample(&scrape, "kstate_records_processed_total").unwrap_or(0.0);
        if processed >= clicks.len() as f64 && values.iter().all(|(_, v)| *v > 0.0) {
            break values;
        }
        worker.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "after 60 s, {processed} of {} records processed, cache metrics {values:?}:\n{}",
                clicks.len(),
                worker.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("cache metrics after {} records: {values:?}", clicks.len());
    let exit = worker.terminate(Duration::from_secs(30))?;
    assert!(exit.success(), "{}", worker.tail());
    Ok(())
}

/// The value of the series `name` (with its labels, as the exporter writes them) in a
/// Prometheus scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metric_names_are_read_out_of_promql() {
    assert_eq!(
        metric_names("sum(rate(kstate_a_total[1m])) / clamp_min(kstate_b{x=\"1\"}, 1)"),
        vec!["kstate_a_total", "kstate_b"]
    );
}
