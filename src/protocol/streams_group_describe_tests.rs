//! Tests of the StreamsGroupDescribe codec: golden bytes from kafka-clients 4.4.0
//! (`tests/golden/`), totality on malformed input, and round trips.

use proptest::prelude::*;

use super::*;
use crate::protocol::common::testing::*;
use crate::protocol::error::DecodeErrorKind;

fn fixture(name: &str) -> Vec<u8> {
    hex(match name {
        "describe_request_v0" => {
            include_str!("../../tests/golden/fixtures/describe_request_v0.hex")
        }
        "describe_request_v1" => {
            include_str!("../../tests/golden/fixtures/describe_request_v1.hex")
        }
        "describe_response_v0" => {
            include_str!("../../tests/golden/fixtures/describe_response_v0.hex")
        }
        "describe_response_v1" => {
            include_str!("../../tests/golden/fixtures/describe_response_v1.hex")
        }
        other => panic!("no fixture {other}"),
    })
}

/// Mirrors `Golden.describeRequest(version)`.
fn request(version: i16) -> StreamsGroupDescribeRequest {
    StreamsGroupDescribeRequest {
        group_ids: vec!["kstate-app".into(), "other-app".into()],
        include_authorized_operations: true,
        include_topology_description: version >= 1,
    }
}

fn node(
    name: &str,
    node_type: i8,
    sources: &[&str],
    sink: Option<&str>,
    stores: &[&str],
    successors: &[&str],
) -> TopologyDescriptionNode {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    TopologyDescriptionNode {
        name: name.into(),
        node_type,
        source_topics: owned(sources),
        sink_topic: sink.map(str::to_owned),
        stores: owned(stores),
        successors: owned(successors),
    }
}

/// Mirrors `Golden.describeResponse(version)`.
fn response(version: i16) -> StreamsGroupDescribeResponse {
    let member = Member {
        member_id: "5b0c7a3e-6f2d-4a8e-9b1c-0d2e3f4a5b6c".into(),
        member_epoch: 3,
        instance_id: None,
        rack_id: Some("rack-a".into()),
        client_id: "kstate-worker".into(),
        client_host: "/10.0.0.7".into(),
        topology_epoch: 0,
        process_id: "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a".into(),
        user_endpoint: Some(Endpoint {
            host: "worker-1.local".into(),
            port: 8080,
        }),
        client_tags: vec![KeyValue::new("zone", "eu-west-1a")],
        task_offsets: vec![TaskOffset {
            subtopology_id: "0".into(),
            partition: 1,
            offset: 77,
        }],
        task_end_offsets: vec![],
        assignment: Assignment {
            active_tasks: vec![tasks("0", &[0, 1])],
            ..Assignment::default()
        },
        target_assignment: Assignment {
            active_tasks: vec![tasks("0", &[0, 1, 2, 3])],
            standby_tasks: vec![tasks("0", &[3])],
            warmup_tasks: vec![],
        },
        is_classic: false,
    };
    let mut stable = DescribedGroup {
        group_id: "kstate-app".into(),
        group_state: "stable".into(),
        group_epoch: 3,
        assignment_epoch: 3,
        topology: Some(DescribedTopology {
            epoch: 0,
            subtopologies: Some(vec![DescribedSubtopology {
                subtopology_id: "0".into(),
                source_topics: vec!["input".into()],
                repartition_sink_topics: vec![],
                state_changelog_topics: vec![TopicInfo {
                    name: "kstate-app-sessions-changelog".into(),
                    partitions: 4,
                    replication_factor: 1,
                    topic_configs: vec![KeyValue::new("cleanup.policy", "compact,delete")],
                }],
                repartition_source_topics: vec![],
            }]),
        }),
        members: vec![member],
        authorized_operations: 3576,
        ..DescribedGroup::default()
    };
    let failed = DescribedGroup {
        error_code: 69,
        error_message: Some("Group other-app not found.".into()),
        group_id: "other-app".into(),
        group_state: String::new(),
        group_epoch: -1,
        assignment_epoch: -1,
        ..DescribedGroup::default()
    };
    if version >= 1 {
        stable.topology_description = Some(TopologyDescription {
            subtopologies: vec![TopologyDescriptionSubtopology {
                subtopology_id: "0".into(),
                nodes: vec![
                    node(
                        "KSTREAM-SOURCE-0000000000",
                        1,
                        &["input"],
                        None,
                        &[],
                        &["KSTREAM-AGGREGATE-0000000001"],
                    ),
                    node(
                        "KSTREAM-AGGREGATE-0000000001",
                        2,
                        &[],
                        None,
                        &["sessions"],
                        &["KSTREAM-SINK-0000000002"],
                    ),
                    node("KSTREAM-SINK-0000000002", 3, &[], Some("output"), &[], &[]),
                ],
            }],
            global_stores: vec![TopologyDescriptionGlobalStore {
                source: node(
                    "KSTREAM-SOURCE-0000000003",
                    1,
                    &["global-input"],
                    None,
                    &[],
                    &["KTABLE-SOURCE-0000000004"],
                ),
                processor: node(
                    "KTABLE-SOURCE-0000000004",
                    2,
                    &[],
                    None,
                    &["global-store"],
                    &[],
                ),
            }],
        });
        stable.topology_description_status = 3;
        stable.assignor_name = Some("sticky".into());
    }
    StreamsGroupDescribeResponse {
        throttle_time_ms: 0,
        groups: vec![stable, failed],
    }
}

