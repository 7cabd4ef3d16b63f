//! Reading both apps' output and changelog topics back and comparing them: compacted views
//! as raw bytes, output partitions and timestamps, changelog records and topic configs.

use super::*;

/// `SessionWindowedSerializer<String>`: key bytes ‖ end (i64 BE) ‖ start (i64 BE).
pub(super) fn session_key(key: &str, start: i64, end: i64) -> Vec<u8> {
    let mut out = key.as_bytes().to_vec();
    out.extend_from_slice(&end.to_be_bytes());
    out.extend_from_slice(&start.to_be_bytes());
    out
}

/// `(inner key, start, end)` of a windowed key.
pub(super) fn split_key(key: &[u8]) -> (&[u8], i64, i64) {
    let n = key.len().saturating_sub(16);
    let time = |at: usize| {
        key.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_be_bytes)
    };
    (&key[..n], time(n + 8), time(n))
}

pub(super) fn describe_value(value: &Option<Vec<u8>>) -> String {
    match value {
        None => "tombstone".into(),
        Some(v) => match <[u8; 8]>::try_from(v.as_slice()) {
            Ok(b) => i64::from_be_bytes(b).to_string(),
            Err(_) => format!("{v:?}"),
        },
    }
}

/// The last record of each key: key → (partition, value, timestamp).
pub(super) type Last = BTreeMap<Vec<u8>, (i32, Option<Vec<u8>>, i64)>;

pub(super) fn last_records(records: &[OutRecord]) -> Last {
    records
        .iter()
        .map(|(p, k, v, ts)| (k.clone(), (*p, v.clone(), *ts)))
        .collect()
}

/// The compacted view: keys whose last record is not a tombstone.
pub(super) fn live(last: &Last) -> BTreeMap<Vec<u8>, (i32, Vec<u8>, i64)> {
    last.iter()
        .filter_map(|(k, (p, v, ts))| v.clone().map(|v| (k.clone(), (*p, v, *ts))))
        .collect()
}

/// A view of `map`'s values.
pub(super) fn project<A, B>(
    map: &BTreeMap<Vec<u8>, A>,
    f: impl Fn(&A) -> B,
) -> BTreeMap<Vec<u8>, B> {
    map.iter().map(|(k, v)| (k.clone(), f(v))).collect()
}

