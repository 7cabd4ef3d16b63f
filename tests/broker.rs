//! The real broker is there and is the one kstate needs: it speaks the streams group protocol
//! (APIs 88 and 89), creates topics, and round-trips records per partition in order.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn api_versions(addr: &str) -> anyhow::Result<ApiVersionsResponse> {
    const VERSION: i16 = 3;
    let mut stream = TcpStream::connect(addr).await.context("connecting")?;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("kstate-test")));
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("kstate"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let mut frame = BytesMut::new();
    header.encode(&mut frame, ApiVersionsRequest::header_version(VERSION))?;
    body.encode(&mut frame, VERSION)?;
    let mut out = BytesMut::with_capacity(frame.len() + 4);
    out.put_i32(i32::try_from(frame.len())?);
    out.extend_from_slice(&frame);
    stream.write_all(&out).await?;

    let size = usize::try_from(stream.read_i32().await?)?;
    let mut buf = vec![0u8; size];
    stream.read_exact(&mut buf).await?;
    let mut buf = bytes::Bytes::from(buf);
    let header = ResponseHeader::decode(&mut buf, ApiVersionsResponse::header_version(VERSION))?;
    if header.correlation_id != 42 {
        bail!("correlation id {} instead of 42", header.correlation_id);
    }
    let response = ApiVersionsResponse::decode(&mut buf, VERSION)?;
    if buf.has_remaining() {
        bail!(
            "{} bytes left after the ApiVersions response",
            buf.remaining()
        );
    }
    Ok(response)
}

#[tokio::test]
async fn broker_lists_the_streams_group_apis() -> anyhow::Result<()> {
    let addr = common::broker();
    let response = api_versions(addr.split(',').next().unwrap_or_default()).await?;
    assert_eq!(response.error_code, 0, "ApiVersions error");
    let apis: BTreeMap<i16, (i16, i16)> = response
        .api_keys
        .iter()
        .map(|a| (a.api_key, (a.min_version, a.max_version)))
        .collect();
    for (key, name) in [(88, "StreamsGroupHeartbeat"), (89, "StreamsGroupDescribe")] {
        let (min, max) = apis
            .get(&key)
            .copied()
            .with_context(|| format!("broker does not list {name} ({key})"))?;
        assert_eq!(min, 0, "{name} min version");
        assert!(max >= 0, "{name} max version {max}");
        println!("{name}({key}): v{min}-v{max}");
    }
    let (_, fetch_max) = apis[&(ApiKey::Fetch as i16)];
    assert!(
        fetch_max >= 12,
        "a 4.x broker serves Fetch v12+, got {fetch_max}"
    );
    Ok(())
}

#[tokio::test]
async fn records_round_trip_per_partition_in_order() -> anyhow::Result<()> {
    const PARTITIONS: i32 = 4;
    const RECORDS: i64 = 10_000;
    let bootstrap = common::broker();
    let topic = common::unique("broker-roundtrip");
    common::create_topic(&bootstrap, &topic, PARTITIONS, &[]).await?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    // Timestamps an hour back: older ones would fall to the topic's 7-day time retention,
    // which may delete (and roll away) the whole log between producing and reading.
    let base_ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        - 3_600_000;
    let mut deliveries = Vec::with_capacity(RECORDS as usize);
    for i in 0..RECORDS {
        let key = format!("k{i}");
        let value = format!("v{i}");
        let partition = i32::try_from(i % i64::from(PARTITIONS))?;
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&value)
            .partition(partition)
            .timestamp(base_ts + i);
        let delivery = producer
            .send_result(record)
            .map_err(|(err, _)| anyhow::anyhow!("enqueue record {i}: {err}"))?;
        deliveries.push(delivery);
    }
    for (i, delivery) in deliveries.into_iter().enumerate() {
        delivery
            .await?
            .map_err(|(err, _)| anyhow::anyhow!("delivery of record {i}: {err}"))?;
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", common::unique("broker-roundtrip-reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;

    let mut seen: BTreeMap<i32, Vec<(String, String, i64)>> = BTreeMap::new();
    let mut total = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while total < RECORDS {
        if std::time::Instant::now() > deadline {
            bail!("read {total} of {RECORDS} records within 60 s");
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        let key = String::from_utf8(msg.key().context("record without key")?.to_vec())?;
        let value = String::from_utf8(msg.payload().context("record without value")?.to_vec())?;
        let ts = msg
            .timestamp()
            .to_millis()
            .context("record without timestamp")?;
        seen.entry(msg.partition())
            .or_default()
            .push((key, value, ts));
        total += 1;
    }

    for p in 0..PARTITIONS {
        let expected: Vec<(String, String, i64)> = (0..RECORDS)
            .filter(|i| i % i64::from(PARTITIONS) == i64::from(p))
            .map(|i| (format!("k{i}"), format!("v{i}"), base_ts + i))
            .collect();
        assert_eq!(seen.get(&p), Some(&expected), "partition {p}");
    }
    Ok(())
}
