//! The worker around the runtime: configuration, metrics export and process concerns
//! (signals, logging) of the `kstate-worker` binary. Owns nothing of the processing itself.

pub mod config;

pub use config::{ConfigError, DeserializationPolicy, ProcessingGuarantee, WorkerConfig};