/// How many differing keys a failure lists: `JEQ_DIFF_LIMIT`, default 10.
pub(super) fn diff_limit() -> usize {
    std::env::var("JEQ_DIFF_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Lists (up to [`diff_limit`]) keys where two views differ.
pub(super) fn diff<V: PartialEq + std::fmt::Debug>(
    what: &str,
    java: &BTreeMap<Vec<u8>, V>,
    kstate: &BTreeMap<Vec<u8>, V>,
    problems: &mut Vec<String>,
) {
    diff_as(what, ("java", java), ("kstate", kstate), problems);
}

pub(super) fn diff_as<V: PartialEq + std::fmt::Debug>(
    what: &str,
    (left, java): (&str, &BTreeMap<Vec<u8>, V>),
    (right, kstate): (&str, &BTreeMap<Vec<u8>, V>),
    problems: &mut Vec<String>,
) {
    let keys: std::collections::BTreeSet<&Vec<u8>> = java.keys().chain(kstate.keys()).collect();
    let differing: Vec<String> = keys
        .into_iter()
        .filter(|k| java.get(*k) != kstate.get(*k))
        .map(|k| {
            format!(
                "{}: {left} {:?}, {right} {:?}",
                common::describe_session_key(k),
                java.get(k),
                kstate.get(k)
            )
        })
        .collect();
    if !differing.is_empty() {
        problems.push(format!(
            "{what}: {} keys differ ({left} {} keys, {right} {}):\n    {}",
            differing.len(),
            java.len(),
            kstate.len(),
            differing[..differing.len().min(diff_limit())].join("\n    ")
        ));
    }
}

/// Everything read back from the topics of both apps.
#[derive(PartialEq)]
pub(super) struct Topics {
    pub(super) java_output: Vec<OutRecord>,
    pub(super) kstate_output: Vec<OutRecord>,
    pub(super) java_changelog: Vec<OutRecord>,
    pub(super) kstate_changelog: Vec<OutRecord>,
}

pub(super) struct Names {
    pub(super) input: String,
    pub(super) java_app: String,
    pub(super) kstate_app: String,
}

impl Names {
    pub(super) fn output(app: &str) -> String {
        format!("{app}-output")
    }
    pub(super) fn changelog(app: &str) -> String {
        format!("{app}-{STORE}-changelog")
    }
}

pub(super) fn read_topics(
    bootstrap: &str,
    names: &Names,
    read_committed: bool,
) -> anyhow::Result<Topics> {
    let topics = [
        Names::output(&names.java_app),
        Names::output(&names.kstate_app),
        Names::changelog(&names.java_app),
        Names::changelog(&names.kstate_app),
    ];
    // Four readers at once: each waits on its own fetches.
    let mut read = std::thread::scope(|scope| {
        let readers: Vec<_> = topics
            .iter()
            .map(|t| scope.spawn(move || read_topic(bootstrap, t, read_committed)))
            .collect();
        readers
            .into_iter()
            .map(|r| {
                let mut records = r
                    .join()
                    .map_err(|_| anyhow::anyhow!("a topic reader panicked"))??;
                // Offset order within a partition; the interleaving of partitions varies.
                records.sort_by_key(|(partition, ..)| *partition);
                Ok(records)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?
    .into_iter();
    let mut next = || read.next().context("four topics read");
    Ok(Topics {
        java_output: next()?,
        kstate_output: next()?,
        java_changelog: next()?,
        kstate_changelog: next()?,
    })
}

/// Every difference between the two apps' topics (and from the stated result).
pub(super) async fn compare(
    scenario: &Scenario,
    topics: &Topics,
    bootstrap: &str,
    names: &Names,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let java_out = last_records(&topics.java_output);
    let kstate_out = last_records(&topics.kstate_output);
    let java_live = live(&java_out);
    let kstate_live = live(&kstate_out);
    let count = |(_, v, _): &(i32, Vec<u8>, i64)| describe_value(&Some(v.clone()));

    // The stated result, Java first (the truth), then kstate.
    if let Some(expected) = &scenario.expected {
        let stated: BTreeMap<Vec<u8>, String> = expected
            .iter()
            .map(|((k, s, e), c)| (session_key(k, *s, *e), c.to_string()))
            .collect();
        for (who, view) in [("java", &java_live), ("kstate", &kstate_live)] {
            diff_as(
                &format!("{who} output vs the stated sessions"),
                (who, &project(view, count)),
                ("stated", &stated),
                &mut problems,
            );
        }
    }

    // 1. The compacted outputs, raw bytes.
    diff(
        "compacted output (key -> value bytes)",
        &project(&java_live, |(_, v, _)| v.clone()),
        &project(&kstate_live, |(_, v, _)| v.clone()),
        &mut problems,
    );

    // For the first differing keys, the records of their key around them on both outputs.
    let differing: Vec<&Vec<u8>> = java_live
        .keys()
        .chain(kstate_live.keys())
        .filter(|k| java_live.get(*k).map(|r| &r.1) != kstate_live.get(*k).map(|r| &r.1))
        .collect();
    for key in differing.into_iter().take(3) {
        let (inner, start, end) = split_key(key);
        for (who, records) in [
            ("java", &topics.java_output),
            ("kstate", &topics.kstate_output),
        ] {
            let history: Vec<String> = records
                .iter()
                .filter(|(_, k, _, _)| {
                    let (i, s, e) = split_key(k);
                    i == inner && e >= start - 60_000 && s <= end + 60_000
                })
                .map(|(_, k, v, _)| {
                    format!("{}={}", common::describe_session_key(k), describe_value(v))
                })
                .collect();
            problems.push(format!(
                "{who} output records of {} within 60 s: {}",
                common::describe_session_key(key),
                history.join(" ")
            ));
        }
    }

    // 2. Partition of every record; partition and timestamp of the last record per key.
    for (who, records) in [
        ("java", &topics.java_output),
        ("kstate", &topics.kstate_output),
    ] {
        let wrong: Vec<String> = records
            .iter()
            .filter(|(p, k, _, _)| {
                *p != partition_of(&k[..k.len().saturating_sub(16)], OUTPUT_PARTITIONS)
            })
            .take(5)
            .map(|(p, k, _, _)| format!("{} on {p}", common::describe_session_key(k)))
            .collect();
        if !wrong.is_empty() {
            problems.push(format!(
                "{who} output records off the windowed partition: {wrong:?}"
            ));
        }
    }
    diff(
        "last output record per live key (partition, timestamp)",
        &project(&java_live, |(p, _, ts)| (*p, *ts)),
        &project(&kstate_live, |(p, _, ts)| (*p, *ts)),
        &mut problems,
    );
    for (k, (_, _, ts)) in &java_live {
        let end = i64::from_be_bytes(k[k.len() - 16..k.len() - 8].try_into()?);
        if *ts != end {
            problems.push(format!(
                "java {} stamped {ts}, not its end",
                common::describe_session_key(k)
            ));
        }
    }
    if scenario.settings.cache_max_bytes == Some(0) {
        // Every update is forwarded: the same keys were ever emitted, and the same end in a
        // tombstone.
        let all = |(p, v, ts): &(i32, Option<Vec<u8>>, i64)| (*p, describe_value(v), *ts);
        diff(
            "last output record per key, tombstones included (cache off)",
            &project(&java_out, all),
            &project(&kstate_out, all),
            &mut problems,
        );
    }

    // 3. The changelogs: (partition, key) -> last value and its timestamp, and the topics.
    let java_cl = live(&last_records(&topics.java_changelog));
    let kstate_cl = live(&last_records(&topics.kstate_changelog));
    diff(
        "compacted changelog (key -> partition, value bytes)",
        &project(&java_cl, |(p, v, _)| (*p, v.clone())),
        &project(&kstate_cl, |(p, v, _)| (*p, v.clone())),
        &mut problems,
    );
    diff(
        "changelog: timestamp of the last record per live key",
        &project(&java_cl, |(_, _, ts)| *ts),
        &project(&kstate_cl, |(_, _, ts)| *ts),
        &mut problems,
    );
    let mut configs = Vec::new();
    for app in [&names.java_app, &names.kstate_app] {
        let topic = Names::changelog(app);
        let all = common::topic_configs(bootstrap, &topic).await?;
        let set: BTreeMap<String, String> = all
            .into_iter()
            .filter(|(k, (_, source))| {
                *source == ConfigSource::DynamicTopic
                    && ["cleanup.policy", "retention.ms", "message.timestamp.type"]
                        .contains(&k.as_str())
            })
            .map(|(k, (v, _))| (k, v))
            .collect();
        configs.push((set, common::partition_count(bootstrap, &topic).await?));
    }
    if configs[0] != configs[1] {
        problems.push(format!(
            "changelog topic configs and partitions: java {:?}, kstate {:?}",
            configs[0], configs[1]
        ));
    }
    let retention = scenario.settings.retention() + 86_400_000;
    let want = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact,delete".to_string()),
        (
            "message.timestamp.type".to_string(),
            "CreateTime".to_string(),
        ),
        ("retention.ms".to_string(), retention.to_string()),
    ]);
    if configs[0] != (want.clone(), Some(INPUT_PARTITIONS as usize)) {
        problems.push(format!(
            "Java's changelog {:?}, expected {want:?} on {INPUT_PARTITIONS} partitions",
            configs[0]
        ));
    }
    Ok(problems)
}
