//! Talking to a worker's HTTP endpoint (`metrics.addr`): where it listens (read from its
//! log, so workers can bind port 0) and plain GETs that return the status code and body,
//! whatever the code.

use std::time::Duration;

use anyhow::Context;

use super::worker::Worker;

/// `metrics.addr` value that lets the OS pick a free port.
pub const ANY_PORT: &str = "127.0.0.1:0";

/// The address the worker's HTTP endpoint is bound to, once its log names it.
pub async fn http_addr(worker: &Worker) -> anyhow::Result<String> {
    super::wait_for(
        "the worker's HTTP endpoint",
        Duration::from_secs(60),
        || async {
            let log = worker.log();
            let line = log.lines().find(|l| l.contains("serving /metrics"))?;
            let at = line.rfind("http://")?;
            let rest = &line[at + "http://".len()..];
            rest.split_whitespace().next().map(str::to_string)
        },
    )
    .await
    .with_context(|| worker.tail())
}

/// `GET http://<addr><path>`: `(status, body)`.
pub async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut response = agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string()?;
        Ok((status, body))
    })
    .await?
}
