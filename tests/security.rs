//! kstate on a secured cluster, against the real broker's secured listeners (started by
//! `scripts/kafka start`, described in its `secured.properties`): the worker joins,
//! restores and commits over SASL_SSL with SCRAM-SHA-512 (the password taken from the
//! environment), over SASL_SSL with PLAIN and over SSL with a client certificate, and its
//! output equals the reference; a wrong password, an
//! untrusted CA and a wrong host name stop it at start with an error naming what failed,
//! and no log line shows a password. The group connection on its own authenticates with
//! SCRAM-SHA-256, re-authenticates before the broker's session runs out, and reports a
//! missing client certificate as a TLS failure.
//!
//! Topics are created, fed and read over PLAINTEXT; only the worker (every client of it)
//! and the connections under test use the secured listeners.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use common::worker::{
    click_stream, compacted, produce, read_topic, reference_by_partition, Worker,
};
use kstate::protocol::{BrokerConnection, ConnectionConfig, ProtocolError};

const PARTITIONS: i32 = 2;
const GAP: i64 = 10_000;
const GRACE: i64 = 20_000;
/// A password no broker knows, to search the logs for.
const WRONG_PASSWORD: &str = "wrong-Pa55word-never-logged";

type View = BTreeMap<(String, i64, i64), i64>;

/// The secured listeners of the test broker, from the `secured.properties` that
/// `scripts/kafka start` writes next to its certificates.
struct Secured {
    sasl_ssl: String,
    ssl: String,
    ca: String,
    untrusted_ca: String,
    client_cert: String,
    client_key: String,
    username: String,
    password: String,
}

impl Secured {
    /// `KSTATE_SECURED`, else `<KSTATE_CACHE or ~/.cache/kstate>/run/<port>/tls/
    /// secured.properties` for the port of `KAFKA_BOOTSTRAP` (scripts/kafka), else
    /// `.kafka-tls/secured.properties` (docker compose). Panics with the command that starts
    /// the secured listeners when none exists or nothing answers there.
    fn find() -> Self {
        let bootstrap = common::broker();
        let path = std::env::var_os("KSTATE_SECURED")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let cache = std::env::var_os("KSTATE_CACHE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                            .join(".cache/kstate")
                    });
                let first = bootstrap.split(',').next().unwrap_or_default();
                let port = first.rsplit(':').next().unwrap_or_default();
                let run_dir = cache.join("run").join(port).join("tls/secured.properties");
                let compose =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".kafka-tls/secured.properties");
                if !run_dir.exists() && compose.exists() {
                    compose
                } else {
                    run_dir
                }
            });
        let how = format!(
            "the secured listeners of the broker at {bootstrap} are not described at {}: start \
             the broker with this version of `scripts/kafka start` (an older broker: \
             `scripts/kafka stop && scripts/kafka start`; KAFKA_PORT and KSTATE_CACHE as for \
             that broker), or point KSTATE_SECURED at its tls/secured.properties",
            path.display()
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{how} ({e})"));
        let props: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| {
            props
                .get(k)
                .unwrap_or_else(|| panic!("{} lacks {k}; {how}", path.display()))
                .to_string()
        };
        let secured = Secured {
            sasl_ssl: get("sasl_ssl.bootstrap"),
            ssl: get("ssl.bootstrap"),
            ca: get("ca.location"),
            untrusted_ca: get("untrusted.ca.location"),
            client_cert: get("client.certificate.location"),
            client_key: get("client.key.location"),
            username: get("username"),
            password: get("password"),
        };
        for addr in [&secured.sasl_ssl, &secured.ssl] {
            let answers = addr
                .parse()
                .ok()
                .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)).ok())
                .is_some();
            assert!(answers, "nothing answers at {addr}; {how}");
        }
        secured
    }

    /// Worker settings for SASL_SSL with `mechanism` and `password`.
    fn sasl(&self, mechanism: &str, password: &str) -> Vec<(&'static str, String)> {
        let mut settings = self.sasl_without_password(mechanism);
        settings.push(("kafka.sasl.password", password.into()));
        settings
    }

    /// Worker settings for SASL_SSL with `mechanism`, the password to be given otherwise.
    fn sasl_without_password(&self, mechanism: &str) -> Vec<(&'static str, String)> {
        vec![
            ("bootstrap.servers", self.sasl_ssl.clone()),
            ("kafka.security.protocol", "SASL_SSL".into()),
            ("kafka.sasl.mechanism", mechanism.into()),
            ("kafka.sasl.username", self.username.clone()),
            ("kafka.ssl.ca.location", self.ca.clone()),
        ]
    }

    /// Worker settings for SSL with the client certificate.
    fn mutual_tls(&self) -> Vec<(&'static str, String)> {
        vec![
            ("bootstrap.servers", self.ssl.clone()),
            ("kafka.security.protocol", "SSL".into()),
            ("kafka.ssl.ca.location", self.ca.clone()),
            ("kafka.ssl.certificate.location", self.client_cert.clone()),
            ("kafka.ssl.key.location", self.client_key.clone()),
        ]
    }

    fn connection(&self, props: &[(&str, &str)]) -> ConnectionConfig {
        ConnectionConfig::from_properties(props.iter().copied()).expect("valid properties")
    }
}

