package kstate.golden;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.apache.kafka.common.message.StreamsGroupDescribeRequestData;
import org.apache.kafka.common.message.StreamsGroupDescribeResponseData;
import org.apache.kafka.common.message.StreamsGroupHeartbeatRequestData;
import org.apache.kafka.common.message.StreamsGroupHeartbeatResponseData;
import org.apache.kafka.common.protocol.Message;
import org.apache.kafka.common.protocol.ObjectSerializationCache;
import org.apache.kafka.common.protocol.ByteBufferAccessor;
import org.apache.kafka.common.protocol.types.RawTaggedField;

/**
 * Writes golden bytes for kstate's StreamsGroupHeartbeat (API 88) and StreamsGroupDescribe
 * (API 89) codecs. Each fixture is the message body only (no size prefix, no header), as
 * produced by Apache Kafka's own generated classes, written as one line of lowercase hex.
 *
 * The values here are mirrored field by field in the Rust tests
 * (src/protocol/streams_group_heartbeat.rs and streams_group_describe.rs); change both together.
 */
public final class Golden {
    static final String APP = "kstate-app";
    static final String SOURCE = "input";
    static final String CHANGELOG = "kstate-app-sessions-changelog";
    static final String REPARTITION = "kstate-app-rekey-repartition";

    public static void main(String[] args) throws IOException {
        Path out = Path.of(args.length > 0 ? args[0] : "fixtures");
        Files.createDirectories(out);

        for (short v = 0; v <= 1; v++) {
            write(out, "heartbeat_request_join_v" + v, heartbeatJoin(), v);
            write(out, "heartbeat_request_ack_v" + v, heartbeatAck(), v);
            write(out, "heartbeat_response_assign_v" + v, heartbeatResponseAssign(v), v);
            write(out, "heartbeat_response_unchanged_v" + v, heartbeatResponseUnchanged(), v);
            write(out, "describe_request_v" + v, describeRequest(v), v);
            write(out, "describe_response_v" + v, describeResponse(v), v);
        }
    }

    static void write(Path dir, String name, Message message, short version) throws IOException {
        ObjectSerializationCache cache = new ObjectSerializationCache();
        int size = message.size(cache, version);
        ByteBuffer buf = ByteBuffer.allocate(size);
        message.write(new ByteBufferAccessor(buf), cache, version);
        if (buf.hasRemaining()) {
            throw new IllegalStateException(name + ": size() and write() disagree");
        }
        byte[] bytes = buf.array();
        StringBuilder hex = new StringBuilder(bytes.length * 2 + 1);
        for (byte b : bytes) {
            hex.append(String.format("%02x", b));
        }
        hex.append('\n');
        Files.writeString(dir.resolve(name + ".hex"), hex.toString(), StandardCharsets.US_ASCII);
    }

    // ---- StreamsGroupHeartbeat request -------------------------------------------------

    static StreamsGroupHeartbeatRequestData.KeyValue kv(String k, String v) {
        return new StreamsGroupHeartbeatRequestData.KeyValue().setKey(k).setValue(v);
    }

    static StreamsGroupHeartbeatRequestData.TaskIds reqTasks(String sub, Integer... partitions) {
        return new StreamsGroupHeartbeatRequestData.TaskIds()
            .setSubtopologyId(sub)
            .setPartitions(Arrays.asList(partitions));
    }

