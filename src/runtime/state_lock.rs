//! The lock a worker holds on its application's state directory,
//! `<state.dir>/<application.id>/.lock` (Kafka Streams' name): two workers sharing one state
//! dir would share its process id, hence its transactional id and task directories. The
//! second one stops at start, naming the directory. The lock is an advisory `flock` that the
//! kernel releases when the process dies, so a SIGKILLed worker leaves nothing stale.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::error::RuntimeError;

/// Held for the worker's lifetime; dropping it releases the directory.
#[derive(Debug)]
pub struct StateDirLock {
    _file: File,
    dir: PathBuf,
}

impl StateDirLock {
    /// Locks `<state_dir>/<application_id>`, creating it if needed.
    pub fn acquire(state_dir: &Path, application_id: &str) -> Result<Self, RuntimeError> {
        let dir = state_dir.join(application_id);
        let io = |source| RuntimeError::StateDir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, dir }),
            Err(TryLockError::WouldBlock) => Err(RuntimeError::StateDirLocked { path: dir }),
            Err(TryLockError::Error(source)) => Err(io(source)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_it_until_the_first_is_dropped() {
        let root = std::env::temp_dir().join(format!(
            "kstate-lock-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let first = StateDirLock::acquire(&root, "app").unwrap();
        assert_eq!(first.dir(), root.join("app"));
        let err = StateDirLock::acquire(&root, "app").unwrap_err();
        assert!(matches!(err, RuntimeError::StateDirLocked { .. }));
        assert!(
            err.to_string()
                .contains(&root.join("app").display().to_string()),
            "{err}"
        );
        let other = StateDirLock::acquire(&root, "other-app");
        assert!(other.is_ok(), "another application id is another directory");
        drop(first);
        assert!(StateDirLock::acquire(&root, "app").is_ok());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
