//! StreamsGroupDescribe (API 89), versions 0 and 1: describe streams groups, their topology
//! as the broker configured it, their members and the members' current and target
//! assignments.
//!
//! Owns the field layout from `StreamsGroupDescribeRequest.json` / `...Response.json` of
//! kafka-clients 4.4.0 (flexible from v0, no tagged fields defined; unknown ones skipped).
//! v1 adds `IncludeTopologyDescription` to the request and `TopologyDescription`,
//! `TopologyDescriptionStatus` and `AssignorName` to each described group. It interprets
//! nothing: group states stay strings, error codes stay numbers.

use super::common::{
    read_strings, write_strings, Endpoint, KeyValue, TaskIds, TaskOffset, TopicInfo,
};
use super::error::DecodeError;
use super::wire::{Reader, WireMessage, Writer};

/// The describe request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsGroupDescribeRequest {
    /// The groups to describe.
    pub group_ids: Vec<String>,
    /// Whether to include authorized operations.
    pub include_authorized_operations: bool,
    /// v1+: whether to include the topology description.
    pub include_topology_description: bool,
}

impl WireMessage for StreamsGroupDescribeRequest {
    const API_KEY: i16 = 89;
    const NAME: &'static str = "StreamsGroupDescribeRequest";
    const MIN_VERSION: i16 = 0;
    const MAX_VERSION: i16 = 1;

    fn write_body(&self, w: &mut Writer<'_>, version: i16) {
        write_strings(w, &self.group_ids);
        w.bool(self.include_authorized_operations);
        if version >= 1 {
            w.bool(self.include_topology_description);
        }
        w.empty_tagged_fields();
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let group_ids = read_strings(r, "GroupIds")?;
        let include_authorized_operations = r.bool("IncludeAuthorizedOperations")?;
        let include_topology_description = if r.version() >= 1 {
            r.bool("IncludeTopologyDescription")?
        } else {
            false
        };
        r.skip_tagged_fields("_tagged_fields")?;
        Ok(StreamsGroupDescribeRequest {
            group_ids,
            include_authorized_operations,
            include_topology_description,
        })
    }
}

/// The describe response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsGroupDescribeResponse {
    /// Throttle time due to quotas.
    pub throttle_time_ms: i32,
    /// One entry per requested group.
    pub groups: Vec<DescribedGroup>,
}

/// One described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    /// Kafka error code for this group (0 = none).
    pub error_code: i16,
    /// Error message.
    pub error_message: Option<String>,
    /// The group id.
    pub group_id: String,
    /// The state as the broker spells it: `Empty`, `NotReady`, `Assigning`, `Reconciling`,
    /// `Stable` or `Dead`.
    pub group_state: String,
    /// The group epoch.
    pub group_epoch: i32,
    /// The assignment epoch.
    pub assignment_epoch: i32,
    /// The configured topology; null on a describe error.
    pub topology: Option<DescribedTopology>,
    /// The members.
    pub members: Vec<Member>,
    /// Authorized operations bit field (`i32::MIN` = not requested).
    pub authorized_operations: i32,
    /// v1+: the topology description, present iff the status is 3 (AVAILABLE).
    pub topology_description: Option<TopologyDescription>,
    /// v1+: 0 NOT_REQUESTED, 1 NOT_STORED, 2 ERROR, 3 AVAILABLE.
    pub topology_description_status: i8,
    /// v1+: the assignor for the next assignment.
    pub assignor_name: Option<String>,
}

impl Default for DescribedGroup {
    fn default() -> Self {
        DescribedGroup {
            error_code: 0,
            error_message: None,
            group_id: String::new(),
            group_state: String::new(),
            group_epoch: 0,
            assignment_epoch: 0,
            topology: None,
            members: Vec::new(),
            authorized_operations: i32::MIN,
            topology_description: None,
            topology_description_status: 0,
            assignor_name: None,
        }
    }
}

/// The topology as the broker configured it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribedTopology {
    /// Topology epoch.
    pub epoch: i32,
    /// Configured subtopologies; null if uninitialized or topics are missing.
    pub subtopologies: Option<Vec<DescribedSubtopology>>,
}

