//! Parsing of the worker's configuration: defaults, every key, and the errors of wrong values.

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
