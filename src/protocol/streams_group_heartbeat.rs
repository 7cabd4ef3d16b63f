//! StreamsGroupHeartbeat (API 88), versions 0 and 1: the request a streams-group member sends
//! to join, stay in and leave the group, and the broker's response carrying the target
//! assignment and group status.
//!
//! Owns the field layout from `StreamsGroupHeartbeatRequest.json` / `...Response.json` of
//! kafka-clients 4.4.0 (flexible from v0, no tagged fields defined; unknown tagged fields are
//! skipped). Request v1 is byte-identical to v0. Response v1 drops the int32
//! `AcceptableRecoveryLagLegacy`, adds the int64 `AcceptableRecoveryLag` after
//! `TaskOffsetIntervalMs` and `TopologyDescriptionRequired` after the task lists.
//! It knows nothing of tasks or reconciliation: which fields to send when is the membership
//! layer's business.

use super::common::{
    read_strings, write_strings, Endpoint, KeyValue, TaskIds, TaskOffset, TopicInfo,
};
use super::error::DecodeError;
use super::wire::{Reader, WireMessage, Writer};

/// `MemberEpoch` of a member joining (or rejoining) the group.
pub const JOIN_GROUP_MEMBER_EPOCH: i32 = 0;
/// `MemberEpoch` of a member leaving the group.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// `MemberEpoch` of a static member leaving temporarily.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// The heartbeat request. `None` in a nullable field means "not provided / unchanged since
/// the last heartbeat".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsGroupHeartbeatRequest {
    /// The group id (`application.id`).
    pub group_id: String,
    /// The client-generated member id, kept for the process lifetime.
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member's temporary leave, else the current
    /// epoch.
    pub member_epoch: i32,
    /// The latest endpoint-information epoch received (-1 initially).
    pub endpoint_information_epoch: i32,
    /// Static membership instance id.
    pub instance_id: Option<String>,
    /// Rack id.
    pub rack_id: Option<String>,
    /// Rebalance timeout; -1 = unchanged.
    pub rebalance_timeout_ms: i32,
    /// The topology; only on a join (epoch 0).
    pub topology: Option<Topology>,
    /// Owned active tasks; null = unchanged. All three task lists are null or none is.
    pub active_tasks: Option<Vec<TaskIds>>,
    /// Owned standby tasks.
    pub standby_tasks: Option<Vec<TaskIds>>,
    /// Owned warm-up tasks.
    pub warmup_tasks: Option<Vec<TaskIds>>,
    /// Process id shared by all members of one worker process.
    pub process_id: Option<String>,
    /// Interactive Queries endpoint.
    pub user_endpoint: Option<Endpoint>,
    /// Client tags for rack-aware assignment.
    pub client_tags: Option<Vec<KeyValue>>,
    /// Cumulative changelog offsets per task (brokers before 4.4 reject non-null).
    pub task_offsets: Option<Vec<TaskOffset>>,
    /// Cumulative changelog end offsets per task (brokers before 4.4 reject non-null).
    pub task_end_offsets: Option<Vec<TaskOffset>>,
    /// Ask every member of the group to shut down.
    pub shutdown_application: bool,
}

impl Default for StreamsGroupHeartbeatRequest {
    fn default() -> Self {
        StreamsGroupHeartbeatRequest {
            group_id: String::new(),
            member_id: String::new(),
            member_epoch: 0,
            endpoint_information_epoch: 0,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: -1,
            topology: None,
            active_tasks: None,
            standby_tasks: None,
            warmup_tasks: None,
            process_id: None,
            user_endpoint: None,
            client_tags: None,
            task_offsets: None,
            task_end_offsets: None,
            shutdown_application: false,
        }
    }
}

/// The topology declared on a join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Topology epoch (the Java client always sends 0).
    pub epoch: i32,
    /// Subtopologies, sorted by id as the Java client sends them.
    pub subtopologies: Vec<Subtopology>,
}

/// One subtopology of a declared topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subtopology {
    /// Subtopology id, e.g. `"0"`.
    pub subtopology_id: String,
    /// Source topics (repartition topics excluded).
    pub source_topics: Vec<String>,
    /// Source topic regexes (rejected by current brokers).
    pub source_topic_regex: Vec<String>,
    /// State changelog topics (Partitions must be 0).
    pub state_changelog_topics: Vec<TopicInfo>,
    /// Repartition topics this subtopology writes to.
    pub repartition_sink_topics: Vec<String>,
    /// Repartition topics this subtopology reads.
    pub repartition_source_topics: Vec<TopicInfo>,
    /// Groups of source topics that must be co-partitioned.
    pub copartition_groups: Vec<CopartitionGroup>,
}

