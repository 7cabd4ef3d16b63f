//! The topology kstate declares on a join: what the broker needs to assign tasks and to create
//! the changelog topics.
//!
//! Owns the shape of the declaration (subtopology ids, which topic goes in which list, sort
//! order). It does not choose topic names or configs; the caller passes them in.

use crate::protocol::{KeyValue, Subtopology, TopicInfo, Topology};

/// Kafka Streams' `replication.factor` default: "use the broker's default".
pub const REPLICATION_FACTOR: i16 = -1;

/// The topology of a session-windowed count: one subtopology `"0"` reading `source_topic`,
/// with one state store logged to `changelog_topic`.
///
/// Field for field what Kafka Streams 4.4.0 declares for
/// `groupByKey().windowedBy(SessionWindows…).count(Materialized.as(store))`, because the broker
/// refuses a member whose topology differs from the group's (`INVALID_REQUEST`, "Topology
/// updates are not supported yet"): a kstate worker and a Kafka Streams instance can only
/// share (or hand over) an application id if they declare the same bytes.
///
/// The changelog is declared with Partitions 0 (the broker derives it from the source topic;
/// anything else is rejected with STREAMS_INVALID_TOPOLOGY) and ReplicationFactor -1 (Kafka
/// Streams' `replication.factor` default, which the Java client always sends; the broker
/// then uses its default replication factor). Its configs are sorted by key, as the Java
/// client sends them; the broker copies them verbatim into the CreateTopics it issues.
/// Topology epoch is 0, as in Java.
pub fn session_count_topology(
    source_topic: &str,
    changelog_topic: &str,
    changelog_configs: &[(String, String)],
) -> Topology {
    let mut topic_configs: Vec<KeyValue> = changelog_configs
        .iter()
        .map(|(key, value)| KeyValue::new(key.as_str(), value.as_str()))
        .collect();
    topic_configs.sort_by(|a, b| a.key.cmp(&b.key));
    Topology {
        epoch: 0,
        subtopologies: vec![Subtopology {
            subtopology_id: "0".to_string(),
            source_topics: vec![source_topic.to_string()],
            state_changelog_topics: vec![TopicInfo {
                name: changelog_topic.to_string(),
                partitions: 0,
                replication_factor: REPLICATION_FACTOR,
                topic_configs,
            }],
            ..Subtopology::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_subtopology_zero_with_a_derived_changelog() {
        let configs = vec![
            ("retention.ms".to_string(), "172800000".to_string()),
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
            (
                "message.timestamp.type".to_string(),
                "CreateTime".to_string(),
            ),
        ];
        let topology = session_count_topology("clicks", "app-sessions-changelog", &configs);

        assert_eq!(topology.epoch, 0);
        assert_eq!(topology.subtopologies.len(), 1);
        let sub = &topology.subtopologies[0];
        assert_eq!(sub.subtopology_id, "0");
        assert_eq!(sub.source_topics, vec!["clicks".to_string()]);
        assert!(sub.source_topic_regex.is_empty());
        assert!(sub.repartition_sink_topics.is_empty());
        assert!(sub.repartition_source_topics.is_empty());
        assert!(sub.copartition_groups.is_empty());
        assert_eq!(
            sub.state_changelog_topics,
            vec![TopicInfo {
                name: "app-sessions-changelog".into(),
                partitions: 0,
                replication_factor: -1,
                topic_configs: vec![
                    KeyValue::new("cleanup.policy", "compact,delete"),
                    KeyValue::new("message.timestamp.type", "CreateTime"),
                    KeyValue::new("retention.ms", "172800000"),
                ],
            }]
        );
    }
}
