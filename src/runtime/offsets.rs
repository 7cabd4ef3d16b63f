//! Input offsets of a streams group: committed with the member id and member epoch (a
//! streams group rejects librdkafka's member-less commit) and fetched when a task starts.
//! Owns finding the group coordinator and talking to it through the protocol layer's
//! connection, and the retry policy: a moved or loading coordinator, a dropped connection and
//! `UNSTABLE_OFFSET_COMMIT` (a peer's transaction still open) are retried with a doubling
//! backoff until a deadline (`task.timeout.ms`), then fail. Knows nothing of tasks or stores.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::protocol::{BrokerConnection, CommitOffset, ConnectionConfig, ProtocolError};

/// Kafka error codes that mean "ask for the coordinator again".
const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
/// A transaction holding offsets of the partition is still open (fetch under exactly-once).
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
/// First retry delay (Java's `retry.backoff.ms`) and its doubling bound.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Whether an offset commit or fetch failing with `code` is worth another attempt.
pub fn retriable(code: i16) -> bool {
    matches!(
        code,
        NOT_COORDINATOR
            | COORDINATOR_NOT_AVAILABLE
            | COORDINATOR_LOAD_IN_PROGRESS
            | UNSTABLE_OFFSET_COMMIT
    )
}

/// A failed request worth another attempt: the connection failed or timed out, or the broker
/// answered with a retriable code. Any other broker error is final.
fn transient(e: &OffsetsError) -> bool {
    match e {
        OffsetsError::Protocol { source, .. } => source.broker_code().is_none_or(retriable),
        _ => false,
    }
}

/// An error and its sources, `: `-separated (for [`OffsetsError::TimedOut`]'s last failure,
/// which is a message rather than a source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Attempts bounded by a deadline: the delay before attempt `n + 1` is 100 ms doubled `n - 1`
/// times, at most 1 s, and never past the deadline.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    deadline: Instant,
    attempts: u32,
}

impl Retry {
    pub fn new(now: Instant, timeout: Duration) -> Self {
        Self {
            deadline: now + timeout,
            attempts: 0,
        }
    }

