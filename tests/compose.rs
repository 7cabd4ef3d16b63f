//! docker-compose.yml cannot be started on machines without a Docker engine, so its shape is
//! checked here: the pinned image, the client port, a healthcheck that waits for the streams
//! APIs, and every broker setting of `config/broker/server.properties` with the same value.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;

#[derive(Deserialize)]
struct Compose {
    services: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Deserialize)]
struct Service {
    image: String,
    ports: Vec<String>,
    environment: BTreeMap<String, String>,
    healthcheck: Healthcheck,
}

#[derive(Deserialize)]
struct Healthcheck {
    test: Vec<String>,
}

/// Settings that differ on purpose: scripts/kafka fills in loopback ports and a fresh data
/// dir, the container listens on all its interfaces and keeps data in its own volume.
const CONTAINER_SPECIFIC: [&str; 4] = [
    "listeners",
    "advertised.listeners",
    "controller.quorum.voters",
    "log.dirs",
];

fn properties() -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/broker/server.properties"
    ))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("no '=' in {l}"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn compose() -> anyhow::Result<Service> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))?;
    let mut compose: Compose = serde_yaml::from_str(&text)?;
    let kafka = compose
        .services
        .remove("kafka")
        .context("docker-compose.yml has no 'kafka' service")?;
    Ok(serde_yaml::from_value(kafka)?)
}

#[test]
fn compose_runs_the_pinned_broker_on_9092() -> anyhow::Result<()> {
    let kafka = compose()?;
    assert_eq!(kafka.image, "apache/kafka:4.4.0");
    assert!(
        kafka.ports.iter().any(|p| p == "9092:9092"),
        "ports {:?}",
        kafka.ports
    );
    let env = &kafka.environment;
    assert_eq!(env["KAFKA_PROCESS_ROLES"], "broker,controller");
    assert_eq!(
        env["KAFKA_ADVERTISED_LISTENERS"],
        "PLAINTEXT://localhost:9092"
    );
    assert!(env["KAFKA_LISTENERS"].contains("PLAINTEXT://:9092"));
    assert_eq!(
        env["CLUSTER_ID"].len(),
        22,
        "CLUSTER_ID must be a base64 UUID"
    );
    let check = kafka.healthcheck.test.join(" ");
    assert!(
        check.contains("StreamsGroupHeartbeat(88)"),
        "healthcheck: {check}"
    );
    Ok(())
}

#[test]
fn compose_carries_every_broker_setting_of_server_properties() -> anyhow::Result<()> {
    let kafka = compose()?;
    let props = properties()?;
    assert!(
        props.len() > 20,
        "server.properties parsed to {} keys",
        props.len()
    );
    for (key, value) in props {
        let var = format!("KAFKA_{}", key.to_uppercase().replace('.', "_"));
        let got = kafka
            .environment
            .get(&var)
            .with_context(|| format!("docker-compose.yml lacks {var} for {key}"))?;
        if !CONTAINER_SPECIFIC.contains(&key.as_str()) {
            assert_eq!(got, &value, "{var} differs from {key} in server.properties");
        }
    }
    Ok(())
}
