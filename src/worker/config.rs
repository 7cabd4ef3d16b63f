//! Worker configuration: the keys of `config/worker.toml` (Kafka Streams names where one
//! exists), their defaults, and validation. Owns turning a TOML file plus `--set key=value`
//! overrides into a checked [`WorkerConfig`]; an unknown key or a bad value is an error that
//! names the key. Does no I/O beyond reading the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::KafkaProperties;
use crate::store::{PersistentOptions, StoreType};

/// Kafka Streams' `processing.guarantee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// `at_least_once`: offsets are committed after the changelog and output are
    /// acknowledged; a crash can count records twice, never lose a session.
    AtLeastOnce,
    /// `exactly_once_v2`: changelog, output and offsets in one transaction per commit; read
    /// the output with `read_committed`.
    ExactlyOnceV2,
}

/// What to do with an input record whose key or value cannot be deserialized (Kafka Streams'
/// `default.deserialization.exception.handler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeserializationPolicy {
    /// Stop the worker, naming topic, partition and offset (`LogAndFailExceptionHandler`).
    LogAndFail,
    /// Skip the record, count it and log it (`LogAndContinueExceptionHandler`).
    LogAndContinue,
}

/// Why a configuration was refused; each names the file, key or argument at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {path} is not valid TOML")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: toml::de::Error,
    },
    /// A key that is not in `config/worker.toml` (and not `kafka.*`).
    #[error("unknown config key '{key}' (see config/worker.toml for the keys)")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A value the key does not accept.
    #[error("config key '{key}': bad value '{value}': {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What the key accepts.
        reason: String,
    },
    /// A `--set` argument without `=`.
    #[error("--set expects key=value, got '{arg}'")]
    BadOverride {
        /// The argument.
        arg: String,
    },
}

/// The settings of a worker, one field per key of `config/worker.toml` (where each key's
/// meaning and default is documented); [`Default`] is that file's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// `application.id`.
    pub application_id: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `input.topic`.
    pub input_topic: String,
    /// `output.topic`.
    pub output_topic: String,
    /// `store.name`.
    pub store_name: String,
    /// `inactivity.gap.ms`.
    pub inactivity_gap: Duration,
    /// `grace.ms`.
    pub grace: Duration,
    /// `retention.ms` (gap + grace when absent).
    pub retention: Duration,
    /// `commit.interval.ms`.
    pub commit_interval: Duration,
    /// `statestore.cache.max.bytes`.
    pub cache_max_bytes: usize,
    /// `processing.guarantee`.
    pub processing_guarantee: ProcessingGuarantee,
    /// `state.dir`.
    pub state_dir: PathBuf,
    /// `store.type`, with `store.persistent.memory.bytes` when persistent.
    pub store_type: StoreType,
    /// Where the Prometheus endpoint listens; `None` when `metrics.addr` is empty.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `deserialization.exception.handler`.
    pub deserialization_policy: DeserializationPolicy,
    /// Skip (and count) changelog records that cannot be decoded during restore instead of
    /// failing the task.
    pub restore_skip_corrupt: bool,
    /// `kafka.*` keys without the prefix, passed to every librdkafka client and read by
    /// the group connection; `Debug` redacts secrets.
    pub kafka: KafkaProperties,
    /// How long a task closed on revocation keeps its store in memory (for a cheap
    /// hand-back) before it is dropped (Kafka Streams' `state.cleanup.delay.ms`); also how
    /// often, and after how long idle, task directories of tasks not held are deleted.
    pub state_cleanup_delay: Duration,
    /// How long a retriable coordinator error is retried before it is fatal (Kafka Streams'
    /// `task.timeout.ms`).
    pub task_timeout: Duration,
    /// `state.checkpoint.records`: a persistent store is checkpointed (made durable, its
    /// `.checkpoint` written) once its changelog offset moved by this many records since the
    /// last checkpoint (Kafka Streams' fixed threshold is 10,000).
    pub checkpoint_records: u64,
    /// `state.checkpoint.interval.ms`: a persistent store whose changelog offset moved is
    /// checkpointed at least this often, however few records moved.
    pub checkpoint_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            application_id: "kstate-sessions".into(),
            bootstrap_servers: "127.0.0.1:9092".into(),
            input_topic: "clicks".into(),
            output_topic: "session-counts".into(),
            store_name: "session-counts".into(),
            inactivity_gap: Duration::from_secs(300),
            grace: Duration::from_secs(60),
            retention: Duration::from_secs(360),
            commit_interval: Duration::from_secs(30),
            cache_max_bytes: 10 * 1024 * 1024,
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            state_dir: PathBuf::from("/tmp/kstate"),
            store_type: StoreType::InMemory,
            metrics_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            deserialization_policy: DeserializationPolicy::LogAndFail,
            restore_skip_corrupt: false,
            kafka: KafkaProperties::new(),
            state_cleanup_delay: Duration::from_secs(600),
            task_timeout: Duration::from_secs(300),
            checkpoint_records: crate::runtime::CheckpointPolicy::DEFAULT.records,
            checkpoint_interval: crate::runtime::CheckpointPolicy::DEFAULT.interval,
        }
    }
}

