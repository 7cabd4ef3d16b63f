//! The caching session store as a restore target: changelog records go straight into the
//! inner store through `put_inner`/`delete_inner`, below the cache, and a key that is not a
//! session composite key is rejected with the store's error (the restorer adds the offset).

use bytes::Bytes;

use super::RestoreTarget;
use crate::store::{ByteKeyValueStore, CachingSessionStore, StoreError};

impl<S: ByteKeyValueStore> RestoreTarget for CachingSessionStore<S> {
    type Error = StoreError;

    fn restore_put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        self.put_inner(key, value)
    }

    fn restore_delete(&mut self, key: Bytes) -> Result<(), StoreError> {
        self.delete_inner(&key)
    }

    fn restore_clear(&mut self) -> Result<(), StoreError> {
        self.clear()
    }
}
