//! Tests of the StreamsGroupHeartbeat codec: golden bytes from kafka-clients 4.4.0
//! (`tests/golden/`), totality on malformed input, and round trips.

use proptest::prelude::*;

use super::*;
use crate::protocol::common::testing::*;
use crate::protocol::error::DecodeErrorKind;

const MEMBER: &str = "5b0c7a3e-6f2d-4a8e-9b1c-0d2e3f4a5b6c";
const PROCESS: &str = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";

/// Mirrors `Golden.heartbeatJoin()`.
fn join_request() -> StreamsGroupHeartbeatRequest {
    StreamsGroupHeartbeatRequest {
        group_id: "kstate-app".into(),
        member_id: MEMBER.into(),
        member_epoch: JOIN_GROUP_MEMBER_EPOCH,
        endpoint_information_epoch: -1,
        instance_id: None,
        rack_id: Some("rack-a".into()),
        rebalance_timeout_ms: 300_000,
        topology: Some(Topology {
            epoch: 0,
            subtopologies: vec![
                Subtopology {
                    subtopology_id: "0".into(),
                    source_topics: vec!["input".into()],
                    source_topic_regex: vec![],
                    state_changelog_topics: vec![TopicInfo {
                        name: "kstate-app-sessions-changelog".into(),
                        partitions: 0,
                        replication_factor: 0,
                        topic_configs: vec![
                            KeyValue::new("cleanup.policy", "compact,delete"),
                            KeyValue::new("message.timestamp.type", "CreateTime"),
                            KeyValue::new("retention.ms", "86700000"),
                        ],
                    }],
                    repartition_sink_topics: vec!["kstate-app-rekey-repartition".into()],
                    repartition_source_topics: vec![],
                    copartition_groups: vec![],
                },
                Subtopology {
                    subtopology_id: "1".into(),
                    repartition_source_topics: vec![TopicInfo {
                        name: "kstate-app-rekey-repartition".into(),
                        partitions: 4,
                        replication_factor: 3,
                        topic_configs: vec![
                            KeyValue::new("cleanup.policy", "delete"),
                            KeyValue::new("retention.ms", "-1"),
                            KeyValue::new("segment.bytes", "52428800"),
                        ],
                    }],
                    copartition_groups: vec![CopartitionGroup {
                        source_topics: vec![],
                        source_topic_regex: vec![],
                        repartition_source_topics: vec![0],
                    }],
                    ..Subtopology::default()
                },
            ],
        }),
        active_tasks: Some(vec![]),
        standby_tasks: Some(vec![]),
        warmup_tasks: Some(vec![]),
        process_id: Some(PROCESS.into()),
        user_endpoint: Some(Endpoint {
            host: "worker-1.local".into(),
            port: 65000,
        }),
        client_tags: Some(vec![KeyValue::new("zone", "eu-west-1a")]),
        task_offsets: Some(vec![TaskOffset {
            subtopology_id: "0".into(),
            partition: 2,
            offset: 1234,
        }]),
        task_end_offsets: Some(vec![TaskOffset {
            subtopology_id: "0".into(),
            partition: 2,
            offset: 5_000_000_000,
        }]),
        shutdown_application: false,
    }
}

/// Mirrors `Golden.heartbeatAck()`.
fn ack_request() -> StreamsGroupHeartbeatRequest {
    StreamsGroupHeartbeatRequest {
        group_id: "kstate-app".into(),
        member_id: MEMBER.into(),
        member_epoch: 3,
        endpoint_information_epoch: 2,
        instance_id: Some("instance-1".into()),
        rebalance_timeout_ms: -1,
        active_tasks: Some(vec![tasks("0", &[0, 1]), tasks("1", &[3])]),
        standby_tasks: Some(vec![]),
        warmup_tasks: Some(vec![tasks("0", &[2])]),
        shutdown_application: true,
        ..StreamsGroupHeartbeatRequest::default()
    }
}