#[test]
fn request_matches_kafka_clients_bytes() {
    for v in 0..=1 {
        let bytes = fixture(&format!("describe_request_v{v}"));
        assert_eq!(encode(&request(v), v), bytes, "encode v{v}");
        let decoded = StreamsGroupDescribeRequest::decode(&bytes, v).expect("decodes");
        assert_eq!(decoded.group_ids, vec!["kstate-app", "other-app"]);
        assert!(decoded.include_authorized_operations);
        assert_eq!(decoded.include_topology_description, v >= 1);
        assert_eq!(decoded, request(v));
    }
}

#[test]
fn response_matches_kafka_clients_bytes() {
    for v in 0..=1 {
        let bytes = fixture(&format!("describe_response_v{v}"));
        assert_eq!(encode(&response(v), v), bytes, "encode v{v}");
        let decoded = StreamsGroupDescribeResponse::decode(&bytes, v).expect("decodes");
        let stable = &decoded.groups[0];
        assert_eq!(stable.group_state, "stable");
        assert_eq!(stable.authorized_operations, 3576);
        let member = &stable.members[0];
        assert_eq!(member.client_host, "/10.0.0.7");
        assert_eq!(member.user_endpoint.as_ref().map(|e| e.port), Some(8080));
        assert_eq!(member.assignment.active_tasks, vec![tasks("0", &[0, 1])]);
        assert_eq!(
            member.target_assignment.standby_tasks,
            vec![tasks("0", &[3])]
        );
        let failed = &decoded.groups[1];
        assert_eq!(failed.error_code, 69);
        assert_eq!(failed.topology, None);
        assert_eq!(failed.authorized_operations, i32::MIN);
        if v >= 1 {
            let description = stable.topology_description.as_ref().expect("description");
            assert_eq!(
                description.subtopologies[0].nodes[2].sink_topic.as_deref(),
                Some("output")
            );
            assert_eq!(
                description.global_stores[0].processor.stores,
                vec!["global-store"]
            );
            assert_eq!(stable.topology_description_status, 3);
            assert_eq!(stable.assignor_name.as_deref(), Some("sticky"));
        } else {
            assert_eq!(stable.topology_description, None);
            assert_eq!(stable.assignor_name, None);
        }
        assert_eq!(decoded, response(v));
    }
}