/// A configured subtopology (partition counts set, regexes resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribedSubtopology {
    /// Subtopology id.
    pub subtopology_id: String,
    /// Source topics.
    pub source_topics: Vec<String>,
    /// Repartition topics written.
    pub repartition_sink_topics: Vec<String>,
    /// State changelog topics.
    pub state_changelog_topics: Vec<TopicInfo>,
    /// Repartition topics read.
    pub repartition_source_topics: Vec<TopicInfo>,
}

/// One member of a described group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Member id.
    pub member_id: String,
    /// Member epoch.
    pub member_epoch: i32,
    /// Static membership instance id.
    pub instance_id: Option<String>,
    /// Rack id.
    pub rack_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// The topology epoch the client declared.
    pub topology_epoch: i32,
    /// Process id.
    pub process_id: String,
    /// IQ endpoint.
    pub user_endpoint: Option<Endpoint>,
    /// Client tags.
    pub client_tags: Vec<KeyValue>,
    /// Cumulative changelog offsets.
    pub task_offsets: Vec<TaskOffset>,
    /// Cumulative changelog end offsets.
    pub task_end_offsets: Vec<TaskOffset>,
    /// Current assignment.
    pub assignment: Assignment,
    /// Target assignment.
    pub target_assignment: Assignment,
    /// A classic-protocol member not upgraded yet.
    pub is_classic: bool,
}

/// Active, standby and warm-up tasks of a member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Active tasks.
    pub active_tasks: Vec<TaskIds>,
    /// Standby tasks.
    pub standby_tasks: Vec<TaskIds>,
    /// Warm-up tasks.
    pub warmup_tasks: Vec<TaskIds>,
}

/// v1+: the topology description from the broker's topology-description plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyDescription {
    /// Subtopologies.
    pub subtopologies: Vec<TopologyDescriptionSubtopology>,
    /// Global stores.
    pub global_stores: Vec<TopologyDescriptionGlobalStore>,
}

/// A described subtopology and its nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyDescriptionSubtopology {
    /// Subtopology id.
    pub subtopology_id: String,
    /// Processing nodes.
    pub nodes: Vec<TopologyDescriptionNode>,
}

/// A processing node: 1 SOURCE, 2 PROCESSOR, 3 SINK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyDescriptionNode {
    /// Node name.
    pub name: String,
    /// Node type.
    pub node_type: i8,
    /// Source topics (source nodes).
    pub source_topics: Vec<String>,
    /// Sink topic (sink nodes).
    pub sink_topic: Option<String>,
    /// Stores accessed (processor nodes).
    pub stores: Vec<String>,
    /// Successor node names.
    pub successors: Vec<String>,
}

/// A global store: its source node and the processor populating it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyDescriptionGlobalStore {
    /// Source node.
    pub source: TopologyDescriptionNode,
    /// Processor node.
    pub processor: TopologyDescriptionNode,
}

fn write_tasks(w: &mut Writer<'_>, tasks: &[TaskIds]) {
    w.array(tasks, |w, t| t.write(w));
}

impl Assignment {
    fn write(&self, w: &mut Writer<'_>) {
        write_tasks(w, &self.active_tasks);
        write_tasks(w, &self.standby_tasks);
        write_tasks(w, &self.warmup_tasks);
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let active_tasks = r.array("Assignment.ActiveTasks", TaskIds::read)?;
        let standby_tasks = r.array("Assignment.StandbyTasks", TaskIds::read)?;
        let warmup_tasks = r.array("Assignment.WarmupTasks", TaskIds::read)?;
        r.skip_tagged_fields("Assignment._tagged_fields")?;
        Ok(Assignment {
            active_tasks,
            standby_tasks,
            warmup_tasks,
        })
    }
}

