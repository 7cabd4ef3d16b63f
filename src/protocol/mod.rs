//! The wire layer: codecs for the streams group APIs that no Rust library speaks
//! (StreamsGroupHeartbeat, API 88, and StreamsGroupDescribe, API 89, versions 0 and 1), and a
//! broker [`connection::BrokerConnection`] that frames requests, checks correlation ids,
//! negotiates versions, secures itself with TLS and SASL, and offers one typed call per API
//! kstate uses.
//!
//! Encoding cannot fail; decoding is total and reports a [`DecodeError`] naming the message,
//! version and field. The codecs are checked against golden bytes produced by Apache Kafka's
//! own generated classes (`tests/golden/`). This layer knows nothing of tasks, stores or
//! membership states: it moves messages, and the layers above decide what they mean.

pub mod common;
pub mod config;
pub mod connection;
pub mod error;
mod group_apis;
mod sasl;
pub mod scram;
pub mod secret;
pub mod streams_group_describe;
pub mod streams_group_heartbeat;
mod tls;
pub mod wire;

pub use common::{Endpoint, KeyValue, TaskIds, TaskOffset, TopicInfo};
pub use config::{ConnectionConfig, SaslConfig, SecurityProtocol, TlsConfig};
pub use connection::{BrokerConnection, VersionRange};
pub use error::{DecodeError, DecodeErrorKind, ProtocolError};
pub use group_apis::{CommitOffset, Coordinator, FetchedOffset, PartitionCommitResult};
pub use secret::{KafkaProperties, Secret};
pub use streams_group_describe::{
    Assignment, DescribedGroup, DescribedSubtopology, DescribedTopology, Member,
    StreamsGroupDescribeRequest, StreamsGroupDescribeResponse, TopologyDescription,
    TopologyDescriptionGlobalStore, TopologyDescriptionNode, TopologyDescriptionSubtopology,
};
pub use streams_group_heartbeat::{
    CopartitionGroup, EndpointToPartitions, Status, StatusCode, StreamsGroupHeartbeatRequest,
    StreamsGroupHeartbeatResponse, Subtopology, TaskLists, TopicPartitions, Topology,
};
pub use wire::WireMessage;
