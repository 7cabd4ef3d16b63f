//! Health and status on `metrics.addr`, against the real broker: `/healthz` answers while the
//! worker runs; `/readyz` is 503 naming the tasks still restoring while a long changelog is
//! replayed and turns 200 once every active task runs; `/status` shows the member id and
//! epoch and each task with its state, restore progress and input lag.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::http::{get, http_addr, ANY_PORT};
use common::worker::{click_stream, produce, write_earlier_changelog, Worker};
use serde_json::Value;

const PARTITIONS: i32 = 2;
const GAP: i64 = 10_000;
const GRACE: i64 = 20_000;
/// Changelog records per partition: enough that the restore lasts many polls of `/readyz`.
const CHANGELOG_RECORDS: i64 = 200_000;

/// `0_0 restoring 12000/200000, 0_1 created` from a `/status` body, for the test's log.
fn restore_progress(status: &str) -> String {
    let Ok(status) = serde_json::from_str::<Value>(status) else {
        return status.to_string();
    };
    let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
    tasks
        .iter()
        .map(|t| {
            let state = t["state"].as_str().unwrap_or_default();
            match t["restore"].as_object() {
                Some(r) => format!(
                    "{} {state} {}/{}",
                    t["id"].as_str().unwrap_or_default(),
                    r["restored"],
                    r["total"]
                ),
                None => format!("{} {state}", t["id"].as_str().unwrap_or_default()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn readyz_turns_ready_when_the_restore_ends_and_status_shows_each_task() -> anyhow::Result<()>
{
    let bootstrap = common::broker();
    let app = common::unique("health");
    let input = format!("{app}-clicks");
    let output = format!("{app}-counts");
    common::create_topic(&bootstrap, &input, PARTITIONS, &[]).await?;
    common::create_topic(&bootstrap, &output, PARTITIONS, &[]).await?;

    // A changelog as an earlier owner left it: 10,000 sessions per partition, each updated
    // CHANGELOG_RECORDS / 10,000 times, keys apart from the input's.
    let changelog = format!("{app}-counts-changelog");
    write_earlier_changelog(&bootstrap, &changelog, PARTITIONS, CHANGELOG_RECORDS).await?;
    // Input for both partitions, so that each task has a position and a lag to report.
    let clicks = click_stream(20, 3, common::now_ms() - 600_000, GAP, GRACE, false, 7);
    produce(&bootstrap, &input, PARTITIONS, &clicks).await?;

    let mut worker = Worker::start(
        "w",
        &[
            ("application.id", app.clone()),
            ("bootstrap.servers", bootstrap.clone()),
            ("input.topic", input.clone()),
            ("output.topic", output.clone()),
            ("store.name", "counts".to_string()),
            ("inactivity.gap.ms", GAP.to_string()),
            ("grace.ms", GRACE.to_string()),
            ("retention.ms", "86400000".to_string()),
            ("commit.interval.ms", "300".to_string()),
            (
                "state.dir",
                std::env::temp_dir().join(&app).display().to_string(),
            ),
            ("metrics.addr", ANY_PORT.to_string()),
        ],
    )?;
    let addr = http_addr(&worker).await?;
    assert_eq!(get(&addr, "/healthz").await?.0, 200, "{}", worker.tail());

    // Poll /readyz until it is 200, keeping every change of answer.
    let started = Instant::now();
    let mut transitions: Vec<String> = Vec::new();
    let mut last = None;
    let mut named_restoring = BTreeSet::new();
    let mut next_progress = Duration::from_secs(1);
    loop {
        let (code, body) = get(&addr, "/readyz").await?;
        let json: Value = serde_json::from_str(&body).with_context(|| body.clone())?;
        if last.as_ref() != Some(&(code, body.clone())) {
            transitions.push(format!(
                "{:>8.3}s GET /readyz -> {code} {body}",
                started.elapsed().as_secs_f64()
            ));
            last = Some((code, body.clone()));
        }
        match code {
            200 => break,
            503 => {
                for t in json["restoring"].as_array().context("a restoring list")? {
                    named_restoring.insert(t.as_str().unwrap_or_default().to_string());
                }
                if started.elapsed() >= next_progress {
                    next_progress += Duration::from_secs(1);
                    transitions.push(format!(
                        "{:>8.3}s   restore progress: {}",
                        started.elapsed().as_secs_f64(),
                        restore_progress(&get(&addr, "/status").await?.1)
                    ));
                }
            }
            other => bail!("/readyz answered {other}: {body}"),
        }
        worker.check_alive()?;
        if started.elapsed() > Duration::from_secs(180) {
            bail!(
                "/readyz not 200 after 180 s:\n{}\n{}",
                transitions.join("\n"),
                worker.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in &transitions {
        println!("{line}");
    }
    let all: BTreeSet<String> = (0..PARTITIONS).map(|p| format!("0_{p}")).collect();
    assert!(
        !named_restoring.is_empty() && named_restoring.is_subset(&all),
        "a 503 named the restoring tasks before the 200: {transitions:#?}"
    );
    assert!(
        worker.log().contains("task restored"),
        "the 200 came after the restore:\n{}",
        worker.tail()
    );

    // /status: the member, and both tasks running with their whole changelog restored.
    let (code, body) = get(&addr, "/status").await?;
    assert_eq!(code, 200);
    println!("GET /status -> {body}");
    let status: Value = serde_json::from_str(&body)?;
    assert!(!status["member"]["member_id"]
        .as_str()
        .unwrap_or_default()
        .is_empty());
    assert!(
        status["member"]["epoch"].as_i64().unwrap_or_default() > 0,
        "{body}"
    );
    assert_eq!(status["member"]["in_group"], true, "{body}");
    let tasks = status["tasks"].as_array().context("tasks")?;
    let ids: BTreeSet<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, all, "{body}");
    for t in tasks {
        assert_eq!(t["kind"], "active", "{body}");
        assert_eq!(t["state"], "running", "{body}");
        assert_eq!(t["restore"]["restored"], CHANGELOG_RECORDS, "{body}");
        assert_eq!(t["restore"]["position"], t["restore"]["end"], "{body}");
    }

    // The input is consumed: each task reports a lag, and it reaches 0.
    common::wait_for(
        "every task to report lag 0",
        Duration::from_secs(60),
        || async {
            let (_, body) = get(&addr, "/status").await.ok()?;
            let status: Value = serde_json::from_str(&body).ok()?;
            let tasks = status["tasks"].as_array()?.clone();
            (tasks.len() == all.len() && tasks.iter().all(|t| t["lag"] == 0)).then_some(())
        },
    )
    .await
    .with_context(|| worker.tail())?;

    assert_eq!(get(&addr, "/healthz").await?, (200, "ok\n".to_string()));
    let exit = worker.terminate(Duration::from_secs(30))?;
    assert!(exit.success(), "{}", worker.tail());
    Ok(())
}
