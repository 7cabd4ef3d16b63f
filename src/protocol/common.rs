//! Structs that several streams-group schemas share with identical layouts: [`TaskIds`],
//! [`Endpoint`], [`KeyValue`], [`TaskOffset`] and [`TopicInfo`]. Heartbeat and describe use
//! the same Rust types for them, so a task list from a response can be sent back as-is.
//!
//! Owns their encoding only; it gives no meaning to subtopology ids or partitions.

use super::error::DecodeError;
use super::wire::{Reader, Writer};

/// Tasks of one subtopology: partition `p` stands for task `<subtopology_id>_<p>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskIds {
    /// The subtopology id, e.g. `"0"`.
    pub subtopology_id: String,
    /// The partitions, i.e. the task numbers within the subtopology.
    pub partitions: Vec<i32>,
}

impl TaskIds {
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.subtopology_id);
        w.array(&self.partitions, |w, p| w.i32(*p));
        w.empty_tagged_fields();
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let subtopology_id = r.string("TaskIds.SubtopologyId")?;
        let partitions = r.array("TaskIds.Partitions", |r| r.i32("TaskIds.Partitions"))?;
        r.skip_tagged_fields("TaskIds._tagged_fields")?;
        Ok(TaskIds {
            subtopology_id,
            partitions,
        })
    }
}

/// A host and port, used for Interactive Queries endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port (uint16 on the wire).
    pub port: u16,
}

impl Endpoint {
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.host);
        w.u16(self.port);
        w.empty_tagged_fields();
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let host = r.string("Endpoint.Host")?;
        let port = r.u16("Endpoint.Port")?;
        r.skip_tagged_fields("Endpoint._tagged_fields")?;
        Ok(Endpoint { host, port })
    }
}

/// A key and a value, used for topic configs and client tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl KeyValue {
    /// A key-value pair from anything string-like.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.key);
        w.string(&self.value);
        w.empty_tagged_fields();
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key = r.string("KeyValue.Key")?;
        let value = r.string("KeyValue.Value")?;
        r.skip_tagged_fields("KeyValue._tagged_fields")?;
        Ok(KeyValue { key, value })
    }
}

/// A cumulative changelog offset (or end offset) of one task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TaskOffset {
    /// The subtopology id.
    pub subtopology_id: String,
    /// The partition (task number).
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl TaskOffset {
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.subtopology_id);
        w.i32(self.partition);
        w.i64(self.offset);
        w.empty_tagged_fields();
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let subtopology_id = r.string("TaskOffset.SubtopologyId")?;
        let partition = r.i32("TaskOffset.Partition")?;
        let offset = r.i64("TaskOffset.Offset")?;
        r.skip_tagged_fields("TaskOffset._tagged_fields")?;
        Ok(TaskOffset {
            subtopology_id,
            partition,
            offset,
        })
    }
}

/// An internal topic the broker creates: a changelog or a repartition topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Partition count; 0 = derived by the broker (always 0 for changelogs).
    pub partitions: i32,
    /// Replication factor; 0 (the wire default) or -1 (what Kafka Streams sends) = the
    /// broker default.
    pub replication_factor: i16,
    /// Topic configs, sorted by key as the Java client sends them.
    pub topic_configs: Vec<KeyValue>,
}

impl TopicInfo {
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.name);
        w.i32(self.partitions);
        w.i16(self.replication_factor);
        w.array(&self.topic_configs, |w, kv| kv.write(w));
        w.empty_tagged_fields();
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name = r.string("TopicInfo.Name")?;
        let partitions = r.i32("TopicInfo.Partitions")?;
        let replication_factor = r.i16("TopicInfo.ReplicationFactor")?;
        let topic_configs = r.array("TopicInfo.TopicConfigs", KeyValue::read)?;
        r.skip_tagged_fields("TopicInfo._tagged_fields")?;
        Ok(TopicInfo {
            name,
            partitions,
            replication_factor,
            topic_configs,
        })
    }
}

/// Writes a list of strings as a compact array.
pub(crate) fn write_strings(w: &mut Writer<'_>, items: &[String]) {
    w.array(items, |w, s| w.string(s));
}

/// Reads a compact array of non-null strings.
pub(crate) fn read_strings(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Vec<String>, DecodeError> {
    r.array(field, |r| r.string(field))
}

/// Test support shared by the codec tests: fixtures and proptest strategies.
#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::*;

    use super::*;

    /// Encodes `m` at `version`, checking that `compute_size` agrees with what was written.
    pub fn encode<M: crate::protocol::WireMessage>(m: &M, version: i16) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        m.encode(&mut buf, version);
        assert_eq!(buf.len(), m.compute_size(version), "compute_size");
        buf.to_vec()
    }

    /// A task list entry.
    pub fn tasks(sub: &str, partitions: &[i32]) -> TaskIds {
        TaskIds {
            subtopology_id: sub.into(),
            partitions: partitions.to_vec(),
        }
    }

    /// Decodes a hex fixture (one line of lowercase hex, trailing newline allowed).
    pub fn hex(text: &str) -> Vec<u8> {
        let text = text.trim();
        assert!(text.len().is_multiple_of(2), "odd-length hex fixture");
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    pub fn string() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._é-]{0,12}"
    }

    pub fn opt_string() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(string())
    }

    pub fn strings() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(string(), 0..3)
    }

    pub fn task_ids() -> impl Strategy<Value = TaskIds> {
        (string(), proptest::collection::vec(any::<i32>(), 0..4)).prop_map(
            |(subtopology_id, partitions)| TaskIds {
                subtopology_id,
                partitions,
            },
        )
    }

    pub fn task_list() -> impl Strategy<Value = Vec<TaskIds>> {
        proptest::collection::vec(task_ids(), 0..3)
    }

    pub fn opt_task_list() -> impl Strategy<Value = Option<Vec<TaskIds>>> {
        proptest::option::of(task_list())
    }

    pub fn endpoint() -> impl Strategy<Value = Endpoint> {
        (string(), any::<u16>()).prop_map(|(host, port)| Endpoint { host, port })
    }

    pub fn key_value() -> impl Strategy<Value = KeyValue> {
        (string(), string()).prop_map(|(key, value)| KeyValue { key, value })
    }

    pub fn key_values() -> impl Strategy<Value = Vec<KeyValue>> {
        proptest::collection::vec(key_value(), 0..3)
    }

    pub fn task_offsets() -> impl Strategy<Value = Vec<TaskOffset>> {
        proptest::collection::vec(
            (string(), any::<i32>(), any::<i64>()).prop_map(
                |(subtopology_id, partition, offset)| TaskOffset {
                    subtopology_id,
                    partition,
                    offset,
                },
            ),
            0..3,
        )
    }

    pub fn topic_infos() -> impl Strategy<Value = Vec<TopicInfo>> {
        proptest::collection::vec(
            (string(), any::<i32>(), any::<i16>(), key_values()).prop_map(
                |(name, partitions, replication_factor, topic_configs)| TopicInfo {
                    name,
                    partitions,
                    replication_factor,
                    topic_configs,
                },
            ),
            0..2,
        )
    }
}
