//! The worker around the runtime: configuration and process identity of the `kstate-worker`
//! binary. Owns nothing of the processing itself.

pub mod config;
mod process;

pub use config::{ConfigError, DeserializationPolicy, ProcessingGuarantee, WorkerConfig};
pub use process::process_id;
