//! The session layer: session windows, the aggregate step of docs/DESIGN.md §4 (stream time, late
//! drops, merges) and the typed `SessionStore<K, V>` with its serdes. Owns session-window
//! rules and typed views; must not know Kafka clients or changelog topics, and reaches
//! bytes only through the `store` layer.

pub mod aggregate;
pub mod error;
pub mod processor;
pub mod serde;
pub mod store;
pub mod windows;

pub use aggregate::{Aggregator, Count, Initializer, Merger, Sum};
pub use error::{Part, SerdeError, SessionError};
pub use processor::{AggregateMetrics, Outcome, SessionWindowAggregate};
pub use serde::{LongSerde, Serde, StringSerde};
pub use store::{Change, Session, SessionChange, SessionStore, Windowed};
pub use windows::SessionWindows;
