//! Task identities and the three-list assignment a member owns or is asked to own.
//!
//! Owns the conversion between the wire's per-subtopology [`TaskIds`] lists and sets of
//! [`TaskId`]; it knows nothing of epochs, timing or which list is sent when.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::protocol::TaskIds;

/// One task: partition `partition` of every source topic of subtopology `subtopology`.
///
/// Displays as Kafka Streams does, `<subtopology>_<partition>` (e.g. `0_3`), which is also the
/// name of the task's state directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The subtopology id, e.g. `"0"`.
    pub subtopology: String,
    /// The partition, i.e. the task number within the subtopology.
    pub partition: i32,
}

impl TaskId {
    /// A task id from anything string-like and a partition.
    pub fn new(subtopology: impl Into<String>, partition: i32) -> Self {
        TaskId {
            subtopology: subtopology.into(),
            partition,
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// Flattens wire task lists into a set; duplicates collapse (a broker assignor once sent them).
pub(crate) fn task_set(lists: &[TaskIds]) -> BTreeSet<TaskId> {
    lists
        .iter()
        .flat_map(|ids| {
            ids.partitions
                .iter()
                .map(|p| TaskId::new(ids.subtopology_id.as_str(), *p))
        })
        .collect()
}

/// Groups a set by subtopology into wire task lists, subtopologies and partitions ascending.
pub(crate) fn task_lists(tasks: &BTreeSet<TaskId>) -> Vec<TaskIds> {
    let mut by_subtopology: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for task in tasks {
        by_subtopology
            .entry(task.subtopology.as_str())
            .or_default()
            .push(task.partition);
    }
    by_subtopology
        .into_iter()
        .map(|(subtopology_id, partitions)| TaskIds {
            subtopology_id: subtopology_id.to_string(),
            partitions,
        })
        .collect()
}

/// Active, standby and warm-up tasks: what the member owns, or what the broker targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskAssignment {
    /// Active tasks.
    pub active: BTreeSet<TaskId>,
    /// Standby tasks.
    pub standby: BTreeSet<TaskId>,
    /// Warm-up tasks (run as standbys until the broker promotes them).
    pub warmup: BTreeSet<TaskId>,
}

impl TaskAssignment {
    /// An assignment from the three wire lists of a response.
    pub(crate) fn from_lists(active: &[TaskIds], standby: &[TaskIds], warmup: &[TaskIds]) -> Self {
        TaskAssignment {
            active: task_set(active),
            standby: task_set(standby),
            warmup: task_set(warmup),
        }
    }

    /// Whether no task of any kind is in it.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty() && self.standby.is_empty() && self.warmup.is_empty()
    }

    /// Standby and warm-up tasks together: what the runtime runs as standbys.
    pub fn standby_and_warmup(&self) -> BTreeSet<TaskId> {
        self.standby.union(&self.warmup).cloned().collect()
    }

    /// The three wire lists: (active, standby, warm-up).
    pub(crate) fn to_lists(&self) -> (Vec<TaskIds>, Vec<TaskIds>, Vec<TaskIds>) {
        (
            task_lists(&self.active),
            task_lists(&self.standby),
            task_lists(&self.warmup),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_kafka_streams() {
        assert_eq!(TaskId::new("0", 3).to_string(), "0_3");
        assert_eq!(TaskId::new("12", 0).to_string(), "12_0");
    }

    #[test]
    fn orders_by_subtopology_then_partition() {
        let mut ids = vec![
            TaskId::new("1", 0),
            TaskId::new("0", 2),
            TaskId::new("0", 1),
        ];
        ids.sort();
        assert_eq!(
            ids,
            vec![
                TaskId::new("0", 1),
                TaskId::new("0", 2),
                TaskId::new("1", 0)
            ]
        );
    }

    #[test]
    fn wire_lists_round_trip_and_duplicates_collapse() {
        let wire = vec![
            TaskIds {
                subtopology_id: "1".into(),
                partitions: vec![2, 0, 2],
            },
            TaskIds {
                subtopology_id: "0".into(),
                partitions: vec![1],
            },
        ];
        let set = task_set(&wire);
        assert_eq!(set.len(), 3);
        assert_eq!(
            task_lists(&set),
            vec![
                TaskIds {
                    subtopology_id: "0".into(),
                    partitions: vec![1],
                },
                TaskIds {
                    subtopology_id: "1".into(),
                    partitions: vec![0, 2],
                },
            ]
        );
        assert!(task_lists(&BTreeSet::new()).is_empty());
    }
}
