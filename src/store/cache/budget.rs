//! [`CacheBudget`]: the byte budget every [`NamedCache`](super::NamedCache) of a worker
//! shares (`statestore.cache.max.bytes`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A worker-wide cache byte budget shared by every [`NamedCache`](super::NamedCache) of the worker.
/// Cloning is cheap (an `Arc`); all clones see the same total.
#[derive(Debug, Clone)]
pub struct CacheBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    max_bytes: AtomicUsize,
    used_bytes: AtomicUsize,
}

impl CacheBudget {
    /// A budget of `max_bytes` (`statestore.cache.max.bytes`); 0 disables caching.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(BudgetInner {
                max_bytes: AtomicUsize::new(max_bytes),
                used_bytes: AtomicUsize::new(0),
            }),
        }
    }

    /// The configured maximum.
    pub fn max_bytes(&self) -> usize {
        self.inner.max_bytes.load(Ordering::Relaxed)
    }

    /// Changes the maximum; caches shrink on their next put.
    pub fn set_max_bytes(&self, max_bytes: usize) {
        self.inner.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    /// Bytes currently held by all caches sharing this budget.
    pub fn used_bytes(&self) -> usize {
        self.inner.used_bytes.load(Ordering::Relaxed)
    }

    pub(super) fn over_budget(&self) -> bool {
        self.used_bytes() > self.max_bytes()
    }

    pub(super) fn add(&self, n: usize) {
        self.inner.used_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sub(&self, n: usize) {
        self.inner.used_bytes.fetch_sub(n, Ordering::Relaxed);
    }
}