/// Mirrors `Golden.heartbeatResponseAssign(version)`.
fn assign_response(version: i16) -> StreamsGroupHeartbeatResponse {
    let mut r = StreamsGroupHeartbeatResponse {
        member_id: MEMBER.into(),
        member_epoch: 3,
        heartbeat_interval_ms: 500,
        task_offset_interval_ms: 60_000,
        status: Some(vec![
            Status {
                status_code: StatusCode::ASSIGNMENT_DELAYED,
                status_detail: "Assignment delayed due to the configured initial rebalance delay."
                    .into(),
            },
            Status {
                status_code: StatusCode(42),
                status_detail: "a status this client does not know".into(),
            },
        ]),
        active_tasks: Some(vec![tasks("0", &[0, 1, 2, 3])]),
        standby_tasks: Some(vec![]),
        warmup_tasks: Some(vec![tasks("1", &[7])]),
        endpoint_information_epoch: 4,
        partitions_by_user_endpoint: Some(vec![EndpointToPartitions {
            user_endpoint: Endpoint {
                host: "worker-1.local".into(),
                port: 65000,
            },
            active_partitions: vec![TopicPartitions {
                topic: "input".into(),
                partitions: vec![0, 1, 2, 3],
            }],
            standby_partitions: vec![],
        }]),
        ..StreamsGroupHeartbeatResponse::default()
    };
    if version == 0 {
        r.acceptable_recovery_lag_legacy = 10_000;
    } else {
        r.acceptable_recovery_lag = 10_000_000_000;
        r.topology_description_required = true;
    }
    r
}

/// Mirrors `Golden.heartbeatResponseUnchanged()` minus its unknown tagged fields.
fn unchanged_response() -> StreamsGroupHeartbeatResponse {
    StreamsGroupHeartbeatResponse {
        throttle_time_ms: 25,
        error_code: 110,
        error_message: Some("The member epoch is fenced by the group coordinator.".into()),
        member_id: MEMBER.into(),
        member_epoch: -1,
        heartbeat_interval_ms: 5000,
        task_offset_interval_ms: 60_000,
        endpoint_information_epoch: 0,
        ..StreamsGroupHeartbeatResponse::default()
    }
}

fn fixture(name: &str) -> Vec<u8> {
    hex(match name {
        "heartbeat_request_join_v0" => {
            include_str!("../../tests/golden/fixtures/heartbeat_request_join_v0.hex")
        }
        "heartbeat_request_join_v1" => {
            include_str!("../../tests/golden/fixtures/heartbeat_request_join_v1.hex")
        }
        "heartbeat_request_ack_v0" => {
            include_str!("../../tests/golden/fixtures/heartbeat_request_ack_v0.hex")
        }
        "heartbeat_request_ack_v1" => {
            include_str!("../../tests/golden/fixtures/heartbeat_request_ack_v1.hex")
        }
        "heartbeat_response_assign_v0" => {
            include_str!("../../tests/golden/fixtures/heartbeat_response_assign_v0.hex")
        }
        "heartbeat_response_assign_v1" => {
            include_str!("../../tests/golden/fixtures/heartbeat_response_assign_v1.hex")
        }
        "heartbeat_response_unchanged_v0" => {
            include_str!("../../tests/golden/fixtures/heartbeat_response_unchanged_v0.hex")
        }
        "heartbeat_response_unchanged_v1" => {
            include_str!("../../tests/golden/fixtures/heartbeat_response_unchanged_v1.hex")
        }
        other => panic!("no fixture {other}"),
    })
}

#[test]
fn join_request_matches_kafka_clients_bytes() {
    for v in 0..=1 {
        let bytes = fixture(&format!("heartbeat_request_join_v{v}"));
        assert_eq!(encode(&join_request(), v), bytes, "encode v{v}");
        let decoded = StreamsGroupHeartbeatRequest::decode(&bytes, v).expect("decodes");
        assert_eq!(decoded.member_epoch, 0);
        assert_eq!(decoded.instance_id, None);
        let topology = decoded.topology.as_ref().expect("topology present");
        let changelog = &topology.subtopologies[0].state_changelog_topics[0];
        assert_eq!(changelog.name, "kstate-app-sessions-changelog");
        assert_eq!(changelog.partitions, 0);
        assert_eq!(
            changelog.topic_configs[0],
            KeyValue::new("cleanup.policy", "compact,delete")
        );
        assert_eq!(
            topology.subtopologies[1].copartition_groups[0].repartition_source_topics,
            vec![0]
        );
        assert_eq!(decoded.active_tasks, Some(vec![]));
        assert_eq!(decoded.user_endpoint.as_ref().map(|e| e.port), Some(65000));
        assert_eq!(decoded, join_request());
    }
}

