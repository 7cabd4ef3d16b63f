//! Errors of the session layer. Owns `SessionError` and `SerdeError`; store failures are
//! chained from [`StoreError`], never flattened into strings.

use thiserror::Error;

use crate::store::StoreError;

/// A value could not be deserialized.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SerdeError {
    /// Bytes that should hold UTF-8 text did not.
    #[error("invalid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A fixed-width encoding had the wrong number of bytes.
    #[error("expected {expected} bytes, got {actual}")]
    WrongLength {
        /// Required length.
        expected: usize,
        /// Length handed in.
        actual: usize,
    },
}

/// Which part of a stored session failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The record key inside the session composite key.
    Key,
    /// The aggregate value.
    Value,
}

/// Failure of a session-layer operation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The store below failed.
    #[error("session store {store} failed")]
    Store {
        /// Store name.
        store: String,
        /// What the store reported.
        #[source]
        source: StoreError,
    },
    /// Stored bytes did not deserialize.
    #[error("store {store}: cannot deserialize the {part:?} of session [{start}, {end}]")]
    Deserialize {
        /// Store name.
        store: String,
        /// Key or value.
        part: Part,
        /// Session start.
        start: i64,
        /// Session end.
        end: i64,
        /// What the serde reported.
        #[source]
        source: SerdeError,
    },
    /// Session windows were configured inconsistently.
    #[error("retention {retention_ms} ms is shorter than gap + grace = {min_ms} ms")]
    RetentionTooShort {
        /// Configured retention.
        retention_ms: u128,
        /// Inactivity gap plus grace.
        min_ms: u128,
    },
    /// A window duration does not fit in i64 milliseconds.
    #[error("{what} of {ms} ms does not fit in i64 milliseconds")]
    DurationTooLong {
        /// Which duration.
        what: &'static str,
        /// Its length.
        ms: u128,
    },
}