/// Indexes into the owning [`Subtopology`]'s arrays (so their order matters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopartitionGroup {
    /// Indexes into `source_topics`.
    pub source_topics: Vec<i16>,
    /// Indexes into `source_topic_regex`.
    pub source_topic_regex: Vec<i16>,
    /// Indexes into `repartition_source_topics`.
    pub repartition_source_topics: Vec<i16>,
}

fn write_i16s(w: &mut Writer<'_>, items: &[i16]) {
    w.array(items, |w, v| w.i16(*v));
}

impl CopartitionGroup {
    fn write(&self, w: &mut Writer<'_>) {
        write_i16s(w, &self.source_topics);
        write_i16s(w, &self.source_topic_regex);
        write_i16s(w, &self.repartition_source_topics);
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        const F: &str = "CopartitionGroup.SourceTopics";
        let source_topics = r.array(F, |r| r.i16(F))?;
        const G: &str = "CopartitionGroup.SourceTopicRegex";
        let source_topic_regex = r.array(G, |r| r.i16(G))?;
        const H: &str = "CopartitionGroup.RepartitionSourceTopics";
        let repartition_source_topics = r.array(H, |r| r.i16(H))?;
        r.skip_tagged_fields("CopartitionGroup._tagged_fields")?;
        Ok(CopartitionGroup {
            source_topics,
            source_topic_regex,
            repartition_source_topics,
        })
    }
}

impl Subtopology {
    fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.subtopology_id);
        write_strings(w, &self.source_topics);
        write_strings(w, &self.source_topic_regex);
        w.array(&self.state_changelog_topics, |w, t| t.write(w));
        write_strings(w, &self.repartition_sink_topics);
        w.array(&self.repartition_source_topics, |w, t| t.write(w));
        w.array(&self.copartition_groups, |w, g| g.write(w));
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let subtopology_id = r.string("Subtopology.SubtopologyId")?;
        let source_topics = read_strings(r, "Subtopology.SourceTopics")?;
        let source_topic_regex = read_strings(r, "Subtopology.SourceTopicRegex")?;
        let state_changelog_topics =
            r.array("Subtopology.StateChangelogTopics", TopicInfo::read)?;
        let repartition_sink_topics = read_strings(r, "Subtopology.RepartitionSinkTopics")?;
        let repartition_source_topics =
            r.array("Subtopology.RepartitionSourceTopics", TopicInfo::read)?;
        let copartition_groups =
            r.array("Subtopology.CopartitionGroups", CopartitionGroup::read)?;
        r.skip_tagged_fields("Subtopology._tagged_fields")?;
        Ok(Subtopology {
            subtopology_id,
            source_topics,
            source_topic_regex,
            state_changelog_topics,
            repartition_sink_topics,
            repartition_source_topics,
            copartition_groups,
        })
    }
}

impl Topology {
    fn write(&self, w: &mut Writer<'_>) {
        w.i32(self.epoch);
        w.array(&self.subtopologies, |w, s| s.write(w));
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let epoch = r.i32("Topology.Epoch")?;
        let subtopologies = r.array("Topology.Subtopologies", Subtopology::read)?;
        r.skip_tagged_fields("Topology._tagged_fields")?;
        Ok(Topology {
            epoch,
            subtopologies,
        })
    }
}

fn write_task_list(w: &mut Writer<'_>, tasks: Option<&[TaskIds]>) {
    w.nullable_array(tasks, |w, t| t.write(w));
}

impl WireMessage for StreamsGroupHeartbeatRequest {
    const API_KEY: i16 = 88;
    const NAME: &'static str = "StreamsGroupHeartbeatRequest";
    const MIN_VERSION: i16 = 0;
    const MAX_VERSION: i16 = 1;