    /** The join heartbeat: epoch 0, full topology, three empty task lists, every optional set. */
    static StreamsGroupHeartbeatRequestData heartbeatJoin() {
        StreamsGroupHeartbeatRequestData.TopicInfo changelog = new StreamsGroupHeartbeatRequestData.TopicInfo()
            .setName(CHANGELOG)
            .setPartitions(0)
            .setReplicationFactor((short) 0)
            .setTopicConfigs(List.of(
                kv("cleanup.policy", "compact,delete"),
                kv("message.timestamp.type", "CreateTime"),
                kv("retention.ms", "86700000")));
        StreamsGroupHeartbeatRequestData.TopicInfo repartition = new StreamsGroupHeartbeatRequestData.TopicInfo()
            .setName(REPARTITION)
            .setPartitions(4)
            .setReplicationFactor((short) 3)
            .setTopicConfigs(List.of(
                kv("cleanup.policy", "delete"),
                kv("retention.ms", "-1"),
                kv("segment.bytes", "52428800")));
        StreamsGroupHeartbeatRequestData.Subtopology sub0 = new StreamsGroupHeartbeatRequestData.Subtopology()
            .setSubtopologyId("0")
            .setSourceTopics(List.of(SOURCE))
            .setSourceTopicRegex(List.of())
            .setStateChangelogTopics(List.of(changelog))
            .setRepartitionSinkTopics(List.of(REPARTITION))
            .setRepartitionSourceTopics(List.of())
            .setCopartitionGroups(List.of());
        StreamsGroupHeartbeatRequestData.Subtopology sub1 = new StreamsGroupHeartbeatRequestData.Subtopology()
            .setSubtopologyId("1")
            .setSourceTopics(List.of())
            .setSourceTopicRegex(List.of())
            .setStateChangelogTopics(List.of())
            .setRepartitionSinkTopics(List.of())
            .setRepartitionSourceTopics(List.of(repartition))
            .setCopartitionGroups(List.of(new StreamsGroupHeartbeatRequestData.CopartitionGroup()
                .setSourceTopics(List.of())
                .setSourceTopicRegex(List.of())
                .setRepartitionSourceTopics(List.of((short) 0))));
        return new StreamsGroupHeartbeatRequestData()
            .setGroupId(APP)
            .setMemberId("5b0c7a3e-6f2d-4a8e-9b1c-0d2e3f4a5b6c")
            .setMemberEpoch(0)
            .setEndpointInformationEpoch(-1)
            .setInstanceId(null)
            .setRackId("rack-a")
            .setRebalanceTimeoutMs(300000)
            .setTopology(new StreamsGroupHeartbeatRequestData.Topology()
                .setEpoch(0)
                .setSubtopologies(List.of(sub0, sub1)))
            .setActiveTasks(new ArrayList<>())
            .setStandbyTasks(new ArrayList<>())
            .setWarmupTasks(new ArrayList<>())
            .setProcessId("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a")
            .setUserEndpoint(new StreamsGroupHeartbeatRequestData.Endpoint().setHost("worker-1.local").setPort(65000))
            .setClientTags(List.of(kv("zone", "eu-west-1a")))
            .setTaskOffsets(List.of(new StreamsGroupHeartbeatRequestData.TaskOffset()
                .setSubtopologyId("0").setPartition(2).setOffset(1234L)))
            .setTaskEndOffsets(List.of(new StreamsGroupHeartbeatRequestData.TaskOffset()
                .setSubtopologyId("0").setPartition(2).setOffset(5000000000L)))
            .setShutdownApplication(false);
    }

    /** A steady-state heartbeat acknowledging a reconciliation: no topology, owned tasks, nulls. */
    static StreamsGroupHeartbeatRequestData heartbeatAck() {
        return new StreamsGroupHeartbeatRequestData()
            .setGroupId(APP)
            .setMemberId("5b0c7a3e-6f2d-4a8e-9b1c-0d2e3f4a5b6c")
            .setMemberEpoch(3)
            .setEndpointInformationEpoch(2)
            .setInstanceId("instance-1")
            .setRackId(null)
            .setRebalanceTimeoutMs(-1)
            .setTopology(null)
            .setActiveTasks(List.of(reqTasks("0", 0, 1), reqTasks("1", 3)))
            .setStandbyTasks(new ArrayList<>())
            .setWarmupTasks(List.of(reqTasks("0", 2)))
            .setProcessId(null)
            .setUserEndpoint(null)
            .setClientTags(null)
            .setTaskOffsets(null)
            .setTaskEndOffsets(null)
            .setShutdownApplication(true);
    }

    // ---- StreamsGroupHeartbeat response ------------------------------------------------

    static StreamsGroupHeartbeatResponseData.TaskIds respTasks(String sub, Integer... partitions) {
        return new StreamsGroupHeartbeatResponseData.TaskIds()
            .setSubtopologyId(sub)
            .setPartitions(Arrays.asList(partitions));
    }

