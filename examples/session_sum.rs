//! A custom aggregation run by the kstate worker: the session-window SUM of i64 big-endian
//! input values per key (Java: `.aggregate(() -> 0L, (k, v, a) -> a + v,
//! (k, a, b) -> a + b, Materialized.with(Serdes.String(), Serdes.Long()))`).
//!
//! `cargo run --example session_sum -- --config config/worker.toml --set input.topic=...`
//!
//! The settings come from the same TOML file and `--set` overrides as `kstate-worker`; the
//! aggregation is three closures and two serdes handed to [`Worker::builder`].

use kstate::{LongSerde, Worker, WorkerConfig};

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
    let config = WorkerConfig::load(file.as_deref().map(std::path::Path::new), &sets)?;
    Worker::builder()
        .config(config)
        .aggregate(
            LongSerde,
            LongSerde,
            || 0i64,
            |_key: &String, value: &i64, sum: i64| sum + value,
            |_key: &String, a: i64, b: i64| a + b,
        )
        .build()?
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