/// Asserts that no line of the worker's log shows either password.
fn assert_no_password(worker: &Worker, secured: &Secured) {
    let log = worker.log();
    for secret in [secured.password.as_str(), WRONG_PASSWORD] {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("{}'s log shows a password: {line}", worker.name);
        }
    }
}

/// Input and output topics (over PLAINTEXT) and a worker on the secured listener.
struct Job {
    plaintext: String,
    app: String,
    input: String,
    output: String,
    state: PathBuf,
}

impl Job {
    async fn new(name: &str) -> anyhow::Result<Self> {
        let plaintext = common::broker();
        let app = common::unique(name);
        let input = format!("{app}-clicks");
        let output = format!("{app}-counts");
        common::create_topic(&plaintext, &input, PARTITIONS, &[]).await?;
        common::create_topic(&plaintext, &output, PARTITIONS, &[]).await?;
        let state = std::env::temp_dir().join(&app);
        Ok(Job {
            plaintext,
            app,
            input,
            output,
            state,
        })
    }

    fn worker(
        &self,
        name: &str,
        security: &[(&'static str, String)],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Worker> {
        let mut settings = vec![
            ("application.id", self.app.clone()),
            ("input.topic", self.input.clone()),
            ("output.topic", self.output.clone()),
            ("store.name", "counts".into()),
            ("inactivity.gap.ms", GAP.to_string()),
            ("grace.ms", GRACE.to_string()),
            ("retention.ms", "3600000".into()),
            ("processing.guarantee", "exactly_once_v2".into()),
            ("state.dir", self.state.display().to_string()),
            ("metrics.addr", String::new()),
        ];
        settings.extend(security.iter().cloned());
        Worker::start_with_env(name, &settings, env)
    }

    async fn wait_view(&self, what: &str, worker: &Worker, expected: &View) -> anyhow::Result<()> {
        let result = common::wait_for(what, Duration::from_secs(90), || async {
            let records = read_topic(&self.plaintext, &self.output, true).ok()?;
            (compacted(&records) == *expected).then_some(())
        })
        .await;
        result.with_context(|| worker.tail())
    }
}

/// Two runs of the worker on a secured listener: the first joins, counts the first half and
/// commits; it is killed, and the second restores the changelog (over the same listener)
/// and counts the rest. Exactly once, so the output equals the reference exactly. `env` is
/// given to both worker processes.
async fn joins_restores_and_commits(
    name: &str,
    security: Vec<(&'static str, String)>,
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    let secured = Secured::find();
    let job = Job::new(name).await?;
    let clicks = click_stream(20, 12, common::now_ms() - 3_600_000, GAP, GRACE, false, 17);
    let (first, second) = clicks.split_at(clicks.len() / 2);
    produce(&job.plaintext, &job.input, PARTITIONS, first).await?;
    let mut w = job.worker("first", &security, env)?;
    let reference = reference_by_partition(first, PARTITIONS, GAP, GRACE);
    job.wait_view("the first half over the secured listener", &w, &reference)
        .await?;
    w.kill()?;
    assert_no_password(&w, &secured);

    produce(&job.plaintext, &job.input, PARTITIONS, second).await?;
    let w = job.worker("second", &security, env)?;
    let reference = reference_by_partition(&clicks, PARTITIONS, GAP, GRACE);
    job.wait_view("both halves, each counted once", &w, &reference)
        .await?;
    let log = w.log();
    let restored: u64 = log
        .lines()
        .filter(|l| l.contains("task restored"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("restored="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum();
    ensure!(
        restored > 0,
        "the second worker restored nothing:\n{}",
        w.tail()
    );
    if let Some((_, mechanism)) = security.iter().find(|(k, _)| *k == "kafka.sasl.mechanism") {
        let line = format!("mechanism={mechanism}");
        ensure!(
            log.lines()
                .any(|l| l.contains("SASL authenticated") && l.contains(&line)),
            "the group connection did not authenticate with {mechanism}:\n{}",
            w.tail()
        );
    }
    assert_no_password(&w, &secured);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_runs_over_sasl_ssl_with_scram_sha_512() -> anyhow::Result<()> {
    let secured = Secured::find();
    // The password from the environment, as config/worker.toml and README show it.
    let mut security = secured.sasl_without_password("SCRAM-SHA-512");
    security.push((
        "kafka.sasl.password.env",
        "KSTATE_TEST_KAFKA_PASSWORD".into(),
    ));
    let env = [("KSTATE_TEST_KAFKA_PASSWORD", secured.password.as_str())];
    joins_restores_and_commits("sec-scram", security, &env).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_runs_over_sasl_ssl_with_plain() -> anyhow::Result<()> {
    let secured = Secured::find();
    let security = secured.sasl("PLAIN", &secured.password);
    joins_restores_and_commits("sec-plain", security, &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_runs_over_ssl_with_a_client_certificate() -> anyhow::Result<()> {
    let secured = Secured::find();
    joins_restores_and_commits("sec-mtls", secured.mutual_tls(), &[]).await
}

/// Starts a worker that must stop at start; returns its log once it exited with failure.
async fn stops_at_start(
    name: &str,
    security: Vec<(&'static str, String)>,
) -> anyhow::Result<Worker> {
    let job = Job::new(name).await?;
    let mut w = job.worker(name, &security, &[])?;
    let status = w.wait(Duration::from_secs(30))?;
    ensure!(
        !status.success(),
        "{name} exited with success:\n{}",
        w.tail()
    );
    Ok(w)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_stops_the_worker_naming_the_failure() -> anyhow::Result<()> {
    let secured = Secured::find();
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let w = stops_at_start("sec-wrong-pw", secured.sasl(mechanism, WRONG_PASSWORD)).await?;
        let expected = format!("SASL {mechanism} authentication failed");
        assert!(
            w.log().contains(&expected),
            "no '{expected}' in:\n{}",
            w.tail()
        );
        assert_no_password(&w, &secured);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_ca_stops_the_worker_naming_the_failure() -> anyhow::Result<()> {
    let secured = Secured::find();
    let mut security = secured.sasl("SCRAM-SHA-512", &secured.password);
    security.push(("kafka.ssl.ca.location", secured.untrusted_ca.clone()));
    let w = stops_at_start("sec-untrusted", security).await?;
    let log = w.log();
    assert!(
        log.contains("TLS handshake failed") && log.contains("UnknownIssuer"),
        "{}",
        w.tail()
    );
    assert_no_password(&w, &secured);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_host_name_stops_the_worker_naming_the_failure() -> anyhow::Result<()> {
    let secured = Secured::find();
    // The broker's certificate names 127.0.0.1 only; "localhost" reaches the same listener.
    let port = secured.sasl_ssl.rsplit(':').next().unwrap_or_default();
    let mut security = secured.sasl("SCRAM-SHA-512", &secured.password);
    security.push(("bootstrap.servers", format!("localhost:{port}")));
    let w = stops_at_start("sec-hostname", security).await?;
    let log = w.log();
    assert!(
        log.contains("TLS handshake failed") && log.contains("not valid for name"),
        "{}",
        w.tail()
    );
    assert_no_password(&w, &secured);
    Ok(())
}

#[tokio::test]
async fn the_group_connection_reauthenticates_before_its_session_expires() -> anyhow::Result<()> {
    let secured = Secured::find();
    let config = secured.connection(&[
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", &secured.username),
        ("sasl.password", &secured.password),
        ("ssl.ca.location", &secured.ca),
    ]);
    let mut conn = BrokerConnection::connect(secured.sasl_ssl.clone(), config).await?;
    // The listener's sessions last 5 s (connections.max.reauth.ms): requests keep flowing
    // on the same socket past that only if the connection re-authenticates.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while conn.reauthentications() < 2 {
        ensure!(
            std::time::Instant::now() < deadline,
            "no second re-authentication within 30 s (done: {})",
            conn.reauthentications()
        );
        // Metadata of no topic: cheap, and answered by any broker (a coordinator lookup
        // could meet a fresh broker still creating its offsets topic).
        conn.metadata(Some(&[]))
            .await
            .context("a request on the re-authenticated socket")?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    conn.metadata(Some(&[])).await?;
    assert!(conn.is_connected());
    Ok(())
}

#[tokio::test]
async fn the_group_connection_names_tls_failures() -> anyhow::Result<()> {
    let secured = Secured::find();
    // No client certificate on a listener that requires one.
    let no_cert = secured.connection(&[
        ("security.protocol", "SSL"),
        ("ssl.ca.location", &secured.ca),
    ]);
    let err = BrokerConnection::connect(secured.ssl.clone(), no_cert)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProtocolError::Tls { .. }),
        "expected a TLS failure, got {err:?}"
    );
    // Host name verification off: "localhost" is accepted with the right CA.
    let port = secured.ssl.rsplit(':').next().unwrap_or_default();
    let unchecked = secured.connection(&[
        ("security.protocol", "SSL"),
        ("ssl.ca.location", &secured.ca),
        ("ssl.certificate.location", &secured.client_cert),
        ("ssl.key.location", &secured.client_key),
        ("ssl.endpoint.identification.algorithm", "none"),
    ]);
    BrokerConnection::connect(format!("localhost:{port}"), unchecked).await?;
    Ok(())
}
