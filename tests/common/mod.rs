//! Shared helpers for the integration tests: where the broker is, unique topic names, and
//! a clear failure (never a skip) when no broker answers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod http;
pub mod java;
pub mod job;
pub mod worker;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// The broker the tests talk to: `KAFKA_BOOTSTRAP`, default `127.0.0.1:9092`.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// Returns the bootstrap address once a TCP connection to it succeeds, or panics with the
/// command that starts a broker. Integration tests call this first: they fail, never skip.
pub fn broker() -> String {
    let addr = bootstrap();
    let first = addr.split(',').next().unwrap_or_default().to_string();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&first)
        .ok()
        .and_then(|mut it| it.next())
        .map(|sock| std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(3)).is_ok())
        .unwrap_or(false);
    assert!(
        reachable,
        "no Kafka broker answers at {addr} (KAFKA_BOOTSTRAP). Start one with `scripts/kafka start` \
         (or `docker compose up -d`), or run the whole suite with `scripts/test`, which starts it."
    );
    addr
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A name no other test or earlier run uses: `<prefix>-<pid>-<millis>-<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{millis}-{n}", std::process::id())
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client config is valid")
}

/// Creates `name` with `partitions` partitions and the given topic configs, and waits until
/// the broker reports it.
pub async fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin = admin(bootstrap);
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &opts).await? {
        result.map_err(|(topic, err)| anyhow::anyhow!("creating topic {topic}: {err}"))?;
    }
    // CreateTopics returns once the controller has committed the topic; the broker's metadata
    // cache learns of it a moment later, and a worker started in between would not find it.
    wait_for(
        &format!("topic {name} in the broker's metadata"),
        Duration::from_secs(30),
        || async {
            let (bootstrap, topic) = (bootstrap.to_string(), name.to_string());
            let found = tokio::task::spawn_blocking(move || {
                use rdkafka::consumer::Consumer;
                let client: rdkafka::consumer::BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .create()
                    .ok()?;
                let meta = client
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))
                    .ok()?;
                meta.topics()
                    .iter()
                    .any(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
                    .then_some(())
            });
            found.await.ok().flatten()
        },
    )
    .await
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The topic's configs as the broker describes them: name → (value, source). Only the
/// entries that have a value.
pub async fn topic_configs(
    bootstrap: &str,
    topic: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, (String, rdkafka::admin::ConfigSource)>> {
    use rdkafka::admin::ResourceSpecifier;
    let admin = admin(bootstrap);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let mut results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await?;
    let resource = results
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no config resource for {topic}"))?
        .map_err(|err| anyhow::anyhow!("describing the configs of {topic}: {err}"))?;
    Ok(resource
        .entries
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, (v, e.source))))
        .collect())
}

/// The topic's partition count from the cluster metadata, `None` while it does not exist.
pub async fn partition_count(bootstrap: &str, topic: &str) -> anyhow::Result<Option<usize>> {
    let bootstrap = bootstrap.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let admin = admin(&bootstrap);
        let metadata = admin
            .inner()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        if t.error().is_some() {
            return Ok(None);
        }
        Ok(Some(t.partitions().len()))
    })
    .await?
}

/// The high watermark of partitions `0..partitions` of `topic`: partition → end offset.
pub fn high_watermarks(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    (0..partitions)
        .map(|p| {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            Ok((p, high))
        })
        .collect()
}

/// A session composite key `key ‖ end ‖ start` for messages: `key[start,end]`.
pub fn describe_session_key(key: &[u8]) -> String {
    if key.len() < 16 {
        return format!("{key:?}");
    }
    let (inner, times) = key.split_at(key.len() - 16);
    let end = i64::from_be_bytes(times[..8].try_into().unwrap_or_default());
    let start = i64::from_be_bytes(times[8..].try_into().unwrap_or_default());
    format!("{}[{start},{end}]", String::from_utf8_lossy(inner))
}