    /// Counts a failed attempt; the delay to wait before the next one, or `None` once the
    /// deadline has passed.
    pub fn failed(&mut self, now: Instant) -> Option<Duration> {
        let delay = BACKOFF_INITIAL
            .saturating_mul(1 << self.attempts.min(16))
            .min(BACKOFF_MAX);
        self.attempts += 1;
        (now < self.deadline).then(|| delay.min(self.deadline - now))
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

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
    #[error("{what} for group {group} still failed after {attempts} attempts within {timeout:?} (task.timeout.ms): {last}")]
    TimedOut {
        group: String,
        what: &'static str,
        attempts: u32,
        timeout: Duration,
        last: String,
    },
    #[error("describing group {group} failed with error code {code}")]
    DescribeRefused { group: String, code: i16 },
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
    timeout: Duration,
}

impl CoordinatorOffsets {
    /// Retriable failures are retried for up to `timeout`.
    pub fn new(
        group: impl Into<String>,
        bootstrap: &str,
        config: ConnectionConfig,
        timeout: Duration,
    ) -> Self {
        Self {
            group: group.into(),
            bootstrap: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            config,
            coordinator: None,
            timeout,
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

    /// The process ids of the streams group's members (StreamsGroupDescribe); empty when
    /// the group does not exist.
    pub async fn process_ids(&mut self) -> Result<BTreeSet<String>, OffsetsError> {
        let mut retry = Retry::new(Instant::now(), self.timeout);
        loop {
            let group = self.group.clone();
            let result = match self.connection().await {
                Ok(conn) => conn
                    .describe(std::slice::from_ref(&group), false)
                    .await
                    .map_err(|e| self.err(e)),
                Err(e) => Err(e),
            };
            match result {
                Ok(response) => match response.groups.into_iter().find(|g| g.group_id == group) {
                    Some(g) if g.error_code == 0 => {
                        return Ok(g.members.into_iter().map(|m| m.process_id).collect())
                    }
                    // GROUP_ID_NOT_FOUND: nobody is in the group.
                    Some(g) if g.error_code == 69 => return Ok(BTreeSet::new()),
                    Some(g) if retriable(g.error_code) => {
                        let last = format!("error code {}", g.error_code);
                        self.backoff(&mut retry, "group describe", last).await?;
                    }
                    Some(g) => {
                        return Err(OffsetsError::DescribeRefused {
                            group,
                            code: g.error_code,
                        })
                    }
                    None => return Ok(BTreeSet::new()),
                },
                Err(e) if transient(&e) => {
                    self.backoff(&mut retry, "group describe", chain(&e))
                        .await?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a failed attempt: waits the backoff and forgets the coordinator, or gives up.
    async fn backoff(
        &mut self,
        retry: &mut Retry,
        what: &'static str,
        last: String,
    ) -> Result<(), OffsetsError> {
        match retry.failed(Instant::now()) {
            Some(delay) => {
                tracing::warn!(what, error = %last, attempt = retry.attempts(), retry_in = ?delay, "offset request failed; finding the coordinator again");
                self.coordinator = None;
                tokio::time::sleep(delay).await;
                Ok(())
            }
            None => Err(OffsetsError::TimedOut {
                group: self.group.clone(),
                what,
                attempts: retry.attempts(),
                timeout: self.timeout,
                last,
            }),
        }
    }
}

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
        let mut retry = Retry::new(Instant::now(), self.timeout);
        loop {
            let group = self.group.clone();
            let result = match self.connection().await {
                Ok(conn) => conn
                    .offset_commit(&group, member_id, member_epoch, &request)
                    .await
                    .map_err(|e| self.err(e)),
                Err(e) => Err(e),
            };
            let results = match result {
                Ok(r) => r,
                Err(e) if transient(&e) => {
                    self.backoff(&mut retry, "offset commit", chain(&e)).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match results.into_iter().find(|r| r.error_code != 0) {
                None => return Ok(()),
                Some(r) if retriable(r.error_code) => {
                    let last = format!("{}/{}: error code {}", r.topic, r.partition, r.error_code);
                    self.backoff(&mut retry, "offset commit", last).await?;
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
        let mut retry = Retry::new(Instant::now(), self.timeout);
        let fetched = loop {
            let group = self.group.clone();
            let result = match self.connection().await {
                Ok(conn) => conn
                    .offset_fetch(&group, partitions)
                    .await
                    .map_err(|e| self.err(e)),
                Err(e) => Err(e),
            };
            match result {
                Ok(f) => match f.iter().find(|f| retriable(f.error_code)) {
                    Some(unstable) => {
                        let last = format!(
                            "{}/{}: error code {}",
                            unstable.topic, unstable.partition, unstable.error_code
                        );
                        self.backoff(&mut retry, "offset fetch", last).await?;
                    }
                    None => break f,
                },
                Err(e) if transient(&e) => {
                    self.backoff(&mut retry, "offset fetch", chain(&e)).await?
                }
                Err(e) => return Err(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_a_second_and_stop_at_the_deadline() {
        let start = Instant::now();
        let mut retry = Retry::new(start, Duration::from_millis(2_500));
        let delays: Vec<Option<Duration>> = [0, 100, 300, 700, 1_500, 2_300, 2_500]
            .iter()
            .map(|&ms| retry.failed(start + Duration::from_millis(ms)))
            .collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            delays,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(200), None],
            "doubling, capped at 1 s and at the deadline, then given up"
        );
        assert_eq!(retry.attempts(), 7);
    }

    #[test]
    fn coordinator_moves_and_open_transactions_are_retried_a_refusal_is_not() {
        for code in [14, 15, 16, 88] {
            assert!(retriable(code), "code {code}");
        }
        for code in [22, 25, 110, 113, 29] {
            assert!(!retriable(code), "code {code}");
        }
    }
}