#[test]
fn ack_request_matches_kafka_clients_bytes() {
    for v in 0..=1 {
        let bytes = fixture(&format!("heartbeat_request_ack_v{v}"));
        assert_eq!(encode(&ack_request(), v), bytes, "encode v{v}");
        let decoded = StreamsGroupHeartbeatRequest::decode(&bytes, v).expect("decodes");
        assert_eq!(decoded.topology, None);
        assert_eq!(decoded.rack_id, None);
        assert_eq!(decoded.process_id, None);
        assert_eq!(decoded.client_tags, None);
        assert_eq!(decoded.task_offsets, None);
        assert_eq!(decoded.standby_tasks, Some(vec![]));
        assert!(decoded.shutdown_application);
        assert_eq!(decoded, ack_request());
    }
}

#[test]
fn request_v1_is_byte_identical_to_v0() {
    assert_eq!(encode(&join_request(), 0), encode(&join_request(), 1));
}

#[test]
fn assign_response_matches_kafka_clients_bytes() {
    for v in 0..=1 {
        let bytes = fixture(&format!("heartbeat_response_assign_v{v}"));
        let expected = assign_response(v);
        assert_eq!(encode(&expected, v), bytes, "encode v{v}");
        let decoded = StreamsGroupHeartbeatResponse::decode(&bytes, v).expect("decodes");
        assert_eq!(decoded.heartbeat_interval_ms, 500);
        assert_eq!(
            decoded.statuses()[0].status_code,
            StatusCode::ASSIGNMENT_DELAYED
        );
        assert!(decoded.statuses()[0].status_code.is_group_not_ready());
        assert_eq!(decoded.statuses()[1].status_code.name(), None);
        match decoded.task_lists() {
            TaskLists::Full {
                active,
                standby,
                warmup,
            } => {
                assert_eq!(active, &[tasks("0", &[0, 1, 2, 3])]);
                assert!(standby.is_empty());
                assert_eq!(warmup, &[tasks("1", &[7])]);
            }
            other => panic!("expected a full assignment, got {other:?}"),
        }
        if v == 0 {
            assert_eq!(decoded.acceptable_recovery_lag_legacy, 10_000);
            assert_eq!(decoded.acceptable_recovery_lag, -1);
            assert!(!decoded.topology_description_required);
            assert_eq!(decoded.effective_acceptable_recovery_lag(), 10_000);
        } else {
            assert_eq!(decoded.acceptable_recovery_lag_legacy, 0);
            assert_eq!(decoded.acceptable_recovery_lag, 10_000_000_000);
            assert!(decoded.topology_description_required);
            assert_eq!(decoded.effective_acceptable_recovery_lag(), 10_000_000_000);
        }
        assert_eq!(decoded, expected);
    }
}

#[test]
fn unchanged_response_decodes_nulls_and_skips_unknown_tagged_fields() {
    // The fixture ends with a tagged-field section holding two unknown fields: count 2,
    // tag 7 (3 bytes), tag 300 (empty). That is 9 bytes where our encoding has one 0.
    const TAGGED: [u8; 9] = [0x02, 0x07, 0x03, 0x01, 0x02, 0x03, 0xac, 0x02, 0x00];
    for v in 0..=1 {
        let bytes = fixture(&format!("heartbeat_response_unchanged_v{v}"));
        let decoded = StreamsGroupHeartbeatResponse::decode(&bytes, v).expect("decodes");
        assert_eq!(decoded.error_code, 110);
        assert_eq!(decoded.status, None);
        assert_eq!(decoded.task_lists(), TaskLists::Unchanged);
        assert_eq!(decoded.partitions_by_user_endpoint, None);
        assert_eq!(decoded, unchanged_response());

        let (body, tagged) = bytes.split_at(bytes.len() - TAGGED.len());
        assert_eq!(tagged, TAGGED);
        let mut without_tags = body.to_vec();
        without_tags.push(0);
        assert_eq!(encode(&unchanged_response(), v), without_tags);
    }
}

