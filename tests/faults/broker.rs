//! A broker of the test's own, started with `scripts/kafka` on free ports and a run dir of
//! its own, so that it can be bounced and paused: the shared broker is never touched.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

use anyhow::{ensure, Context};

pub struct OwnBroker {
    pub port: u16,
    run_dir: PathBuf,
    paused: bool,
}

/// The first port `P` from 9700 on (in steps of 10) with `P..P+5` free: the client and
/// controller ports and the ones scripts/kafka may derive for other listeners.
fn free_port() -> anyhow::Result<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(9700);
    loop {
        let port = NEXT.fetch_add(10, Ordering::Relaxed);
        ensure!(port < 9990, "no free ports for an own broker in 9700..9990");
        let free = (port..port + 5).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return Ok(port);
        }
    }
}

impl OwnBroker {
    /// Starts a fresh broker and waits until it answers.
    pub fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let run_dir = std::env::temp_dir().join(crate::common::unique("kstate-own-broker"));
        let broker = Self {
            port,
            run_dir,
            paused: false,
        };
        broker.script("start")?;
        Ok(broker)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker gracefully (SIGTERM, waits for the exit); its data stays.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.script("stop")
    }

    /// Starts the broker again on the data a stop kept, and waits until it answers.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.script("resume")
    }

    /// SIGSTOP: the broker process freezes, connections stay open, nothing answers.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`OwnBroker::pause`].
    pub fn unpause(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")?;
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(self.run_dir.join("broker.pid"))
            .context("reading the broker's pid file")?;
        let status = Command::new("kill")
            .args([&format!("-{signal}"), pid.trim()])
            .status()?;
        ensure!(status.success(), "kill -{signal} {} failed", pid.trim());
        Ok(())
    }

    fn script(&self, command: &str) -> anyhow::Result<()> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
        let out = Command::new(script)
            .arg(command)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_RUN_DIR", &self.run_dir)
            .output()
            .with_context(|| format!("running {script} {command}"))?;
        ensure!(
            out.status.success(),
            "scripts/kafka {command} on port {} failed: {}{}",
            self.port,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if self.paused {
            let _ = self.signal("CONT");
        }
        let _ = self.script("stop");
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
