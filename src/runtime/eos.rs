//! Exactly-once (`exactly_once_v2`): one transactional producer per worker, and per commit
//! one transaction holding the changelog records, the output records and the input offsets.
//! Owns the transaction state and the one call rdkafka cannot make for us: offsets sent to
//! the transaction with group metadata built from the streams member id and epoch
//! (`rd_kafka_consumer_group_metadata_new_with_genid`), since no librdkafka consumer is a
//! member of the streams group.

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use rdkafka_sys as rdsys;

use super::error::RuntimeError;
use super::producer::DeliveryContext;

type TxnProducer = ThreadedProducer<DeliveryContext>;

fn txn_error(e: rdkafka::error::KafkaError) -> RuntimeError {
    let (fatal, abortable) = match &e {
        rdkafka::error::KafkaError::Transaction(r) => (r.is_fatal(), r.txn_requires_abort()),
        _ => (false, false),
    };
    RuntimeError::Transaction {
        message: e.to_string(),
        fatal,
        abortable,
    }
}

/// Fences the producers of `transactional_id` (a member that vanished from the group): an
/// InitProducerId with that id bumps its epoch and aborts its open transaction at once, so
/// read_committed readers of the output and the changelog do not wait for the transaction
/// timeout. `config` is the worker's transactional producer configuration.
pub fn fence(
    config: &rdkafka::ClientConfig,
    transactional_id: &str,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let producer: rdkafka::producer::BaseProducer = config
        .clone()
        .set("transactional.id", transactional_id)
        .create()
        .map_err(txn_error)?;
    tokio::task::block_in_place(|| producer.init_transactions(timeout)).map_err(txn_error)
}

/// The transaction state of the worker's producer (passed to each call).
pub struct Transactions {
    group: String,
    timeout: Duration,
    open: bool,
}

impl Transactions {
    /// Initializes transactions for `producer` (its `transactional.id` must be set): fences
    /// an earlier producer with the same id and aborts what it left open.
    pub fn init(
        producer: &TxnProducer,
        group: &str,
        timeout: Duration,
    ) -> Result<Self, RuntimeError> {
        tokio::task::block_in_place(|| producer.init_transactions(timeout)).map_err(txn_error)?;
        Ok(Self {
            group: group.to_string(),
            timeout,
            open: false,
        })
    }

    /// Begins a transaction unless one is open.
    pub fn begin(&mut self, producer: &TxnProducer) -> Result<(), RuntimeError> {
        if !self.open {
            producer.begin_transaction().map_err(txn_error)?;
            self.open = true;
        }
        Ok(())
    }

    /// Adds the input offsets (`(topic, partition, next offset)`) to the open transaction as
    /// `member_id` at `member_epoch`, then commits it. Every record produced since
    /// [`begin`](Self::begin) becomes visible to read_committed consumers at once.
    pub fn commit(
        &mut self,
        producer: &TxnProducer,
        offsets: &[(String, i32, i64)],
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), RuntimeError> {
        if !self.open {
            return Ok(());
        }
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, offset) in offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(txn_error)?;
            }
            tokio::task::block_in_place(|| {
                self.send_offsets(producer, &tpl, member_id, member_epoch)
            })?;
        }
        tokio::task::block_in_place(|| producer.commit_transaction(self.timeout))
            .map_err(txn_error)?;
        self.open = false;
        Ok(())
    }

    /// Aborts the open transaction, if any (its records are never seen by read_committed
    /// consumers).
    pub fn abort(&mut self, producer: &TxnProducer) -> Result<(), RuntimeError> {
        if self.open {
            self.open = false;
            tokio::task::block_in_place(|| producer.abort_transaction(self.timeout))
                .map_err(txn_error)?;
        }
        Ok(())
    }

    fn send_offsets(
        &self,
        producer: &TxnProducer,
        tpl: &TopicPartitionList,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), RuntimeError> {
        let invalid = |what: &str| RuntimeError::Transaction {
            message: format!("{what} contains a NUL byte"),
            fatal: true,
            abortable: false,
        };
        let group = CString::new(self.group.as_str()).map_err(|_| invalid("group id"))?;
        let member = CString::new(member_id).map_err(|_| invalid("member id"))?;
        let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the group metadata is created and destroyed here and outlives the call;
        // the producer handle and the partition list are valid for the whole call (borrowed
        // from live rdkafka objects); a returned error object is read and then destroyed once.
        unsafe {
            let cgm = rdsys::rd_kafka_consumer_group_metadata_new_with_genid(
                group.as_ptr(),
                member_epoch,
                member.as_ptr(),
                std::ptr::null(),
            );
            let err = rdsys::rd_kafka_send_offsets_to_transaction(
                producer.client().native_ptr(),
                tpl.ptr(),
                cgm,
                timeout_ms,
            );
            rdsys::rd_kafka_consumer_group_metadata_destroy(cgm);
            if err.is_null() {
                return Ok(());
            }
            let message = CStr::from_ptr(rdsys::rd_kafka_error_string(err))
                .to_string_lossy()
                .into_owned();
            let fatal = rdsys::rd_kafka_error_is_fatal(err) != 0;
            let abortable = rdsys::rd_kafka_error_txn_requires_abort(err) != 0;
            rdsys::rd_kafka_error_destroy(err);
            Err(RuntimeError::Transaction {
                message: format!("sending offsets to the transaction: {message}"),
                fatal,
                abortable,
            })
        }
    }
}
