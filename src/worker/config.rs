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
    /// hand-back) before it is dropped (Kafka Streams' `state.cleanup.delay.ms`).
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
mod tests {
    use super::*;

    #[test]
    fn a_missing_config_file_reports_its_cause_once() {
        let path = std::env::temp_dir().join("kstate-no-such-dir/worker.toml");
        let err = WorkerConfig::load(Some(&path), &[]).expect_err("no such file");
        // What kstate-worker prints: the message, then the I/O error, once.
        let report = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(
            report,
            format!(
                "reading config file {}: No such file or directory (os error 2)",
                path.display()
            )
        );
    }

    fn load(text: &str, overrides: &[&str]) -> Result<WorkerConfig, ConfigError> {
        let path = std::env::temp_dir().join(format!(
            "kstate-config-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, text).unwrap();
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        WorkerConfig::load(Some(&path), &overrides)
    }

    #[test]
    fn shipped_worker_toml_is_the_defaults() {
        let shipped = WorkerConfig::load(
            Some(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/worker.toml"
            ))),
            &[],
        )
        .unwrap();
        assert_eq!(shipped, WorkerConfig::default());
    }

    #[test]
    fn nested_and_quoted_keys_and_overrides() {
        let c = load(
            "application.id = \"a\"\n\"input.topic\" = \"in\"\ngrace.ms = 5\n",
            &[
                "grace.ms=7",
                "kafka.security.protocol=PLAINTEXT",
                "grace.ms=9",
            ],
        )
        .unwrap();
        assert_eq!(c.application_id, "a");
        assert_eq!(c.input_topic, "in");
        assert_eq!(c.grace, Duration::from_millis(9), "the last --set wins");
        assert_eq!(c.retention, c.inactivity_gap + Duration::from_millis(9));
        assert_eq!(
            *c.kafka,
            [("security.protocol".to_string(), "PLAINTEXT".to_string())]
        );
    }

    #[test]
    fn secrets_come_from_the_environment_and_never_print() {
        let var = format!("KSTATE_TEST_PASSWORD_{}", std::process::id());
        std::env::set_var(&var, "s3cret-from-env");
        let c = load(
            &format!("\"kafka.sasl.password.env\" = \"{var}\"\n"),
            &["kafka.ssl.key.password=hunter2"],
        )
        .unwrap();
        let get = |key: &str| {
            c.kafka
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("sasl.password"), Some("s3cret-from-env"));
        assert_eq!(get("ssl.key.password"), Some("hunter2"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret-from-env") && !shown.contains("hunter2"),
            "{shown}"
        );

        let missing = format!("KSTATE_TEST_UNSET_{}", std::process::id());
        let err = load("", &[&format!("kafka.sasl.password.env={missing}")]).unwrap_err();
        assert!(
            err.to_string().contains("'kafka.sasl.password.env'"),
            "{err}"
        );
        assert!(err.to_string().contains(&missing), "{err}");
    }

    #[test]
    fn commit_interval_defaults_follow_the_guarantee() {
        let alos = load("", &[]).unwrap();
        assert_eq!(alos.commit_interval, Duration::from_secs(30));
        let eos = load("", &["processing.guarantee=exactly_once_v2"]).unwrap();
        assert_eq!(eos.commit_interval, Duration::from_millis(100));
        let set = load(
            "",
            &[
                "processing.guarantee=exactly_once_v2",
                "commit.interval.ms=250",
            ],
        );
        assert_eq!(set.unwrap().commit_interval, Duration::from_millis(250));
    }

    #[test]
    fn checkpoint_keys_default_to_kafka_streams_and_refuse_zero_and_garbage() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.checkpoint_records, 10_000);
        assert_eq!(c.checkpoint_interval, Duration::from_secs(60));
        let c = load(
            "",
            &[
                "state.checkpoint.records=500",
                "state.checkpoint.interval.ms=2500",
            ],
        )
        .unwrap();
        assert_eq!(c.checkpoint_records, 500);
        assert_eq!(c.checkpoint_interval, Duration::from_millis(2500));
        let policy = c.runtime_config().unwrap().checkpoint;
        assert_eq!(
            (policy.records, policy.interval),
            (500, Duration::from_millis(2500))
        );
        for (arg, reason) in [
            ("state.checkpoint.records=0", "positive number of records"),
            ("state.checkpoint.records=-5", "positive number of records"),
            (
                "state.checkpoint.records=many",
                "positive number of records",
            ),
            (
                "state.checkpoint.interval.ms=0",
                "positive number of milliseconds",
            ),
            (
                "state.checkpoint.interval.ms=1s",
                "non-negative number of milliseconds",
            ),
        ] {
            let err = load("", &[arg]).unwrap_err().to_string();
            let key = arg.split('=').next().unwrap();
            assert!(err.contains(&format!("'{key}'")), "{err}");
            assert!(err.contains(reason), "{arg}: {err}");
        }
    }

    #[test]
    fn store_type_defaults_to_in_memory_and_persistent_takes_a_budget() {
        assert_eq!(load("", &[]).unwrap().store_type, StoreType::InMemory);
        assert_eq!(
            load("", &["store.type=persistent"]).unwrap().store_type,
            StoreType::Persistent(PersistentOptions::default())
        );
        let c = load(
            "\"store.type\" = \"persistent\"\n\"store.persistent.memory.bytes\" = 16777216\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.store_type,
            StoreType::Persistent(PersistentOptions::with_memory_bytes(16 << 20))
        );
        // The budget alone does not switch the store type.
        let c = load("", &["store.persistent.memory.bytes=16777216"]).unwrap();
        assert_eq!(c.store_type, StoreType::InMemory);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: [(&str, &[&str], &str); 10] = [
            ("colour = \"red\"\n", &[], "colour"),
            ("", &["grace.ms=soon"], "grace.ms"),
            (
                "",
                &["processing.guarantee=exactly_once"],
                "processing.guarantee",
            ),
            ("", &["retention.ms=1"], "retention.ms"),
            ("", &["input.topic=bad topic"], "input.topic"),
            ("", &["metrics.addr=nowhere"], "metrics.addr"),
            ("", &["inactivity.gap.ms=0"], "inactivity.gap.ms"),
            ("", &["store.type=rocksdb"], "store.type"),
            (
                "",
                &["store.persistent.memory.bytes=lots"],
                "store.persistent.memory.bytes",
            ),
            (
                "",
                &["store.persistent.memory.bytes=1048576"],
                "store.persistent.memory.bytes",
            ),
        ];
        for (text, overrides, key) in cases {
            let err = load(text, overrides).unwrap_err();
            assert!(
                err.to_string().contains(&format!("'{key}'")),
                "{err} should name {key}"
            );
        }
        assert!(matches!(
            load("", &["no-equals-sign"]),
            Err(ConfigError::BadOverride { .. })
        ));
        assert!(matches!(load("= =", &[]), Err(ConfigError::Toml { .. })));
    }
}