    /** A full target assignment with statuses (one unknown code) and IQ endpoint information. */
    static StreamsGroupHeartbeatResponseData heartbeatResponseAssign(short version) {
        StreamsGroupHeartbeatResponseData data = new StreamsGroupHeartbeatResponseData()
            .setThrottleTimeMs(0)
            .setErrorCode((short) 0)
            .setErrorMessage(null)
            .setMemberId("5b0c7a3e-6f2d-4a8e-9b1c-0d2e3f4a5b6c")
            .setMemberEpoch(3)
            .setHeartbeatIntervalMs(500)
            .setTaskOffsetIntervalMs(60000)
            .setStatus(List.of(
                new StreamsGroupHeartbeatResponseData.Status().setStatusCode((byte) 5)
                    .setStatusDetail("Assignment delayed due to the configured initial rebalance delay."),
                new StreamsGroupHeartbeatResponseData.Status().setStatusCode((byte) 42)
                    .setStatusDetail("a status this client does not know")))
            .setActiveTasks(List.of(respTasks("0", 0, 1, 2, 3)))
            .setStandbyTasks(List.of())
            .setWarmupTasks(List.of(respTasks("1", 7)))
            .setEndpointInformationEpoch(4)
            .setPartitionsByUserEndpoint(List.of(new StreamsGroupHeartbeatResponseData.EndpointToPartitions()
                .setUserEndpoint(new StreamsGroupHeartbeatResponseData.Endpoint().setHost("worker-1.local").setPort(65000))
                .setActivePartitions(List.of(new StreamsGroupHeartbeatResponseData.TopicPartition()
                    .setTopic(SOURCE).setPartitions(List.of(0, 1, 2, 3))))
                .setStandbyPartitions(List.of())));
        if (version == 0) {
            data.setAcceptableRecoveryLagLegacy(10000);
        } else {
            data.setAcceptableRecoveryLag(10000000000L);
            data.setTopologyDescriptionRequired(true);
        }
        return data;
    }

    /** An error response with every nullable field null and unknown tagged fields to skip. */
    static StreamsGroupHeartbeatResponseData heartbeatResponseUnchanged() {
        StreamsGroupHeartbeatResponseData data = new StreamsGroupHeartbeatResponseData()
            .setThrottleTimeMs(25)
            .setErrorCode((short) 110)
            .setErrorMessage("The member epoch is fenced by the group coordinator.")
            .setMemberId("5b0c7a3e-6f2d-4a8e-9b1c-0d2e3f4a5b6c")
            .setMemberEpoch(-1)
            .setHeartbeatIntervalMs(5000)
            .setTaskOffsetIntervalMs(60000)
            .setStatus(null)
            .setActiveTasks(null)
            .setStandbyTasks(null)
            .setWarmupTasks(null)
            .setEndpointInformationEpoch(0)
            .setPartitionsByUserEndpoint(null);
        data.unknownTaggedFields().add(new RawTaggedField(7, new byte[] {1, 2, 3}));
        data.unknownTaggedFields().add(new RawTaggedField(300, new byte[0]));
        return data;
    }

    // ---- StreamsGroupDescribe ------------------------------------------------------------

    static StreamsGroupDescribeRequestData describeRequest(short version) {
        return new StreamsGroupDescribeRequestData()
            .setGroupIds(List.of(APP, "other-app"))
            .setIncludeAuthorizedOperations(true)
            .setIncludeTopologyDescription(version >= 1);
    }

    static StreamsGroupDescribeResponseData.TaskIds descTasks(String sub, Integer... partitions) {
        return new StreamsGroupDescribeResponseData.TaskIds()
            .setSubtopologyId(sub)
            .setPartitions(Arrays.asList(partitions));
    }

    static StreamsGroupDescribeResponseData.TopologyDescriptionNode node(
        String name, int type, List<String> sources, String sink, List<String> stores, List<String> successors) {
        return new StreamsGroupDescribeResponseData.TopologyDescriptionNode()
            .setName(name)
            .setNodeType((byte) type)
            .setSourceTopics(sources)
            .setSinkTopic(sink)
            .setStores(stores)
            .setSuccessors(successors);
    }

