//! docker-compose.yml cannot be started on machines without a Docker engine, so its shape is
//! checked here: the pinned image, the client and secured ports, a healthcheck that waits for
//! the streams APIs, every broker setting of `config/broker/server.properties` with the same
//! value (or, where the image cannot take it as a variable, from the mounted certificates dir),
//! and the SCRAM users the image cannot create at format time.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;

#[derive(Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Deserialize)]
struct Service {
    image: String,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    healthcheck: Option<Healthcheck>,
    #[serde(default)]
    entrypoint: Vec<String>,
}

#[derive(Deserialize)]
struct Healthcheck {
    test: Vec<String>,
}

/// Settings that differ on purpose: scripts/kafka fills in loopback ports, a fresh data dir
/// and its certificates dir, the container listens on all its interfaces, keeps data in its
/// own volume, reads certificates from /etc/kafka/secrets and (its start script wants a
/// keystore password) the broker key from a PKCS12 keystore instead of a PEM one.
const CONTAINER_SPECIFIC: [&str; 7] = [
    "listeners",
    "advertised.listeners",
    "controller.quorum.voters",
    "log.dirs",
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.truststore.location",
];

/// Settings the image takes from files in the mounted certificates dir instead of variables
/// (its start script reads passwords from files and drops values containing '='), with the
/// variable that names the file.
const FROM_FILES: [(&str, &str); 4] = [
    ("ssl.key.password", "KAFKA_SSL_KEY_CREDENTIALS"),
    (
        "listener.name.sasl_ssl.plain.sasl.jaas.config",
        "KAFKA_OPTS",
    ),
    (
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config",
        "KAFKA_OPTS",
    ),
    (
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config",
        "KAFKA_OPTS",
    ),
];

/// The environment variable the apache/kafka image turns into `key`: `.` is `_`, `_` is
/// `__`, `-` is `___`, upper case.
fn variable(key: &str) -> String {
    let escaped = key.replace('_', "__").replace('-', "___").replace('.', "_");
    format!("KAFKA_{}", escaped.to_uppercase())
}

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

fn service(name: &str) -> anyhow::Result<Service> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))?;
    let mut compose: Compose = serde_yaml::from_str(&text)?;
    compose
        .services
        .remove(name)
        .with_context(|| format!("docker-compose.yml has no '{name}' service"))
}

fn compose() -> anyhow::Result<Service> {
    service("kafka")
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
        "PLAINTEXT://localhost:9092,SASL_SSL://127.0.0.1:9094,SSL://127.0.0.1:9095"
    );
    assert!(env["KAFKA_LISTENERS"].contains("PLAINTEXT://:9092"));
    assert_eq!(
        env["CLUSTER_ID"].len(),
        22,
        "CLUSTER_ID must be a base64 UUID"
    );
    for port in ["127.0.0.1:9094:9094", "127.0.0.1:9095:9095"] {
        assert!(
            kafka.ports.iter().any(|p| p == port),
            "ports {:?}",
            kafka.ports
        );
    }
    assert!(
        kafka
            .volumes
            .iter()
            .any(|v| v.starts_with("./.kafka-tls:/etc/kafka/secrets")),
        "volumes {:?}",
        kafka.volumes
    );
    let check = kafka.healthcheck.context("no healthcheck")?.test.join(" ");
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
        if let Some((_, var)) = FROM_FILES.iter().find(|(k, _)| *k == key) {
            let got = kafka.environment.get(*var).map(String::as_str);
            assert!(
                got.is_some_and(|v| !v.is_empty()),
                "{key} comes from a file named by {var}, which docker-compose.yml lacks"
            );
            continue;
        }
        let var = variable(&key);
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

#[test]
fn image_variables_follow_the_images_escaping() {
    assert_eq!(variable("log.dirs"), "KAFKA_LOG_DIRS");
    assert_eq!(
        variable("listener.name.sasl_ssl.connections.max.reauth.ms"),
        "KAFKA_LISTENER_NAME_SASL__SSL_CONNECTIONS_MAX_REAUTH_MS"
    );
    assert_eq!(
        variable("listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"),
        "KAFKA_LISTENER_NAME_SASL__SSL_SCRAM___SHA___512_SASL_JAAS_CONFIG"
    );
}

#[test]
fn compose_creates_the_scram_users_of_scripts_kafka() -> anyhow::Result<()> {
    let users = service("kafka-users")?;
    let command = users.entrypoint.join(" ");
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))?;
    let value = |name: &str| {
        script
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
            .with_context(|| format!("scripts/kafka lacks {name}"))
    };
    let (user, password) = (value("TEST_USER")?, value("TEST_PASSWORD")?);
    assert!(
        command.contains(&format!("--entity-name {user}")),
        "{command}"
    );
    for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256"] {
        assert!(
            command.contains(&format!("{mechanism}=[password={password}]")),
            "{command}"
        );
    }
    Ok(())
}
