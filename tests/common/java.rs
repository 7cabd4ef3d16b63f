//! The Java Kafka Streams reference app (`tests/java/streams-reference`, run through
//! `scripts/java-streams`) as a child process: built once, spawned with `key=value`
//! arguments, its output kept in memory, SIGTERMed (then SIGKILLed) when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

/// The running reference app. Dropping it terminates it (SIGTERM, SIGKILL after 30 s).
pub struct JavaApp {
    pub name: String,
    child: Option<Child>,
    output: Arc<Mutex<Vec<String>>>,
}

impl JavaApp {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/java-streams")
    }

    /// Builds the app (once per source hash; Maven may need a while on a fresh machine, so
    /// this has no deadline of its own beyond Maven's).
    pub fn build() -> anyhow::Result<()> {
        let status = Command::new(Self::script())
            .env("JAVA_STREAMS_BUILD_ONLY", "1")
            .stdout(Stdio::null())
            .status()
            .context("running scripts/java-streams")?;
        ensure!(
            status.success(),
            "scripts/java-streams could not build the app: {status}"
        );
        Ok(())
    }

    /// Spawns the app with `key=value` arguments (see `scripts/java-streams`).
    pub fn spawn(name: &str, args: &[(&str, String)]) -> anyhow::Result<JavaApp> {
        let mut child = Command::new(Self::script())
            .args(args.iter().map(|(k, v)| format!("{k}={v}")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning scripts/java-streams")?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let streams: [(Option<Box<dyn std::io::Read + Send>>, &str); 2] = [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                "out",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                "err",
            ),
        ];
        for (stream, which) in streams {
            let Some(stream) = stream else { continue };
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let line = format!(
                        "[java {which} {:>6} ms] {line}",
                        started.elapsed().as_millis()
                    );
                    output.lock().expect("output lock").push(line);
                }
            });
        }
        Ok(JavaApp {
            name: name.to_string(),
            child: Some(child),
            output,
        })
    }

    /// Whether any output line so far contains `needle`.
    pub fn said(&self, needle: &str) -> bool {
        self.output
            .lock()
            .expect("output lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// The app's process id (the java process: `scripts/java-streams` execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// The last lines of the app's output, for failure messages.
    pub fn tail(&self) -> String {
        let lines = self.output.lock().expect("output lock");
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Fails if the app has exited (it should run until told to stop).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().context("the Java app was stopped")?;
        if let Some(status) = child.try_wait()? {
            bail!(
                "the Java app {} exited early: {status}\n{}",
                self.name,
                self.tail()
            );
        }
        Ok(())
    }

    /// SIGTERM (the shutdown hook closes Kafka Streams), then waits up to `timeout` for the
    /// exit. Returns the exit status, `None` if it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl JavaApp {
    /// SIGKILL: Kafka Streams neither commits nor leaves the group.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for JavaApp {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(30));
    }
}
