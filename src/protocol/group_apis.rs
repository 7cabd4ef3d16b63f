//! Typed calls on a [`BrokerConnection`], one per API kstate sends: StreamsGroupHeartbeat,
//! StreamsGroupDescribe (hand-written codecs), and FindCoordinator, OffsetCommit,
//! OffsetFetch and Metadata (`kafka-protocol`'s generated messages).
//!
//! Each call negotiates its version, sends one request and returns the broker's answer in
//! plain types. Per-partition error codes are returned, not judged; a top-level error code
//! of an API whose answer has no other use becomes [`ProtocolError::Broker`]. Knows nothing
//! of tasks or member states.

use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{GroupId, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::connection::BrokerConnection;
use super::error::ProtocolError;
use super::streams_group_describe::{StreamsGroupDescribeRequest, StreamsGroupDescribeResponse};
use super::streams_group_heartbeat::{StreamsGroupHeartbeatRequest, StreamsGroupHeartbeatResponse};
use super::wire::WireMessage;

const FIND_COORDINATOR_KEY: i16 = 10;
const FIND_COORDINATOR_VERSIONS: (i16, i16) = (1, 6);
const OFFSET_COMMIT_KEY: i16 = 8;
/// Streams groups reject OffsetCommit below v9 from their members ("OffsetCommit version 9
/// or above must be used by members using the streams group protocol").
const OFFSET_COMMIT_VERSIONS: (i16, i16) = (9, 9);
const OFFSET_FETCH_KEY: i16 = 9;
/// v8 is the first with the batched group layout; v9 adds member id and epoch.
const OFFSET_FETCH_VERSIONS: (i16, i16) = (8, 9);
const METADATA_KEY: i16 = 3;
const METADATA_VERSIONS: (i16, i16) = (1, 12);

/// The coordinator of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    /// Broker node id.
    pub node_id: i32,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i32,
}

impl Coordinator {
    /// `host:port`, ready for [`BrokerConnection::connect`].
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset to consume.
    pub offset: i64,
    /// Leader epoch of the last consumed record, -1 if unknown.
    pub leader_epoch: i32,
    /// Commit metadata.
    pub metadata: Option<String>,
}

/// The result of committing one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCommitResult {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Kafka error code, 0 on success.
    pub error_code: i16,
}

/// A committed offset read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset, -1 if none.
    pub offset: i64,
    /// Leader epoch, -1 if unknown.
    pub leader_epoch: i32,
    /// Commit metadata.
    pub metadata: Option<String>,
    /// Kafka error code, 0 on success.
    pub error_code: i16,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

impl BrokerConnection {
    /// The StreamsGroupHeartbeat version this broker and kstate agree on (0 or 1). Brokers
    /// answering v0 (4.2, 4.3) reject `InstanceId` and non-null `TaskOffsets` /
    /// `TaskEndOffsets`; the caller leaves them out.
    pub fn heartbeat_version(&self) -> Result<i16, ProtocolError> {
        self.negotiate(
            StreamsGroupHeartbeatRequest::API_KEY,
            StreamsGroupHeartbeatRequest::MIN_VERSION,
            StreamsGroupHeartbeatRequest::MAX_VERSION,
        )
    }

    /// Sends a StreamsGroupHeartbeat at the negotiated version. The response's error code is
    /// returned as is, for the membership layer to act on.
    pub async fn heartbeat(
        &mut self,
        request: &StreamsGroupHeartbeatRequest,
    ) -> Result<StreamsGroupHeartbeatResponse, ProtocolError> {
        let (_, response) = self.send_wire(request).await?;
        Ok(response)
    }

    /// Describes streams groups (v1 brokers: without the topology description).
    pub async fn describe(
        &mut self,
        group_ids: &[String],
        include_authorized_operations: bool,
    ) -> Result<StreamsGroupDescribeResponse, ProtocolError> {
        let request = StreamsGroupDescribeRequest {
            group_ids: group_ids.to_vec(),
            include_authorized_operations,
            include_topology_description: false,
        };
        let (_, response) = self.send_wire(&request).await?;
        Ok(response)
    }

    /// Finds the coordinator of `group`. A non-zero error code (e.g. 15
    /// COORDINATOR_NOT_AVAILABLE) is a [`ProtocolError::Broker`].
    pub async fn find_coordinator(&mut self, group: &str) -> Result<Coordinator, ProtocolError> {
        let (min, max) = FIND_COORDINATOR_VERSIONS;
        let version = self.negotiate(FIND_COORDINATOR_KEY, min, max)?;
        let mut request = FindCoordinatorRequest::default();
        if version >= 4 {
            request.coordinator_keys = vec![str_bytes(group)];
        } else {
            request.key = str_bytes(group);
        }
        let response = self
            .send_generated("FindCoordinator", &request, version)
            .await?;
        let (error_code, message, node_id, host, port) = if version >= 4 {
            match response.coordinators.into_iter().next() {
                Some(c) => (c.error_code, c.error_message, c.node_id, c.host, c.port),
                None => {
                    return Err(self.broker_error("FindCoordinator", -1, Some("no coordinator")))
                }
            }
        } else {
            (
                response.error_code,
                response.error_message,
                response.node_id,
                response.host,
                response.port,
            )
        };
        if error_code != 0 {
            return Err(self.broker_error("FindCoordinator", error_code, message.as_deref()));
        }
        Ok(Coordinator {
            node_id: node_id.0,
            host: host.to_string(),
            port,
        })
    }