impl Member {
    fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.member_id);
        w.i32(self.member_epoch);
        w.nullable_string(self.instance_id.as_deref());
        w.nullable_string(self.rack_id.as_deref());
        w.string(&self.client_id);
        w.string(&self.client_host);
        w.i32(self.topology_epoch);
        w.string(&self.process_id);
        w.struct_presence(self.user_endpoint.is_some());
        if let Some(e) = &self.user_endpoint {
            e.write(w);
        }
        w.array(&self.client_tags, |w, kv| kv.write(w));
        w.array(&self.task_offsets, |w, o| o.write(w));
        w.array(&self.task_end_offsets, |w, o| o.write(w));
        self.assignment.write(w);
        self.target_assignment.write(w);
        w.bool(self.is_classic);
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Member {
            member_id: r.string("Member.MemberId")?,
            member_epoch: r.i32("Member.MemberEpoch")?,
            instance_id: r.nullable_string("Member.InstanceId")?,
            rack_id: r.nullable_string("Member.RackId")?,
            client_id: r.string("Member.ClientId")?,
            client_host: r.string("Member.ClientHost")?,
            topology_epoch: r.i32("Member.TopologyEpoch")?,
            process_id: r.string("Member.ProcessId")?,
            ..Member::default()
        };
        if r.struct_presence("Member.UserEndpoint")? {
            m.user_endpoint = Some(Endpoint::read(r)?);
        }
        m.client_tags = r.array("Member.ClientTags", KeyValue::read)?;
        m.task_offsets = r.array("Member.TaskOffsets", TaskOffset::read)?;
        m.task_end_offsets = r.array("Member.TaskEndOffsets", TaskOffset::read)?;
        m.assignment = Assignment::read(r)?;
        m.target_assignment = Assignment::read(r)?;
        m.is_classic = r.bool("Member.IsClassic")?;
        r.skip_tagged_fields("Member._tagged_fields")?;
        Ok(m)
    }
}

impl DescribedSubtopology {
    fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.subtopology_id);
        write_strings(w, &self.source_topics);
        write_strings(w, &self.repartition_sink_topics);
        w.array(&self.state_changelog_topics, |w, t| t.write(w));
        w.array(&self.repartition_source_topics, |w, t| t.write(w));
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let subtopology_id = r.string("Subtopology.SubtopologyId")?;
        let source_topics = read_strings(r, "Subtopology.SourceTopics")?;
        let repartition_sink_topics = read_strings(r, "Subtopology.RepartitionSinkTopics")?;
        let state_changelog_topics =
            r.array("Subtopology.StateChangelogTopics", TopicInfo::read)?;
        let repartition_source_topics =
            r.array("Subtopology.RepartitionSourceTopics", TopicInfo::read)?;
        r.skip_tagged_fields("Subtopology._tagged_fields")?;
        Ok(DescribedSubtopology {
            subtopology_id,
            source_topics,
            repartition_sink_topics,
            state_changelog_topics,
            repartition_source_topics,
        })
    }
}

impl DescribedTopology {
    fn write(&self, w: &mut Writer<'_>) {
        w.i32(self.epoch);
        w.nullable_array(self.subtopologies.as_deref(), |w, s| s.write(w));
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let epoch = r.i32("Topology.Epoch")?;
        let subtopologies =
            r.nullable_array("Topology.Subtopologies", DescribedSubtopology::read)?;
        r.skip_tagged_fields("Topology._tagged_fields")?;
        Ok(DescribedTopology {
            epoch,
            subtopologies,
        })
    }
}

impl TopologyDescriptionNode {
    fn write(&self, w: &mut Writer<'_>) {
        w.string(&self.name);
        w.i8(self.node_type);
        write_strings(w, &self.source_topics);
        w.nullable_string(self.sink_topic.as_deref());
        write_strings(w, &self.stores);
        write_strings(w, &self.successors);
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name = r.string("TopologyDescriptionNode.Name")?;
        let node_type = r.i8("TopologyDescriptionNode.NodeType")?;
        let source_topics = read_strings(r, "TopologyDescriptionNode.SourceTopics")?;
        let sink_topic = r.nullable_string("TopologyDescriptionNode.SinkTopic")?;
        let stores = read_strings(r, "TopologyDescriptionNode.Stores")?;
        let successors = read_strings(r, "TopologyDescriptionNode.Successors")?;
        r.skip_tagged_fields("TopologyDescriptionNode._tagged_fields")?;
        Ok(TopologyDescriptionNode {
            name,
            node_type,
            source_topics,
            sink_topic,
            stores,
            successors,
        })
    }
}