    fn write_body(&self, w: &mut Writer<'_>, _version: i16) {
        w.string(&self.group_id);
        w.string(&self.member_id);
        w.i32(self.member_epoch);
        w.i32(self.endpoint_information_epoch);
        w.nullable_string(self.instance_id.as_deref());
        w.nullable_string(self.rack_id.as_deref());
        w.i32(self.rebalance_timeout_ms);
        w.struct_presence(self.topology.is_some());
        if let Some(t) = &self.topology {
            t.write(w);
        }
        write_task_list(w, self.active_tasks.as_deref());
        write_task_list(w, self.standby_tasks.as_deref());
        write_task_list(w, self.warmup_tasks.as_deref());
        w.nullable_string(self.process_id.as_deref());
        w.struct_presence(self.user_endpoint.is_some());
        if let Some(e) = &self.user_endpoint {
            e.write(w);
        }
        w.nullable_array(self.client_tags.as_deref(), |w, kv| kv.write(w));
        w.nullable_array(self.task_offsets.as_deref(), |w, o| o.write(w));
        w.nullable_array(self.task_end_offsets.as_deref(), |w, o| o.write(w));
        w.bool(self.shutdown_application);
        w.empty_tagged_fields();
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let group_id = r.string("GroupId")?;
        let member_id = r.string("MemberId")?;
        let member_epoch = r.i32("MemberEpoch")?;
        let endpoint_information_epoch = r.i32("EndpointInformationEpoch")?;
        let instance_id = r.nullable_string("InstanceId")?;
        let rack_id = r.nullable_string("RackId")?;
        let rebalance_timeout_ms = r.i32("RebalanceTimeoutMs")?;
        let topology = if r.struct_presence("Topology")? {
            Some(Topology::read(r)?)
        } else {
            None
        };
        let active_tasks = r.nullable_array("ActiveTasks", TaskIds::read)?;
        let standby_tasks = r.nullable_array("StandbyTasks", TaskIds::read)?;
        let warmup_tasks = r.nullable_array("WarmupTasks", TaskIds::read)?;
        let process_id = r.nullable_string("ProcessId")?;
        let user_endpoint = if r.struct_presence("UserEndpoint")? {
            Some(Endpoint::read(r)?)
        } else {
            None
        };
        let client_tags = r.nullable_array("ClientTags", KeyValue::read)?;
        let task_offsets = r.nullable_array("TaskOffsets", TaskOffset::read)?;
        let task_end_offsets = r.nullable_array("TaskEndOffsets", TaskOffset::read)?;
        let shutdown_application = r.bool("ShutdownApplication")?;
        r.skip_tagged_fields("_tagged_fields")?;
        Ok(StreamsGroupHeartbeatRequest {
            group_id,
            member_id,
            member_epoch,
            endpoint_information_epoch,
            instance_id,
            rack_id,
            rebalance_timeout_ms,
            topology,
            active_tasks,
            standby_tasks,
            warmup_tasks,
            process_id,
            user_endpoint,
            client_tags,
            task_offsets,
            task_end_offsets,
            shutdown_application,
        })
    }
}

/// A group status code. Unknown codes are kept as they are, never rejected (the Java client
/// throws on them; a newer broker may send codes this client does not know).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StatusCode(pub i8);

impl StatusCode {
    /// The member's topology epoch is older than the group's.
    pub const STALE_TOPOLOGY: StatusCode = StatusCode(0);
    /// Source topics are missing.
    pub const MISSING_SOURCE_TOPICS: StatusCode = StatusCode(1);
    /// Co-partitioning is violated or an internal topic has the wrong partition count.
    pub const INCORRECTLY_PARTITIONED_TOPICS: StatusCode = StatusCode(2);
    /// Internal topics are missing (being created, or creation failed).
    pub const MISSING_INTERNAL_TOPICS: StatusCode = StatusCode(3);
    /// A member asked the application to shut down.
    pub const SHUTDOWN_APPLICATION: StatusCode = StatusCode(4);
    /// The assignment is delayed (initial rebalance delay).
    pub const ASSIGNMENT_DELAYED: StatusCode = StatusCode(5);
    /// Client tags required for rack-aware assignment are missing (v1).
    pub const MISSING_CLIENT_TAGS: StatusCode = StatusCode(6);

    /// The status name, or `None` for a code this client does not know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "STALE_TOPOLOGY",
            1 => "MISSING_SOURCE_TOPICS",
            2 => "INCORRECTLY_PARTITIONED_TOPICS",
            3 => "MISSING_INTERNAL_TOPICS",
            4 => "SHUTDOWN_APPLICATION",
            5 => "ASSIGNMENT_DELAYED",
            6 => "MISSING_CLIENT_TAGS",
            _ => return None,
        })
    }

    /// Whether the code means the group is not ready to process (codes 1, 2, 3 and 5, as in
    /// the Java client's `isGroupReady`).
    pub fn is_group_not_ready(self) -> bool {
        matches!(self.0, 1 | 2 | 3 | 5)
    }
}

impl std::fmt::Debug for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "UNKNOWN({})", self.0),
        }
    }
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One group status in a heartbeat response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The code.
    pub status_code: StatusCode,
    /// A human-readable detail.
    pub status_detail: String,
}