    /// Commits offsets for `group` as member `member_id` at `member_epoch` (OffsetCommit
    /// v9, which streams groups require). Returns the per-partition results.
    pub async fn offset_commit(
        &mut self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[CommitOffset],
    ) -> Result<Vec<PartitionCommitResult>, ProtocolError> {
        let (min, max) = OFFSET_COMMIT_VERSIONS;
        let version = self.negotiate(OFFSET_COMMIT_KEY, min, max)?;
        let mut request = OffsetCommitRequest::default();
        request.group_id = GroupId(str_bytes(group));
        request.generation_id_or_member_epoch = member_epoch;
        request.member_id = str_bytes(member_id);
        for o in offsets {
            let mut partition = OffsetCommitRequestPartition::default();
            partition.partition_index = o.partition;
            partition.committed_offset = o.offset;
            partition.committed_leader_epoch = o.leader_epoch;
            partition.committed_metadata = o.metadata.as_deref().map(str_bytes);
            match request.topics.iter_mut().find(|t| *t.name.0 == *o.topic) {
                Some(topic) => topic.partitions.push(partition),
                None => {
                    let mut topic = OffsetCommitRequestTopic::default();
                    topic.name = TopicName(str_bytes(&o.topic));
                    topic.partitions.push(partition);
                    request.topics.push(topic);
                }
            }
        }
        let response = self
            .send_generated("OffsetCommit", &request, version)
            .await?;
        Ok(response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| PartitionCommitResult {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    error_code: p.error_code,
                })
            })
            .collect())
    }

    /// Reads the committed offsets of `partitions` (topic, partition) for `group`, as an
    /// admin-style fetch (no member id), requiring stable offsets. A group-level error code
    /// is a [`ProtocolError::Broker`].
    pub async fn offset_fetch(
        &mut self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<FetchedOffset>, ProtocolError> {
        let (min, max) = OFFSET_FETCH_VERSIONS;
        let version = self.negotiate(OFFSET_FETCH_KEY, min, max)?;
        let mut group_req = OffsetFetchRequestGroup::default();
        group_req.group_id = GroupId(str_bytes(group));
        group_req.member_epoch = -1;
        let mut topics: Vec<OffsetFetchRequestTopics> = Vec::new();
        for (name, partition) in partitions {
            match topics.iter_mut().find(|t| *t.name.0 == **name) {
                Some(t) => t.partition_indexes.push(*partition),
                None => {
                    let mut t = OffsetFetchRequestTopics::default();
                    t.name = TopicName(str_bytes(name));
                    t.partition_indexes.push(*partition);
                    topics.push(t);
                }
            }
        }
        group_req.topics = Some(topics);
        let mut request = OffsetFetchRequest::default();
        request.groups = vec![group_req];
        request.require_stable = true;
        let response = self
            .send_generated("OffsetFetch", &request, version)
            .await?;
        let Some(group_resp) = response.groups.into_iter().next() else {
            return Err(self.broker_error("OffsetFetch", -1, Some("no group in response")));
        };
        if group_resp.error_code != 0 {
            return Err(self.broker_error("OffsetFetch", group_resp.error_code, None));
        }
        Ok(group_resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| FetchedOffset {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.metadata.as_ref().map(|m| m.to_string()),
                    error_code: p.error_code,
                })
            })
            .collect())
    }

    /// Metadata for `topics` (all topics when `None`), without auto-creation.
    pub async fn metadata(
        &mut self,
        topics: Option<&[String]>,
    ) -> Result<MetadataResponse, ProtocolError> {
        let (min, max) = METADATA_VERSIONS;
        let version = self.negotiate(METADATA_KEY, min, max)?;
        let mut request = MetadataRequest::default();
        request.allow_auto_topic_creation = false;
        request.topics = topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(TopicName(str_bytes(n)));
                    t
                })
                .collect()
        });
        self.send_generated("Metadata", &request, version).await
    }

    fn broker_error(&self, api: &'static str, code: i16, message: Option<&str>) -> ProtocolError {
        ProtocolError::Broker {
            addr: self.addr().to_owned(),
            api,
            code,
            message: message.map(str::to_owned),
        }
    }
}