    /** One stable group with a member and its assignment, and one group that failed. */
    static StreamsGroupDescribeResponseData describeResponse(short version) {
        StreamsGroupDescribeResponseData.Member member = new StreamsGroupDescribeResponseData.Member()
            .setMemberId("5b0c7a3e-6f2d-4a8e-9b1c-0d2e3f4a5b6c")
            .setMemberEpoch(3)
            .setInstanceId(null)
            .setRackId("rack-a")
            .setClientId("kstate-worker")
            .setClientHost("/10.0.0.7")
            .setTopologyEpoch(0)
            .setProcessId("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a")
            .setUserEndpoint(new StreamsGroupDescribeResponseData.Endpoint().setHost("worker-1.local").setPort(8080))
            .setClientTags(List.of(new StreamsGroupDescribeResponseData.KeyValue().setKey("zone").setValue("eu-west-1a")))
            .setTaskOffsets(List.of(new StreamsGroupDescribeResponseData.TaskOffset()
                .setSubtopologyId("0").setPartition(1).setOffset(77L)))
            .setTaskEndOffsets(List.of())
            .setAssignment(new StreamsGroupDescribeResponseData.Assignment()
                .setActiveTasks(List.of(descTasks("0", 0, 1)))
                .setStandbyTasks(List.of())
                .setWarmupTasks(List.of()))
            .setTargetAssignment(new StreamsGroupDescribeResponseData.Assignment()
                .setActiveTasks(List.of(descTasks("0", 0, 1, 2, 3)))
                .setStandbyTasks(List.of(descTasks("0", 3)))
                .setWarmupTasks(List.of()))
            .setIsClassic(false);
        StreamsGroupDescribeResponseData.DescribedGroup stable = new StreamsGroupDescribeResponseData.DescribedGroup()
            .setErrorCode((short) 0)
            .setErrorMessage(null)
            .setGroupId(APP)
            .setGroupState("stable")
            .setGroupEpoch(3)
            .setAssignmentEpoch(3)
            .setTopology(new StreamsGroupDescribeResponseData.Topology()
                .setEpoch(0)
                .setSubtopologies(List.of(new StreamsGroupDescribeResponseData.Subtopology()
                    .setSubtopologyId("0")
                    .setSourceTopics(List.of(SOURCE))
                    .setRepartitionSinkTopics(List.of())
                    .setStateChangelogTopics(List.of(new StreamsGroupDescribeResponseData.TopicInfo()
                        .setName(CHANGELOG)
                        .setPartitions(4)
                        .setReplicationFactor((short) 1)
                        .setTopicConfigs(List.of(new StreamsGroupDescribeResponseData.KeyValue()
                            .setKey("cleanup.policy").setValue("compact,delete")))))
                    .setRepartitionSourceTopics(List.of()))))
            .setMembers(List.of(member))
            .setAuthorizedOperations(3576);
        StreamsGroupDescribeResponseData.DescribedGroup failed = new StreamsGroupDescribeResponseData.DescribedGroup()
            .setErrorCode((short) 69)
            .setErrorMessage("Group other-app not found.")
            .setGroupId("other-app")
            .setGroupState("")
            .setGroupEpoch(-1)
            .setAssignmentEpoch(-1)
            .setTopology(null)
            .setMembers(List.of());
        if (version >= 1) {
            stable.setTopologyDescription(new StreamsGroupDescribeResponseData.TopologyDescription()
                    .setSubtopologies(List.of(new StreamsGroupDescribeResponseData.TopologyDescriptionSubtopology()
                        .setSubtopologyId("0")
                        .setNodes(List.of(
                            node("KSTREAM-SOURCE-0000000000", 1, List.of(SOURCE), null, List.of(),
                                List.of("KSTREAM-AGGREGATE-0000000001")),
                            node("KSTREAM-AGGREGATE-0000000001", 2, List.of(), null, List.of("sessions"),
                                List.of("KSTREAM-SINK-0000000002")),
                            node("KSTREAM-SINK-0000000002", 3, List.of(), "output", List.of(), List.of())))))
                    .setGlobalStores(List.of(new StreamsGroupDescribeResponseData.TopologyDescriptionGlobalStore()
                        .setSource(node("KSTREAM-SOURCE-0000000003", 1, List.of("global-input"), null, List.of(),
                            List.of("KTABLE-SOURCE-0000000004")))
                        .setProcessor(node("KTABLE-SOURCE-0000000004", 2, List.of(), null, List.of("global-store"),
                            List.of())))))
                .setTopologyDescriptionStatus((byte) 3)
                .setAssignorName("sticky");
            failed.setTopologyDescriptionStatus((byte) 0).setAssignorName(null);
        }
        return new StreamsGroupDescribeResponseData()
            .setThrottleTimeMs(0)
            .setGroups(List.of(stable, failed));
    }
}