/// A topic and some of its partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPartitions {
    /// Topic name.
    pub topic: String,
    /// Partitions.
    pub partitions: Vec<i32>,
}

/// The partitions one member's endpoint serves, for Interactive Queries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointToPartitions {
    /// The member's endpoint.
    pub user_endpoint: Endpoint,
    /// Source partitions of its active tasks.
    pub active_partitions: Vec<TopicPartitions>,
    /// Source partitions of its standby and warm-up tasks.
    pub standby_partitions: Vec<TopicPartitions>,
}

/// The heartbeat response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsGroupHeartbeatResponse {
    /// Throttle time due to quotas.
    pub throttle_time_ms: i32,
    /// Top-level Kafka error code (0 = none).
    pub error_code: i16,
    /// Top-level error message.
    pub error_message: Option<String>,
    /// The member id.
    pub member_id: String,
    /// The member epoch.
    pub member_epoch: i32,
    /// Heartbeat interval chosen by the broker.
    pub heartbeat_interval_ms: i32,
    /// v0 only: int32 acceptable recovery lag (0 when decoded from v1).
    pub acceptable_recovery_lag_legacy: i32,
    /// Interval for reporting task offsets.
    pub task_offset_interval_ms: i32,
    /// v1+: int64 acceptable recovery lag; -1 = unsupported (and when decoded from v0).
    pub acceptable_recovery_lag: i64,
    /// Group statuses; null = none reported.
    pub status: Option<Vec<Status>>,
    /// Target active tasks; null = unchanged. All three lists are null or none is.
    pub active_tasks: Option<Vec<TaskIds>>,
    /// Target standby tasks.
    pub standby_tasks: Option<Vec<TaskIds>>,
    /// Target warm-up tasks.
    pub warmup_tasks: Option<Vec<TaskIds>>,
    /// v1+: the broker wants a StreamsGroupTopologyDescriptionUpdate.
    pub topology_description_required: bool,
    /// The endpoint-information epoch.
    pub endpoint_information_epoch: i32,
    /// IQ endpoint information; null = unchanged.
    pub partitions_by_user_endpoint: Option<Vec<EndpointToPartitions>>,
}

impl Default for StreamsGroupHeartbeatResponse {
    fn default() -> Self {
        StreamsGroupHeartbeatResponse {
            throttle_time_ms: 0,
            error_code: 0,
            error_message: None,
            member_id: String::new(),
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            acceptable_recovery_lag_legacy: 0,
            task_offset_interval_ms: 0,
            acceptable_recovery_lag: -1,
            status: None,
            active_tasks: None,
            standby_tasks: None,
            warmup_tasks: None,
            topology_description_required: false,
            endpoint_information_epoch: 0,
            partitions_by_user_endpoint: None,
        }
    }
}

/// The three task lists of a response, classified by the all-null / all-present rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskLists<'a> {
    /// All three are null: keep the current assignment.
    Unchanged,
    /// All three are present: the full target assignment.
    Full {
        /// Target active tasks.
        active: &'a [TaskIds],
        /// Target standby tasks.
        standby: &'a [TaskIds],
        /// Target warm-up tasks.
        warmup: &'a [TaskIds],
    },
    /// Some are null and some are not; the broker broke the protocol.
    Mixed,
}

impl StreamsGroupHeartbeatResponse {
    /// Classifies the task lists: unchanged, a full target, or an illegal mix.
    pub fn task_lists(&self) -> TaskLists<'_> {
        match (
            self.active_tasks.as_deref(),
            self.standby_tasks.as_deref(),
            self.warmup_tasks.as_deref(),
        ) {
            (None, None, None) => TaskLists::Unchanged,
            (Some(active), Some(standby), Some(warmup)) => TaskLists::Full {
                active,
                standby,
                warmup,
            },
            _ => TaskLists::Mixed,
        }
    }

    /// The acceptable recovery lag whichever version carried it: the int64 field when set
    /// (v1), else the legacy int32 field (v0).
    pub fn effective_acceptable_recovery_lag(&self) -> i64 {
        if self.acceptable_recovery_lag >= 0 {
            self.acceptable_recovery_lag
        } else {
            i64::from(self.acceptable_recovery_lag_legacy)
        }
    }

    /// The statuses, empty when null.
    pub fn statuses(&self) -> &[Status] {
        self.status.as_deref().unwrap_or(&[])
    }
}

impl TopicPartitions {
    fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.topic);
        w.array(&self.partitions, |w, p| w.i32(*p));
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let topic = r.string("TopicPartition.Topic")?;
        let partitions = r.array("TopicPartition.Partitions", |r| {
            r.i32("TopicPartition.Partitions")
        })?;
        r.skip_tagged_fields("TopicPartition._tagged_fields")?;
        Ok(TopicPartitions { topic, partitions })
    }
}

