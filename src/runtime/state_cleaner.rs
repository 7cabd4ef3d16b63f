//! Kafka Streams' state directory cleaner (`state.cleanup.delay.ms`): every delay, the
//! directories under `<state.dir>/<application.id>/` named like a task (`<subtopology>_<partition>`,
//! e.g. `0_3`) whose task this worker neither runs, restores, keeps on standby nor holds
//! dormant, and that were last modified longer than the delay ago, are deleted with what
//! they hold (a snapshot, a persistent store, a checkpoint). Without it the state of every
//! task a worker ever held would stay on its disk: a persistent store's files for good.
//! Deleting it loses nothing: the changelog is the state, and a task assigned again later
//! restores from it. Anything else in the directory (the `.lock`, files, other names) is
//! left alone.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

/// Whether `name` is a task directory's name: `<digits>_<digits>`.
fn is_task_dir_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.split_once('_')
        .is_some_and(|(subtopology, partition)| digits(subtopology) && digits(partition))
}

/// The task directories of `app_dir` that `owned` does not claim and that were last modified
/// at least `delay` before `now`, as (task name, path), in name order.
pub(super) fn obsolete_task_dirs(
    app_dir: &Path,
    owned: &dyn Fn(&str) -> bool,
    now: SystemTime,
    delay: Duration,
) -> io::Result<Vec<(String, PathBuf)>> {
    let mut obsolete = Vec::new();
    for entry in std::fs::read_dir(app_dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_task_dir_name(&name) || owned(&name) || !entry.file_type()?.is_dir() {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        let idle = now.duration_since(modified).unwrap_or(Duration::ZERO);
        if idle >= delay {
            obsolete.push((name, entry.path()));
        }
    }
    obsolete.sort();
    Ok(obsolete)
}

/// Deletes the obsolete task directories of `app_dir` (see [`obsolete_task_dirs`]), logging
/// each as Kafka Streams does; returns how many were deleted. Failures are logged and left
/// for the next round: a directory that cannot be read or deleted never stops the worker.
pub(super) fn clean_obsolete_task_dirs(
    app_dir: &Path,
    owned: &dyn Fn(&str) -> bool,
    now: SystemTime,
    delay: Duration,
) -> usize {
    let obsolete = match obsolete_task_dirs(app_dir, owned, now, delay) {
        Ok(obsolete) => obsolete,
        Err(e) => {
            warn!(dir = %app_dir.display(), error = %e, "cannot list the state directory for cleanup");
            return 0;
        }
    };
    let mut deleted = 0;
    for (task, path) in obsolete {
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                info!(
                    %task,
                    dir = %path.display(),
                    delay_ms = delay.as_millis() as u64,
                    "deleted the obsolete state directory of a task not owned here (state.cleanup.delay.ms elapsed)"
                );
                deleted += 1;
            }
            Err(e) => {
                warn!(%task, dir = %path.display(), error = %e, "cannot delete an obsolete state directory")
            }
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(600);

    fn app_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kstate-cleaner-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn task_dir(app: &Path, name: &str) -> PathBuf {
        let dir = app.join(name);
        std::fs::create_dir_all(dir.join("counts")).unwrap();
        std::fs::write(dir.join(".checkpoint"), b"0\n1\ncounts-changelog 3 42\n").unwrap();
        dir
    }

    #[test]
    fn task_dir_names_are_digits_underscore_digits() {
        for name in ["0_0", "0_3", "12_345"] {
            assert!(is_task_dir_name(name), "{name}");
        }
        for name in [
            ".lock", "0_", "_1", "0-1", "a_1", "0_1_2", "0_1.tmp", "kstate",
        ] {
            assert!(!is_task_dir_name(name), "{name}");
        }
    }

    #[test]
    fn only_unowned_task_dirs_idle_past_the_delay_are_deleted() {
        let app = app_dir("unowned");
        let owned_dir = task_dir(&app, "0_1");
        let gone_dir = task_dir(&app, "0_2");
        let other_gone = task_dir(&app, "1_7");
        std::fs::write(app.join(".lock"), b"").unwrap();
        std::fs::create_dir_all(app.join("notes")).unwrap();
        let owned = |task: &str| task == "0_1";

        // Just modified: nothing is old enough yet.
        let now = SystemTime::now();
        assert_eq!(clean_obsolete_task_dirs(&app, &owned, now, DELAY), 0);
        assert!(gone_dir.is_dir() && other_gone.is_dir());

        let later = now + DELAY + Duration::from_secs(1);
        let listed = obsolete_task_dirs(&app, &owned, later, DELAY).unwrap();
        assert_eq!(
            listed,
            vec![
                ("0_2".to_string(), gone_dir.clone()),
                ("1_7".to_string(), other_gone.clone())
            ]
        );
        assert_eq!(clean_obsolete_task_dirs(&app, &owned, later, DELAY), 2);
        assert!(!gone_dir.exists() && !other_gone.exists());
        assert!(
            owned_dir.join(".checkpoint").is_file(),
            "an owned task's state stays"
        );
        assert!(app.join(".lock").is_file() && app.join("notes").is_dir());
        std::fs::remove_dir_all(&app).unwrap();
    }

    #[test]
    fn a_file_named_like_a_task_is_left_alone() {
        let app = app_dir("file");
        std::fs::write(app.join("0_9"), b"not a directory").unwrap();
        let later = SystemTime::now() + DELAY + DELAY;
        assert_eq!(clean_obsolete_task_dirs(&app, &|_| false, later, DELAY), 0);
        assert!(app.join("0_9").is_file());
        std::fs::remove_dir_all(&app).unwrap();
    }

    #[test]
    fn a_missing_state_directory_is_logged_not_fatal() {
        let missing = std::env::temp_dir().join(format!(
            "kstate-cleaner-missing-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let now = SystemTime::now();
        assert!(obsolete_task_dirs(&missing, &|_| false, now, DELAY).is_err());
        assert_eq!(
            clean_obsolete_task_dirs(&missing, &|_| false, now, DELAY),
            0
        );
    }
}
