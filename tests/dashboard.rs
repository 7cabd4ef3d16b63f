//! The Grafana dashboard (`ops/grafana/kstate.json`) queries only series a worker exports:
//! a `kstate-worker` started against the real broker is scraped before it has a task, and
//! every `kstate_*` name in every panel query must be in that scrape (series that only an
//! event would create are registered when the worker starts).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use common::http::{get, http_addr, ANY_PORT};
use common::worker::Worker;
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

#[test]
fn metric_names_are_read_out_of_promql() {
    assert_eq!(
        metric_names("sum(rate(kstate_a_total[1m])) / clamp_min(kstate_b{x=\"1\"}, 1)"),
        vec!["kstate_a_total", "kstate_b"]
    );
}