impl EndpointToPartitions {
    fn write(&self, w: &mut Writer<'_>) {
        self.user_endpoint.write(w);
        w.array(&self.active_partitions, |w, t| t.write(w));
        w.array(&self.standby_partitions, |w, t| t.write(w));
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let user_endpoint = Endpoint::read(r)?;
        let active_partitions = r.array(
            "EndpointToPartitions.ActivePartitions",
            TopicPartitions::read,
        )?;
        let standby_partitions = r.array(
            "EndpointToPartitions.StandbyPartitions",
            TopicPartitions::read,
        )?;
        r.skip_tagged_fields("EndpointToPartitions._tagged_fields")?;
        Ok(EndpointToPartitions {
            user_endpoint,
            active_partitions,
            standby_partitions,
        })
    }
}

impl Status {
    fn write(&self, w: &mut Writer<'_>) {
        w.i8(self.status_code.0);
        w.string(&self.status_detail);
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let status_code = StatusCode(r.i8("Status.StatusCode")?);
        let status_detail = r.string("Status.StatusDetail")?;
        r.skip_tagged_fields("Status._tagged_fields")?;
        Ok(Status {
            status_code,
            status_detail,
        })
    }
}

impl WireMessage for StreamsGroupHeartbeatResponse {
    const API_KEY: i16 = 88;
    const NAME: &'static str = "StreamsGroupHeartbeatResponse";
    const MIN_VERSION: i16 = 0;
    const MAX_VERSION: i16 = 1;

    fn write_body(&self, w: &mut Writer<'_>, version: i16) {
        w.i32(self.throttle_time_ms);
        w.i16(self.error_code);
        w.nullable_string(self.error_message.as_deref());
        w.string(&self.member_id);
        w.i32(self.member_epoch);
        w.i32(self.heartbeat_interval_ms);
        if version == 0 {
            w.i32(self.acceptable_recovery_lag_legacy);
        }
        w.i32(self.task_offset_interval_ms);
        if version >= 1 {
            w.i64(self.acceptable_recovery_lag);
        }
        w.nullable_array(self.status.as_deref(), |w, s| s.write(w));
        write_task_list(w, self.active_tasks.as_deref());
        write_task_list(w, self.standby_tasks.as_deref());
        write_task_list(w, self.warmup_tasks.as_deref());
        if version >= 1 {
            w.bool(self.topology_description_required);
        }
        w.i32(self.endpoint_information_epoch);
        w.nullable_array(self.partitions_by_user_endpoint.as_deref(), |w, e| {
            e.write(w)
        });
        w.empty_tagged_fields();
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.version();
        let mut resp = StreamsGroupHeartbeatResponse {
            throttle_time_ms: r.i32("ThrottleTimeMs")?,
            error_code: r.i16("ErrorCode")?,
            error_message: r.nullable_string("ErrorMessage")?,
            member_id: r.string("MemberId")?,
            member_epoch: r.i32("MemberEpoch")?,
            heartbeat_interval_ms: r.i32("HeartbeatIntervalMs")?,
            ..StreamsGroupHeartbeatResponse::default()
        };
        if version == 0 {
            resp.acceptable_recovery_lag_legacy = r.i32("AcceptableRecoveryLagLegacy")?;
        }
        resp.task_offset_interval_ms = r.i32("TaskOffsetIntervalMs")?;
        if version >= 1 {
            resp.acceptable_recovery_lag = r.i64("AcceptableRecoveryLag")?;
        }
        resp.status = r.nullable_array("Status", Status::read)?;
        resp.active_tasks = r.nullable_array("ActiveTasks", TaskIds::read)?;
        resp.standby_tasks = r.nullable_array("StandbyTasks", TaskIds::read)?;
        resp.warmup_tasks = r.nullable_array("WarmupTasks", TaskIds::read)?;
        if version >= 1 {
            resp.topology_description_required = r.bool("TopologyDescriptionRequired")?;
        }
        resp.endpoint_information_epoch = r.i32("EndpointInformationEpoch")?;
        resp.partitions_by_user_endpoint =
            r.nullable_array("PartitionsByUserEndpoint", EndpointToPartitions::read)?;
        r.skip_tagged_fields("_tagged_fields")?;
        Ok(resp)
    }
}

#[cfg(test)]
#[path = "streams_group_heartbeat_tests.rs"]
mod tests;