#[test]
fn every_truncation_of_a_fixture_is_an_error() {
    for v in 0..=1 {
        let bytes = fixture(&format!("describe_response_v{v}"));
        for len in 0..bytes.len() {
            assert!(
                StreamsGroupDescribeResponse::decode(&bytes[..len], v).is_err(),
                "v{v}: prefix of {len} bytes decoded"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = fixture("describe_request_v0");
    bytes.extend_from_slice(&[0, 0]);
    let err = StreamsGroupDescribeRequest::decode(&bytes, 0).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::TrailingBytes { count: 2 });
}

fn node_strategy() -> impl Strategy<Value = TopologyDescriptionNode> {
    (
        string(),
        any::<i8>(),
        strings(),
        opt_string(),
        strings(),
        strings(),
    )
        .prop_map(
            |(name, node_type, source_topics, sink_topic, stores, successors)| {
                TopologyDescriptionNode {
                    name,
                    node_type,
                    source_topics,
                    sink_topic,
                    stores,
                    successors,
                }
            },
        )
}

fn description() -> impl Strategy<Value = TopologyDescription> {
    let sub = (string(), proptest::collection::vec(node_strategy(), 0..3)).prop_map(
        |(subtopology_id, nodes)| TopologyDescriptionSubtopology {
            subtopology_id,
            nodes,
        },
    );
    let global = (node_strategy(), node_strategy())
        .prop_map(|(source, processor)| TopologyDescriptionGlobalStore { source, processor });
    (
        proptest::collection::vec(sub, 0..2),
        proptest::collection::vec(global, 0..2),
    )
        .prop_map(|(subtopologies, global_stores)| TopologyDescription {
            subtopologies,
            global_stores,
        })
}

fn assignment() -> impl Strategy<Value = Assignment> {
    (task_list(), task_list(), task_list()).prop_map(|(a, s, w)| Assignment {
        active_tasks: a,
        standby_tasks: s,
        warmup_tasks: w,
    })
}

fn member() -> impl Strategy<Value = Member> {
    (
        (string(), any::<i32>(), opt_string(), opt_string()),
        (string(), string(), any::<i32>(), string()),
        (
            proptest::option::of(endpoint()),
            key_values(),
            task_offsets(),
            task_offsets(),
        ),
        (assignment(), assignment(), any::<bool>()),
    )
        .prop_map(|(a, b, c, d)| Member {
            member_id: a.0,
            member_epoch: a.1,
            instance_id: a.2,
            rack_id: a.3,
            client_id: b.0,
            client_host: b.1,
            topology_epoch: b.2,
            process_id: b.3,
            user_endpoint: c.0,
            client_tags: c.1,
            task_offsets: c.2,
            task_end_offsets: c.3,
            assignment: d.0,
            target_assignment: d.1,
            is_classic: d.2,
        })
}

fn group(version: i16) -> impl Strategy<Value = DescribedGroup> {
    let sub = (string(), strings(), strings(), topic_infos(), topic_infos()).prop_map(
        |(id, st, rs, sc, rsrc)| DescribedSubtopology {
            subtopology_id: id,
            source_topics: st,
            repartition_sink_topics: rs,
            state_changelog_topics: sc,
            repartition_source_topics: rsrc,
        },
    );
    let topology = (
        any::<i32>(),
        proptest::option::of(proptest::collection::vec(sub, 0..2)),
    )
        .prop_map(|(epoch, subtopologies)| DescribedTopology {
            epoch,
            subtopologies,
        });
    (
        (
            any::<i16>(),
            opt_string(),
            string(),
            string(),
            any::<i32>(),
            any::<i32>(),
        ),
        proptest::option::of(topology),
        proptest::collection::vec(member(), 0..2),
        any::<i32>(),
        (
            proptest::option::of(description()),
            any::<i8>(),
            opt_string(),
        ),
    )
        .prop_map(move |(h, topology, members, ops, v1)| DescribedGroup {
            error_code: h.0,
            error_message: h.1,
            group_id: h.2,
            group_state: h.3,
            group_epoch: h.4,
            assignment_epoch: h.5,
            topology,
            members,
            authorized_operations: ops,
            topology_description: if version >= 1 { v1.0 } else { None },
            topology_description_status: if version >= 1 { v1.1 } else { 0 },
            assignor_name: if version >= 1 { v1.2 } else { None },
        })
}

proptest! {
    #[test]
    fn request_round_trips(ids in strings(), ops in any::<bool>(), desc in any::<bool>(), v in 0i16..=1) {
        let req = StreamsGroupDescribeRequest {
            group_ids: ids,
            include_authorized_operations: ops,
            include_topology_description: v >= 1 && desc,
        };
        let bytes = encode(&req, v);
        prop_assert_eq!(StreamsGroupDescribeRequest::decode(&bytes, v).unwrap(), req);
    }

    #[test]
    fn response_round_trips(
        (v, groups) in (0i16..=1).prop_flat_map(|v| (Just(v), proptest::collection::vec(group(v), 0..3))),
        throttle in any::<i32>(),
    ) {
        let resp = StreamsGroupDescribeResponse { throttle_time_ms: throttle, groups };
        let bytes = encode(&resp, v);
        prop_assert_eq!(StreamsGroupDescribeResponse::decode(&bytes, v).unwrap(), resp);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), v in 0i16..=2) {
        let _ = StreamsGroupDescribeRequest::decode(&bytes, v);
        let _ = StreamsGroupDescribeResponse::decode(&bytes, v);
    }

    #[test]
    fn corrupted_fixture_never_panics(idx in any::<prop::sample::Index>(), byte in any::<u8>(), v in 0i16..=1) {
        let mut bytes = fixture("describe_response_v1");
        let i = idx.index(bytes.len());
        bytes[i] = byte;
        let _ = StreamsGroupDescribeResponse::decode(&bytes, v);
    }
}
