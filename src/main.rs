//! `kstate-worker`: the session-window count job. Reads `--config FILE` and `--set key=value`
//! overrides (see `config/worker.toml`), joins the streams group `application.id`, and counts
//! records per key and session until SIGTERM/SIGINT, when it commits, closes its tasks and
//! leaves the group. A second signal exits at once.

use std::path::PathBuf;

use clap::Parser;
use kstate::{Worker, WorkerConfig};
use tokio::signal::unix::{Signal, SignalKind};
use tracing::{error, info, warn};

/// Session-window counts per key, kept in a changelog-backed store that moves between
/// workers with the Kafka streams group protocol.
#[derive(Parser, Debug)]
#[command(name = "kstate-worker", version)]
struct Args {
    /// Configuration file (TOML); every key and its default is in config/worker.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one key: --set key=value (repeatable; a later one wins).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Listens for `kind` from now on (`None` if it cannot: then it never arrives).
fn listen(kind: SignalKind) -> Option<Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(
                error = &e as &dyn std::error::Error,
                "cannot listen for a signal"
            );
            None
        }
    }
}

async fn recv(signal: &mut Option<Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Listens for SIGTERM and SIGINT from the call on (before the worker starts, so a signal
/// during start-up asks for a clean shutdown instead of killing the process); the future
/// resolves on the first one, and a second one exits the process at once.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut term = listen(SignalKind::terminate());
    let mut int = listen(SignalKind::interrupt());
    async move {
        tokio::select! {
            _ = recv(&mut term) => {}
            _ = recv(&mut int) => {}
        }
        info!("signal received: committing, closing tasks and leaving the group (a second signal exits at once)");
        tokio::spawn(async move {
            tokio::select! {
                _ = recv(&mut term) => {}
                _ = recv(&mut int) => {}
            }
            warn!("second signal: exiting without a clean shutdown");
            std::process::exit(130);
        });
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = match WorkerConfig::load(args.config.as_deref(), &args.set) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kstate-worker: {:#}", anyhow::Error::from(e));
            return std::process::ExitCode::from(2);
        }
    };
    match work(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("kstate-worker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn work(config: WorkerConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    Worker::builder()
        .config(config)
        .build()?
        .run(shutdown)
        .await?;
    Ok(())
}