#[test]
fn mixed_task_lists_are_reported() {
    let r = StreamsGroupHeartbeatResponse {
        active_tasks: Some(vec![]),
        ..StreamsGroupHeartbeatResponse::default()
    };
    assert_eq!(r.task_lists(), TaskLists::Mixed);
}

#[test]
fn every_truncation_of_a_fixture_is_an_error() {
    let cases: [(&str, i16, bool); 4] = [
        ("heartbeat_request_join_v0", 0, true),
        ("heartbeat_request_ack_v1", 1, true),
        ("heartbeat_response_assign_v0", 0, false),
        ("heartbeat_response_assign_v1", 1, false),
    ];
    for (name, v, is_request) in cases {
        let bytes = fixture(name);
        for len in 0..bytes.len() {
            let err = if is_request {
                StreamsGroupHeartbeatRequest::decode(&bytes[..len], v).err()
            } else {
                StreamsGroupHeartbeatResponse::decode(&bytes[..len], v).err()
            };
            let err = err.unwrap_or_else(|| panic!("{name}: prefix of {len} bytes decoded"));
            assert!(!err.field.is_empty());
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = fixture("heartbeat_response_assign_v1");
    bytes.push(0);
    let err = StreamsGroupHeartbeatResponse::decode(&bytes, 1).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::TrailingBytes { count: 1 });
    assert_eq!(err.api, "StreamsGroupHeartbeatResponse");
}

#[test]
fn truncated_input_names_the_field() {
    let bytes = fixture("heartbeat_response_assign_v1");
    // ThrottleTimeMs (4) + ErrorCode (2) + null ErrorMessage (1) is 7 bytes; cut in MemberId.
    let err = StreamsGroupHeartbeatResponse::decode(&bytes[..9], 1).unwrap_err();
    assert_eq!(err.field, "MemberId");
    assert_eq!(err.version, 1);
    assert!(matches!(err.kind, DecodeErrorKind::Truncated { .. }));
}

#[test]
fn unsupported_version_is_rejected() {
    let bytes = fixture("heartbeat_response_assign_v1");
    let err = StreamsGroupHeartbeatResponse::decode(&bytes, 2).unwrap_err();
    assert_eq!(
        err.kind,
        DecodeErrorKind::UnsupportedVersion { min: 0, max: 1 }
    );
}

#[test]
fn status_code_debug_names_unknown_codes() {
    assert_eq!(
        format!("{:?}", StatusCode::MISSING_INTERNAL_TOPICS),
        "MISSING_INTERNAL_TOPICS(3)"
    );
    assert_eq!(format!("{:?}", StatusCode(-7)), "UNKNOWN(-7)");
    assert!(!StatusCode::STALE_TOPOLOGY.is_group_not_ready());
}

fn topology() -> impl Strategy<Value = Topology> {
    let i16s = || proptest::collection::vec(any::<i16>(), 0..3);
    let group = (i16s(), i16s(), i16s()).prop_map(|(a, b, c)| CopartitionGroup {
        source_topics: a,
        source_topic_regex: b,
        repartition_source_topics: c,
    });
    let sub = (
        string(),
        strings(),
        strings(),
        topic_infos(),
        strings(),
        topic_infos(),
        proptest::collection::vec(group, 0..2),
    )
        .prop_map(|(id, st, sr, sc, rs, rsrc, cg)| Subtopology {
            subtopology_id: id,
            source_topics: st,
            source_topic_regex: sr,
            state_changelog_topics: sc,
            repartition_sink_topics: rs,
            repartition_source_topics: rsrc,
            copartition_groups: cg,
        });
    (any::<i32>(), proptest::collection::vec(sub, 0..3)).prop_map(|(epoch, subtopologies)| {
        Topology {
            epoch,
            subtopologies,
        }
    })
}

fn request() -> impl Strategy<Value = StreamsGroupHeartbeatRequest> {
    (
        (string(), string(), any::<i32>(), any::<i32>()),
        (opt_string(), opt_string(), any::<i32>()),
        proptest::option::of(topology()),
        (opt_task_list(), opt_task_list(), opt_task_list()),
        (opt_string(), proptest::option::of(endpoint())),
        (
            proptest::option::of(key_values()),
            proptest::option::of(task_offsets()),
            proptest::option::of(task_offsets()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(ids, opt, topology, t, pe, tail)| StreamsGroupHeartbeatRequest {
                group_id: ids.0,
                member_id: ids.1,
                member_epoch: ids.2,
                endpoint_information_epoch: ids.3,
                instance_id: opt.0,
                rack_id: opt.1,
                rebalance_timeout_ms: opt.2,
                topology,
                active_tasks: t.0,
                standby_tasks: t.1,
                warmup_tasks: t.2,
                process_id: pe.0,
                user_endpoint: pe.1,
                client_tags: tail.0,
                task_offsets: tail.1,
                task_end_offsets: tail.2,
                shutdown_application: tail.3,
            },
        )
}

fn response(version: i16) -> impl Strategy<Value = StreamsGroupHeartbeatResponse> {
    let status = (any::<i8>(), string()).prop_map(|(c, d)| Status {
        status_code: StatusCode(c),
        status_detail: d,
    });
    let tps = || {
        proptest::collection::vec(
            (string(), proptest::collection::vec(any::<i32>(), 0..3))
                .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions }),
            0..2,
        )
    };
    let e2p = (endpoint(), tps(), tps()).prop_map(|(e, a, s)| EndpointToPartitions {
        user_endpoint: e,
        active_partitions: a,
        standby_partitions: s,
    });
    (
        (
            any::<i32>(),
            any::<i16>(),
            opt_string(),
            string(),
            any::<i32>(),
        ),
        (any::<i32>(), any::<i32>(), any::<i32>(), any::<i64>()),
        proptest::option::of(proptest::collection::vec(status, 0..3)),
        (opt_task_list(), opt_task_list(), opt_task_list()),
        (any::<bool>(), any::<i32>()),
        proptest::option::of(proptest::collection::vec(e2p, 0..2)),
    )
        .prop_map(
            move |(head, nums, status, t, flags, e2p)| StreamsGroupHeartbeatResponse {
                throttle_time_ms: head.0,
                error_code: head.1,
                error_message: head.2,
                member_id: head.3,
                member_epoch: head.4,
                heartbeat_interval_ms: nums.0,
                acceptable_recovery_lag_legacy: if version == 0 { nums.1 } else { 0 },
                task_offset_interval_ms: nums.2,
                acceptable_recovery_lag: if version == 0 { -1 } else { nums.3 },
                status,
                active_tasks: t.0,
                standby_tasks: t.1,
                warmup_tasks: t.2,
                topology_description_required: version >= 1 && flags.0,
                endpoint_information_epoch: flags.1,
                partitions_by_user_endpoint: e2p,
            },
        )
}

proptest! {
    #[test]
    fn request_round_trips(req in request(), v in 0i16..=1) {
        let bytes = encode(&req, v);
        prop_assert_eq!(StreamsGroupHeartbeatRequest::decode(&bytes, v).unwrap(), req);
    }

    #[test]
    fn response_v0_round_trips(resp in response(0)) {
        let bytes = encode(&resp, 0);
        prop_assert_eq!(StreamsGroupHeartbeatResponse::decode(&bytes, 0).unwrap(), resp);
    }

    #[test]
    fn response_v1_round_trips(resp in response(1)) {
        let bytes = encode(&resp, 1);
        prop_assert_eq!(StreamsGroupHeartbeatResponse::decode(&bytes, 1).unwrap(), resp);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), v in 0i16..=2) {
        let _ = StreamsGroupHeartbeatRequest::decode(&bytes, v);
        let _ = StreamsGroupHeartbeatResponse::decode(&bytes, v);
    }

    #[test]
    fn corrupted_fixtures_never_panic(
        idx in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        v in 0i16..=1,
    ) {
        for name in ["heartbeat_request_join_v1", "heartbeat_response_assign_v1"] {
            let mut bytes = fixture(name);
            let i = idx.index(bytes.len());
            bytes[i] = byte;
            let _ = StreamsGroupHeartbeatRequest::decode(&bytes, v);
            let _ = StreamsGroupHeartbeatResponse::decode(&bytes, v);
        }
    }
}