/// Flattens nested TOML tables into dotted keys, so `application.id = "x"` and
/// `"application.id" = "x"` mean the same.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

fn bad(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn millis(key: &str, value: &str) -> Result<Duration, ConfigError> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| bad(key, value, "expected a non-negative number of milliseconds"))
}

fn positive_millis(key: &str, value: &str) -> Result<Duration, ConfigError> {
    match millis(key, value)? {
        d if d.is_zero() => Err(bad(
            key,
            value,
            "expected a positive number of milliseconds",
        )),
        d => Ok(d),
    }
}

fn non_empty(key: &str, value: &str) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        Err(bad(key, value, "must not be empty"))
    } else {
        Ok(value.to_string())
    }
}

fn topic(key: &str, value: &str) -> Result<String, ConfigError> {
    let valid = !value.is_empty()
        && value.len() <= 249
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(value.to_string())
    } else {
        Err(bad(key, value, "a topic name is 1-249 of [a-zA-Z0-9._-]"))
    }
}

impl WorkerConfig {
    /// The runtime settings of this configuration, with the process id kept in `state.dir`
    /// and a fresh member id.
    #[doc(hidden)]
    pub fn runtime_config(&self) -> std::io::Result<crate::runtime::RuntimeConfig> {
        use crate::runtime::{InputErrorPolicy, RuntimeConfig};
        Ok(RuntimeConfig {
            application_id: self.application_id.clone(),
            bootstrap: self.bootstrap_servers.clone(),
            input_topic: self.input_topic.clone(),
            output_topic: self.output_topic.clone(),
            store_name: self.store_name.clone(),
            store_type: self.store_type.clone(),
            store_retention: self.retention,
            commit_interval: self.commit_interval,
            cache_max_bytes: self.cache_max_bytes,
            exactly_once: self.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2,
            process_id: super::process_id(&self.state_dir, &self.application_id)?,
            member_id: uuid::Uuid::new_v4().to_string(),
            input_errors: match self.deserialization_policy {
                DeserializationPolicy::LogAndFail => InputErrorPolicy::Fail,
                DeserializationPolicy::LogAndContinue => InputErrorPolicy::Continue,
            },
            restore_skip_corrupt: self.restore_skip_corrupt,
            kafka: self.kafka.clone(),
            leave_timeout: Duration::from_secs(10),
            state_dir: self.state_dir.clone(),
            status: crate::runtime::StatusBoard::new(),
            state_cleanup_delay: self.state_cleanup_delay,
            task_timeout: self.task_timeout,
            checkpoint: crate::runtime::CheckpointPolicy {
                records: self.checkpoint_records,
                interval: self.checkpoint_interval,
            },
        })
    }

    /// The session windows of this configuration.
    pub fn windows(&self) -> Result<crate::session::SessionWindows, crate::session::SessionError> {
        crate::session::SessionWindows::new(self.inactivity_gap, self.grace, Some(self.retention))
    }