impl TopologyDescription {
    fn write(&self, w: &mut Writer<'_>) {
        w.array(&self.subtopologies, |w, s| {
            w.string(&s.subtopology_id);
            w.array(&s.nodes, |w, n| n.write(w));
            w.empty_tagged_fields();
        });
        w.array(&self.global_stores, |w, g| {
            g.source.write(w);
            g.processor.write(w);
            w.empty_tagged_fields();
        });
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let subtopologies = r.array("TopologyDescription.Subtopologies", |r| {
            let subtopology_id = r.string("TopologyDescriptionSubtopology.SubtopologyId")?;
            let nodes = r.array(
                "TopologyDescriptionSubtopology.Nodes",
                TopologyDescriptionNode::read,
            )?;
            r.skip_tagged_fields("TopologyDescriptionSubtopology._tagged_fields")?;
            Ok(TopologyDescriptionSubtopology {
                subtopology_id,
                nodes,
            })
        })?;
        let global_stores = r.array("TopologyDescription.GlobalStores", |r| {
            let source = TopologyDescriptionNode::read(r)?;
            let processor = TopologyDescriptionNode::read(r)?;
            r.skip_tagged_fields("TopologyDescriptionGlobalStore._tagged_fields")?;
            Ok(TopologyDescriptionGlobalStore { source, processor })
        })?;
        r.skip_tagged_fields("TopologyDescription._tagged_fields")?;
        Ok(TopologyDescription {
            subtopologies,
            global_stores,
        })
    }
}

impl DescribedGroup {
    fn write(&self, w: &mut Writer<'_>, version: i16) {
        w.i16(self.error_code);
        w.nullable_string(self.error_message.as_deref());
        w.string(&self.group_id);
        w.string(&self.group_state);
        w.i32(self.group_epoch);
        w.i32(self.assignment_epoch);
        w.struct_presence(self.topology.is_some());
        if let Some(t) = &self.topology {
            t.write(w);
        }
        w.array(&self.members, |w, m| m.write(w));
        w.i32(self.authorized_operations);
        if version >= 1 {
            w.struct_presence(self.topology_description.is_some());
            if let Some(d) = &self.topology_description {
                d.write(w);
            }
            w.i8(self.topology_description_status);
            w.nullable_string(self.assignor_name.as_deref());
        }
        w.empty_tagged_fields();
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut g = DescribedGroup {
            error_code: r.i16("DescribedGroup.ErrorCode")?,
            error_message: r.nullable_string("DescribedGroup.ErrorMessage")?,
            group_id: r.string("DescribedGroup.GroupId")?,
            group_state: r.string("DescribedGroup.GroupState")?,
            group_epoch: r.i32("DescribedGroup.GroupEpoch")?,
            assignment_epoch: r.i32("DescribedGroup.AssignmentEpoch")?,
            ..DescribedGroup::default()
        };
        if r.struct_presence("DescribedGroup.Topology")? {
            g.topology = Some(DescribedTopology::read(r)?);
        }
        g.members = r.array("DescribedGroup.Members", Member::read)?;
        g.authorized_operations = r.i32("DescribedGroup.AuthorizedOperations")?;
        if r.version() >= 1 {
            if r.struct_presence("DescribedGroup.TopologyDescription")? {
                g.topology_description = Some(TopologyDescription::read(r)?);
            }
            g.topology_description_status = r.i8("DescribedGroup.TopologyDescriptionStatus")?;
            g.assignor_name = r.nullable_string("DescribedGroup.AssignorName")?;
        }
        r.skip_tagged_fields("DescribedGroup._tagged_fields")?;
        Ok(g)
    }
}

impl WireMessage for StreamsGroupDescribeResponse {
    const API_KEY: i16 = 89;
    const NAME: &'static str = "StreamsGroupDescribeResponse";
    const MIN_VERSION: i16 = 0;
    const MAX_VERSION: i16 = 1;

    fn write_body(&self, w: &mut Writer<'_>, version: i16) {
        w.i32(self.throttle_time_ms);
        w.array(&self.groups, |w, g| g.write(w, version));
        w.empty_tagged_fields();
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let throttle_time_ms = r.i32("ThrottleTimeMs")?;
        let groups = r.array("Groups", DescribedGroup::read)?;
        r.skip_tagged_fields("_tagged_fields")?;
        Ok(StreamsGroupDescribeResponse {
            throttle_time_ms,
            groups,
        })
    }
}

#[cfg(test)]
#[path = "streams_group_describe_tests.rs"]
mod tests;
