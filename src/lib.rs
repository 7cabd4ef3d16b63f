//! Session-windowed state for Kafka stream processing, compatible with Apache Kafka Streams.
//!
//! kstate keeps per-key **session windows** (records of a key closer than an inactivity gap
//! form one session) in a write-back cache, writes every change to a **compacted changelog
//! topic**, and **restores** that state on whichever worker Apache Kafka's streams group
//! protocol (KIP-1071) assigns the task to. It writes the bytes Kafka Streams writes for
//! `groupByKey().windowedBy(SessionWindows…).aggregate(…)`, so a Java Kafka Streams
//! application and a kstate worker can read each other's changelogs and outputs.
//!
//! There are two ways in:
//!
//! - **Embed the session store** in your own loop: a [`SessionStore`] and a
//!   [`SessionWindowAggregate`] give you Kafka Streams' session semantics (merges, grace,
//!   late drops, retention) with no Kafka at all.
//! - **Run a [`Worker`]**: it joins a streams group, restores its tasks from their
//!   changelogs, aggregates the input topic and writes every session update to the output
//!   topic, at-least-once or exactly-once. The `kstate-worker` binary is this worker with the
//!   session count and a TOML configuration.
//!
//! # A session store in your own loop
//!
//! Sum amounts per user and session, then flush: the flush hands out every session that
//! changed (with its old and new aggregate) and writes it through to the store below the
//! cache, exactly what a worker would produce to the changelog and the output topic.
//!
//! ```
//! use std::time::Duration;
//! use kstate::{
//!     CacheBudget, InMemoryBytesStore, LongSerde, Outcome, RecordContext, SessionStore,
//!     SessionWindowAggregate, SessionWindows, StringSerde,
//! };
//!
//! // Sessions close after 30 s without a record; records up to 10 s late still count.
//! let windows = SessionWindows::new(Duration::from_secs(30), Duration::from_secs(10), None)?;
//! let mut store = SessionStore::for_windows(
//!     "amounts",
//!     CacheBudget::new(1 << 20),
//!     InMemoryBytesStore::new(),
//!     &windows,
//!     StringSerde,
//!     LongSerde,
//! )?;
//! let mut sum = SessionWindowAggregate::new(
//!     windows,
//!     || 0i64,
//!     |_user: &String, amount: &i64, total: i64| total + amount,
//!     |_user: &String, a: i64, b: i64| a + b,
//! );
//!
//! // (user, timestamp ms, amount): alice's two records are 19 s apart, one session.
//! let records = [("alice", 1_000, 5), ("bob", 3_000, 1), ("alice", 20_000, 7)];
//! for (offset, (user, timestamp, amount)) in records.into_iter().enumerate() {
//!     let context = RecordContext::new("payments", 0, offset as i64, timestamp);
//!     let outcome = sum.process(&mut store, Some(&user.to_string()), &amount, context)?;
//!     assert!(matches!(outcome, Outcome::Aggregated { .. }));
//! }
//! // carol's record moves stream time to 125 s: sessions ending before
//! // 125 - 10 (grace) - 30 (gap) = 85 s are closed, so a record for bob's session is late.
//! let carol = RecordContext::new("payments", 0, 3, 125_000);
//! sum.process(&mut store, Some(&"carol".to_string()), &1, carol)?;
//! let outcome = sum.process(
//!     &mut store,
//!     Some(&"bob".to_string()),
//!     &1,
//!     RecordContext::new("payments", 0, 4, 4_000),
//! )?;
//! assert!(matches!(outcome, Outcome::DroppedLate { .. }));
//!
//! let changes = store.flush()?;
//! let alice = changes.iter().find(|c| c.key.key == "alice").expect("alice changed");
//! assert_eq!((alice.key.start, alice.key.end), (1_000, 20_000));
//! assert_eq!(alice.change.new, Some(12));
//! assert_eq!(store.fetch_session(&"alice".to_string(), 1_000, 20_000)?, Some(12));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # A worker with a custom aggregation
//!
//! The same sum as a streams-group worker: input values are i64 big-endian (Java's
//! `LongSerde`), output keys are `key ‖ end ‖ start` (Java's `SessionWindowedSerde<String>`).
//! [`Worker::run`] returns after the shutdown future resolves and the worker has committed,
//! closed its tasks and left the group.
//!
//! ```no_run
//! use std::time::Duration;
//! use kstate::{LongSerde, ProcessingGuarantee, SessionWindows, Worker};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = Worker::builder()
//!     .application_id("payments-per-session")
//!     .bootstrap_servers("127.0.0.1:9092")
//!     .input_topic("payments")
//!     .output_topic("payment-sessions")
//!     .store_name("amounts")
//!     .windows(SessionWindows::new(Duration::from_secs(300), Duration::from_secs(60), None)?)
//!     .processing_guarantee(ProcessingGuarantee::ExactlyOnceV2)
//!     .aggregate(
//!         LongSerde,
//!         LongSerde,
//!         || 0i64,
//!         |_user: &String, amount: &i64, total: i64| total + amount,
//!         |_user: &String, a: i64, b: i64| a + b,
//!     )
//!     .build()?;
//! // What /readyz and /status serve: readiness, tasks, restore progress, lag.
//! let status = worker.status();
//! tokio::spawn(async move {
//!     loop {
//!         tokio::time::sleep(Duration::from_secs(10)).await;
//!         println!("ready: {}", status.snapshot().ready());
//!     }
//! });
//! worker
//!     .run(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What is where
//!
//! - Session semantics: [`SessionWindows`], [`SessionWindowAggregate`], [`SessionStore`],
//!   the aggregation traits [`Initializer`], [`Aggregator`], [`Merger`] (closures implement
//!   them) and the built-in [`Count`] and [`Sum`]; serdes implement [`Serde`].
//! - Running: [`Worker`] and [`WorkerBuilder`], configured in code or from a TOML file
//!   ([`WorkerConfig::load`], every key documented in `config/worker.toml`), with the
//!   policies [`ProcessingGuarantee`], [`DeserializationPolicy`] and [`CorruptRecordPolicy`].
//! - Watching: [`StatusBoard`] (what `/readyz` and `/status` serve) and the Prometheus
//!   metrics on `metrics.addr`.
//!
//! The design (layers, byte formats, session rules, the commit cycle, crash semantics and the
//! KIP-1071 facts that bite) is in `docs/DESIGN.md` in the repository. The layer modules are
//! public for the integration tests and tools but hidden from this documentation: they are
//! not part of the supported API.
#![warn(missing_docs)]

#[doc(hidden)]
pub mod changelog;
#[doc(hidden)]
pub mod membership;
#[doc(hidden)]
pub mod protocol;
#[doc(hidden)]
pub mod runtime;
#[doc(hidden)]
pub mod session;
#[doc(hidden)]
pub mod store;
#[doc(hidden)]
pub mod worker;

pub use changelog::CorruptRecordPolicy;
pub use runtime::status::{
    MemberStatus, RestoreStatus, StatusBoard, StatusSnapshot, TaskKind, TaskPhase, TaskStatus,
};
pub use session::{
    AggregateMetrics, Aggregator, Change, Count, Initializer, LongSerde, Merger, Outcome, Serde,
    SerdeError, Session, SessionChange, SessionError, SessionStore, SessionWindowAggregate,
    SessionWindows, StringSerde, Sum, Windowed,
};
pub use store::{ByteKeyValueStore, CacheBudget, InMemoryBytesStore, RecordContext};
pub use worker::{
    ConfigError, DeserializationPolicy, ProcessingGuarantee, Worker, WorkerBuilder, WorkerConfig,
    WorkerError,
};