    /// Reads `path` (if given), then applies `overrides` (`key=value`, later ones win).
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
                path: path.to_path_buf(),
                source,
            })?;
            flatten("", &table, &mut values);
        }
        for arg in overrides {
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| ConfigError::BadOverride { arg: arg.clone() })?;
            values.insert(k.trim().to_string(), v.to_string());
        }
        Self::from_values(&values)
    }

    /// Builds a config from flat `key -> value` strings over the defaults.
    pub fn from_values(values: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let mut retention = None;
        let mut commit_interval = None;
        let mut persistent = false;
        let mut persistent_options = PersistentOptions::default();
        for (key, value) in values {
            let k = key.as_str();
            let v = value.as_str();
            match k {
                "application.id" => c.application_id = topic(k, v)?,
                "bootstrap.servers" => c.bootstrap_servers = non_empty(k, v)?,
                "input.topic" => c.input_topic = topic(k, v)?,
                "output.topic" => c.output_topic = topic(k, v)?,
                "store.name" => c.store_name = topic(k, v)?,
                "inactivity.gap.ms" => {
                    c.inactivity_gap = millis(k, v)?;
                    if c.inactivity_gap.is_zero() {
                        return Err(bad(k, v, "the inactivity gap must be positive"));
                    }
                }
                "grace.ms" => c.grace = millis(k, v)?,
                "retention.ms" => retention = Some(millis(k, v)?),
                "commit.interval.ms" => commit_interval = Some(millis(k, v)?),
                "statestore.cache.max.bytes" => {
                    c.cache_max_bytes = v
                        .parse()
                        .map_err(|_| bad(k, v, "expected a number of bytes"))?
                }
                "processing.guarantee" => {
                    c.processing_guarantee = match v {
                        "at_least_once" => ProcessingGuarantee::AtLeastOnce,
                        "exactly_once_v2" => ProcessingGuarantee::ExactlyOnceV2,
                        _ => return Err(bad(k, v, "expected at_least_once or exactly_once_v2")),
                    }
                }
                "state.dir" => c.state_dir = PathBuf::from(non_empty(k, v)?),
                "store.type" => {
                    persistent = match v {
                        "in_memory" => false,
                        "persistent" => true,
                        _ => return Err(bad(k, v, "expected in_memory or persistent")),
                    }
                }
                "store.persistent.memory.bytes" => {
                    let bytes: u64 = v
                        .parse()
                        .map_err(|_| bad(k, v, "expected a number of bytes"))?;
                    if bytes < PersistentOptions::MIN_MEMORY_BYTES {
                        return Err(bad(
                            k,
                            v,
                            format!(
                                "must be at least {} (4 MiB)",
                                PersistentOptions::MIN_MEMORY_BYTES
                            ),
                        ));
                    }
                    persistent_options = PersistentOptions::with_memory_bytes(bytes);
                }
                "metrics.addr" => {
                    c.metrics_addr = if v.is_empty() {
                        None
                    } else {
                        Some(v.parse().map_err(|_| bad(k, v, "expected host:port"))?)
                    }
                }
                "deserialization.exception.handler" => {
                    c.deserialization_policy = match v {
                        "log_and_fail" => DeserializationPolicy::LogAndFail,
                        "log_and_continue" => DeserializationPolicy::LogAndContinue,
                        _ => return Err(bad(k, v, "expected log_and_fail or log_and_continue")),
                    }
                }
                "state.cleanup.delay.ms" => c.state_cleanup_delay = millis(k, v)?,
                "task.timeout.ms" => c.task_timeout = millis(k, v)?,
                "state.checkpoint.records" => {
                    c.checkpoint_records = match v.parse::<u64>() {
                        Ok(n) if n > 0 => n,
                        _ => return Err(bad(k, v, "expected a positive number of records")),
                    }
                }
                "state.checkpoint.interval.ms" => c.checkpoint_interval = positive_millis(k, v)?,
                "restore.corrupt.records" => {
                    c.restore_skip_corrupt = match v {
                        "fail" => false,
                        "skip" => true,
                        _ => return Err(bad(k, v, "expected fail or skip")),
                    }
                }
                _ => match k.strip_prefix("kafka.") {
                    Some(rest) if rest.len() > ".env".len() && rest.ends_with(".env") => {
                        let name = &rest[..rest.len() - ".env".len()];
                        let value = std::env::var(v).map_err(|_| {
                            bad(k, v, "names an environment variable that is not set")
                        })?;
                        c.kafka.push(name, value);
                    }
                    Some(rest) if !rest.is_empty() => c.kafka.push(rest, v),
                    _ => return Err(ConfigError::UnknownKey { key: key.clone() }),
                },
            }
        }
        if persistent {
            c.store_type = StoreType::Persistent(persistent_options);
        }
        let min_retention = c.inactivity_gap + c.grace;
        c.retention = match retention {
            None => min_retention,
            Some(r) if r < min_retention => {
                return Err(bad(
                    "retention.ms",
                    &r.as_millis().to_string(),
                    format!(
                        "must be at least inactivity.gap.ms + grace.ms = {}",
                        min_retention.as_millis()
                    ),
                ))
            }
            Some(r) => r,
        };
        c.commit_interval = commit_interval.unwrap_or(match c.processing_guarantee {
            ProcessingGuarantee::AtLeastOnce => Duration::from_secs(30),
            ProcessingGuarantee::ExactlyOnceV2 => Duration::from_millis(100),
        });
        Ok(c)
    }
}

#[cfg(test)]
mod tests;
