//! Changelog topic naming and configuration, as Kafka Streams declares them for a session
//! store (`WindowedChangelogTopicConfig`), plus a helper that creates the topic for callers
//! that must (tests, tools). In the worker the broker creates it from the streams topology.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::ChangelogError;

/// Kafka Streams' `windowstore.changelog.additional.retention.ms` default: one day.
pub const ADDITIONAL_RETENTION: Duration = Duration::from_millis(86_400_000);

/// `<application.id>-<store name>-changelog`.
pub fn changelog_topic_name(application_id: &str, store_name: &str) -> String {
    format!("{application_id}-{store_name}-changelog")
}

/// The topic configs Kafka Streams sends for a session-store changelog, sorted by key:
/// `cleanup.policy=compact,delete`, `message.timestamp.type=CreateTime`, and
/// `retention.ms` = store retention + one day.
pub fn changelog_topic_configs(store_retention: Duration) -> Vec<(String, String)> {
    let retention = store_retention.saturating_add(ADDITIONAL_RETENTION);
    vec![
        ("cleanup.policy".to_string(), "compact,delete".to_string()),
        (
            "message.timestamp.type".to_string(),
            "CreateTime".to_string(),
        ),
        (
            "retention.ms".to_string(),
            retention.as_millis().to_string(),
        ),
    ]
}

/// Creates `name` with `partitions` partitions, the broker's replication factor and the
/// changelog configs plus `extra` (e.g. small segments for compaction tests). An existing
/// topic is not an error.
pub async fn create_changelog_topic<C: ClientContext + 'static>(
    admin: &AdminClient<C>,
    name: &str,
    partitions: i32,
    store_retention: Duration,
    extra: &[(&str, &str)],
) -> Result<(), ChangelogError> {
    let configs = changelog_topic_configs(store_retention);
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
    for (k, v) in &configs {
        if !extra.iter().any(|(ek, _)| ek == k) {
            topic = topic.set(k, v);
        }
    }
    for (k, v) in extra {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &opts)
        .await
        .map_err(|source| ChangelogError::Admin {
            topic: name.to_string(),
            source,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(ChangelogError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_streams() {
        assert_eq!(
            changelog_topic_name("clicks", "sessions"),
            "clicks-sessions-changelog"
        );
    }

    #[test]
    fn configs_add_a_day_of_retention() {
        let configs = changelog_topic_configs(Duration::from_millis(300_000));
        assert_eq!(
            configs,
            vec![
                ("cleanup.policy".into(), "compact,delete".into()),
                ("message.timestamp.type".into(), "CreateTime".into()),
                ("retention.ms".into(), "86700000".into()),
            ]
        );
    }
}
