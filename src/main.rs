//! `kstate-worker`: the session-window count job. Reads `--config FILE` and `--set key=value`
//! overrides (see `config/worker.toml`), joins the streams group `application.id`, and counts
//! records per key and session until SIGTERM/SIGINT, when it commits, closes its tasks and
//! leaves the group. A second signal exits at once.

use std::path::PathBuf;

use clap::Parser;
use kstate::{Worker, WorkerConfig};
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

async fn signal(kind: tokio::signal::unix::SignalKind) {
    match tokio::signal::unix::signal(kind) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            warn!(error = %e, "cannot listen for a signal");
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits the process at once.
async fn shutdown_signal() {
    use tokio::signal::unix::SignalKind;
    tokio::select! {
        _ = signal(SignalKind::terminate()) => {}
        _ = signal(SignalKind::interrupt()) => {}
    }
    info!("signal received: committing, closing tasks and leaving the group (a second signal exits at once)");
    tokio::spawn(async {
        tokio::select! {
            _ = signal(SignalKind::terminate()) => {}
            _ = signal(SignalKind::interrupt()) => {}
        }
        warn!("second signal: exiting without a clean shutdown");
        std::process::exit(130);
    });
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
    Worker::builder()
        .config(config)
        .build()?
        .run(shutdown_signal())
        .await?;
    Ok(())
}
