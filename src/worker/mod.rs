//! The worker around the runtime: configuration, process identity, the [`Worker`] builder
//! and the HTTP endpoint of the `kstate-worker` binary. Owns nothing of the processing itself.

mod builder;
pub mod config;
pub mod http;
mod process;

pub use builder::{Worker, WorkerBuilder, WorkerError};
pub use config::{ConfigError, DeserializationPolicy, ProcessingGuarantee, WorkerConfig};
pub use process::process_id;
