//! A custom aggregation plugged into the kstate runtime: the session-window SUM of i64
//! big-endian input values per key (Java: `.aggregate(() -> 0L, (k, v, a) -> a + v,
//! (k, a, b) -> a + b, Materialized.with(Serdes.String(), Serdes.Long()))`).
//!
//! `cargo run --example session_sum -- --config config/worker.toml --set input.topic=...`
//!
//! The built-in `sum_factory` is this aggregation; the closures below show how to write one
//! from scratch with [`SessionAggregationFactory`] (any `Initializer`/`Aggregator`/`Merger`,
//! closures included, and any `Serde` for input values and aggregates).

use std::sync::Arc;

use anyhow::Context;
use kstate::runtime::{run, SessionAggregationFactory};
use kstate::session::LongSerde;
use kstate::worker::WorkerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut file = None;
    let mut sets = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => file = it.next(),
            "--set" => sets.extend(it.next()),
            other => anyhow::bail!("unexpected argument {other}"),
        }
    }
    let c = WorkerConfig::load(file.as_deref().map(std::path::Path::new), &sets)?;
    let windows = c.windows()?;
    let sum = SessionAggregationFactory::<i64, i64, _, _, _, _, _>::new(
        windows,
        LongSerde,
        LongSerde,
        || 0i64,
        |_: &String, v: &i64, agg: i64| agg + v,
        |_: &String, a: i64, b: i64| a + b,
    );
    let config = c.runtime_config().context("state.dir")?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    run(config, Arc::new(sum), shutdown).await?;
    Ok(())
}
