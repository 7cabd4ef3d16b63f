//! Input offsets of a streams group: committed with the member id and member epoch (a
//! streams group rejects librdkafka's member-less commit) and fetched when a task starts.
//! Owns finding the group coordinator and talking to it through the protocol layer's
//! connection; knows nothing of tasks or stores.

use std::time::Duration;

use crate::protocol::{BrokerConnection, CommitOffset, ConnectionConfig, ProtocolError};

/// Kafka error codes that mean "ask for the coordinator again".
const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("offset request to the coordinator of group {group}")]
    Protocol {
        group: String,
        #[source]
        source: ProtocolError,
    },
    #[error("committing {topic}/{partition} for group {group} was refused with error code {code}")]
    CommitRefused {
        group: String,
        topic: String,
        partition: i32,
        code: i16,
    },
    #[error("fetching the committed offset of {topic}/{partition} for group {group} failed with error code {code}")]
    FetchRefused {
        group: String,
        topic: String,
        partition: i32,
        code: i16,
    },
}

/// Commits and fetches input offsets. The runtime is written against this trait so its unit
/// tests can run without a broker.
pub trait OffsetCommitter {
    /// Commits `offsets` (`(topic, partition, next offset)`) as `member_id` at `member_epoch`.
    fn commit(
        &mut self,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(String, i32, i64)],
    ) -> impl std::future::Future<Output = Result<(), OffsetsError>> + Send;

    /// The committed next offset of each partition, `None` where nothing is committed.
    fn fetch(
        &mut self,
        partitions: &[(String, i32)],
    ) -> impl std::future::Future<Output = Result<Vec<Option<i64>>, OffsetsError>> + Send;
}

/// [`OffsetCommitter`] over a connection to the group coordinator, found through the
/// bootstrap brokers and found again when the coordinator moves.
pub struct CoordinatorOffsets {
    group: String,
    bootstrap: Vec<String>,
    config: ConnectionConfig,
    coordinator: Option<BrokerConnection>,
}

impl CoordinatorOffsets {
    pub fn new(group: impl Into<String>, bootstrap: &str, config: ConnectionConfig) -> Self {
        Self {
            group: group.into(),
            bootstrap: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            config,
            coordinator: None,
        }
    }

    fn err(&self, source: ProtocolError) -> OffsetsError {
        OffsetsError::Protocol {
            group: self.group.clone(),
            source,
        }
    }

    /// Finds the coordinator through the bootstrap brokers and connects to it.
    async fn discover(&self) -> Result<BrokerConnection, OffsetsError> {
        let mut last = ProtocolError::NotConnected {
            addr: self.bootstrap.join(","),
        };
        for addr in &self.bootstrap {
            let found = async {
                let mut bootstrap =
                    BrokerConnection::connect(addr.clone(), self.config.clone()).await?;
                let c = bootstrap.find_coordinator(&self.group).await?;
                BrokerConnection::connect(c.addr(), self.config.clone()).await
            };
            match found.await {
                Ok(conn) => return Ok(conn),
                Err(e) => last = e,
            }
        }
        Err(self.err(last))
    }

    async fn connection(&mut self) -> Result<&mut BrokerConnection, OffsetsError> {
        if !self.coordinator.as_ref().is_some_and(|c| c.is_connected()) {
            self.coordinator = Some(self.discover().await?);
        }
        let addr = self.bootstrap.join(",");
        let group = self.group.clone();
        self.coordinator.as_mut().ok_or(OffsetsError::Protocol {
            group,
            source: ProtocolError::NotConnected { addr },
        })
    }

    fn retriable(code: i16) -> bool {
        matches!(
            code,
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS
        )
    }
}

const ATTEMPTS: usize = 5;
const BACKOFF: Duration = Duration::from_millis(200);

impl OffsetCommitter for CoordinatorOffsets {
    async fn commit(
        &mut self,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), OffsetsError> {
        let request: Vec<CommitOffset> = offsets
            .iter()
            .map(|(topic, partition, offset)| CommitOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                leader_epoch: -1,
                metadata: None,
            })
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let group = self.group.clone();
            let result = self
                .connection()
                .await?
                .offset_commit(&group, member_id, member_epoch, &request)
                .await;
            let results = match result {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        attempt,
                        "offset commit failed; finding the coordinator again"
                    );
                    self.coordinator = None;
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
                Err(e) => return Err(self.err(e)),
            };
            match results.into_iter().find(|r| r.error_code != 0) {
                None => return Ok(()),
                Some(r) if Self::retriable(r.error_code) && attempt < ATTEMPTS => {
                    self.coordinator = None;
                    tokio::time::sleep(BACKOFF).await;
                }
                Some(r) => {
                    return Err(OffsetsError::CommitRefused {
                        group,
                        topic: r.topic,
                        partition: r.partition,
                        code: r.error_code,
                    })
                }
            }
        }
    }

    async fn fetch(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<i64>>, OffsetsError> {
        let mut attempt = 0;
        let fetched = loop {
            attempt += 1;
            let group = self.group.clone();
            match self
                .connection()
                .await?
                .offset_fetch(&group, partitions)
                .await
            {
                Ok(f) => break f,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        attempt,
                        "offset fetch failed; finding the coordinator again"
                    );
                    self.coordinator = None;
                    tokio::time::sleep(BACKOFF).await;
                }
                Err(e) => return Err(self.err(e)),
            }
        };
        partitions
            .iter()
            .map(|(topic, partition)| {
                match fetched
                    .iter()
                    .find(|f| &f.topic == topic && f.partition == *partition)
                {
                    Some(f) if f.error_code != 0 => Err(OffsetsError::FetchRefused {
                        group: self.group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        code: f.error_code,
                    }),
                    Some(f) if f.offset >= 0 => Ok(Some(f.offset)),
                    _ => Ok(None),
                }
            })
            .collect()
    }
}
