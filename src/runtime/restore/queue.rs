//! The restore consumer's queue drained in batches through librdkafka's
//! `rd_kafka_consume_batch_queue` (rdkafka-sys). rdkafka's `StreamConsumer::recv` hands
//! out one message per poll, each with two clock reads, an event and an `Arc`: about 15%
//! of a restoring worker's main thread. The loop still awaits `recv` for the first record
//! of a wake-up (its waker is how it learns records arrived); the records ready after it
//! come from here, in the same order, from the same queue.

use std::ptr::NonNull;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka_sys as rdsys;
use rdsys::rd_kafka_resp_err_t as Err;

/// Messages taken from librdkafka per call.
const CHUNK: usize = 512;

/// What the queue held: a record, the end of a partition (with the next offset to read,
/// past transaction markers), or an error.
pub(super) enum Polled<'a> {
    Record(ChangelogRecord<'a>),
    End { partition: i32, position: i64 },
    Error(KafkaError),
}

/// A changelog record as the restore applies it.
pub(in crate::runtime) struct ChangelogRecord<'a> {
    pub(in crate::runtime) partition: i32,
    pub(in crate::runtime) offset: i64,
    pub(in crate::runtime) key: Option<&'a [u8]>,
    pub(in crate::runtime) value: Option<&'a [u8]>,
}

/// A handle on the restore consumer's queue (librdkafka's consumer queue, which
/// `StreamConsumer::recv` polls too).
pub(super) struct BatchQueue(NonNull<rdsys::rd_kafka_queue_t>);

// SAFETY: librdkafka's queue handles are thread-safe (its queues lock internally), and the
// handle keeps the queue alive until dropped.
unsafe impl Send for BatchQueue {}
// SAFETY: as for `Send`: every use goes through librdkafka's own locking.
unsafe impl Sync for BatchQueue {}

impl BatchQueue {
    /// A handle on `consumer`'s queue; `None` if librdkafka gives none.
    pub(super) fn new(consumer: &StreamConsumer) -> Option<Self> {
        // SAFETY: the client pointer is valid while `consumer` lives; the returned handle
        // holds its own reference to the queue (released in `Drop`).
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        NonNull::new(queue).map(Self)
    }

    /// Takes up to [`CHUNK`] messages that are ready now (no waiting) and hands each to
    /// `visit` in queue order.
    /// Every message taken is handed over (and freed) even if `visit` fails; the first
    /// failure is returned. Returns how many messages were taken.
    pub(super) fn drain<E>(
        &self,
        max: usize,
        visit: &mut dyn FnMut(Polled<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut messages: [*mut rdsys::rd_kafka_message_t; CHUNK] = [std::ptr::null_mut(); CHUNK];
        let max = max.min(CHUNK);
        // SAFETY: the queue handle is valid; librdkafka writes at most `max` message
        // pointers into `messages`, which has room for CHUNK.
        let got = unsafe {
            rdsys::rd_kafka_consume_batch_queue(self.0.as_ptr(), 0, messages.as_mut_ptr(), max)
        };
        let got = usize::try_from(got).unwrap_or(0);
        let mut failure = None;
        for &ptr in &messages[..got] {
            // SAFETY: librdkafka returned `got` valid messages, each ours until destroyed;
            // the slices borrowed from it are dropped before it is destroyed below.
            let result = unsafe { visit(read(&*ptr)) };
            if let (Err(e), None) = (result, &failure) {
                failure = Some(e);
            }
            // SAFETY: each message is destroyed once, after its last use.
            unsafe { rdsys::rd_kafka_message_destroy(ptr) };
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(got),
        }
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: the handle was obtained from `rd_kafka_queue_get_consumer` and is
        // released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// A consumed message as a record, an end of partition, or its error as rdkafka reports
/// it. The end's position is the offset the message carries (librdkafka's fetch position
/// when it reached the end): the batch call also moves the consumer's position to one
/// past it, so `position()` would be one too far there.
///
/// # Safety
/// `m` must be a message librdkafka handed out and not yet destroyed.
unsafe fn read(m: &rdsys::rd_kafka_message_t) -> Polled<'_> {
    let partition = m.partition;
    match m.err {
        Err::RD_KAFKA_RESP_ERR_NO_ERROR => {}
        Err::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
            return Polled::End {
                partition,
                position: m.offset,
            }
        }
        e => return Polled::Error(KafkaError::MessageConsumption(RDKafkaErrorCode::from(e))),
    }
    // SAFETY (caller's): key and payload point to key_len and len bytes owned by the
    // message, or are null.
    let bytes = |ptr: *const std::ffi::c_void, len: usize| {
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    };
    Polled::Record(ChangelogRecord {
        partition,
        offset: m.offset,
        key: bytes(m.key, m.key_len),
        value: bytes(m.payload, m.len),
    })
}
