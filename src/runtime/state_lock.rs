//! The lock a worker holds on its application's state directory,
//! `<state.dir>/<application.id>/.lock` (Kafka Streams' name): two workers sharing one state
//! dir would share its process id, hence its transactional id and task directories. The
//! second one stops at start, naming the directory. The lock is an advisory `flock` that the
//! kernel releases when the process dies, so a SIGKILLed worker leaves nothing stale.

use std::fs::{File, OpenOptions};
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
        match try_lock(&file) {
            Ok(true) => Ok(Self { _file: file, dir }),
            Ok(false) => Err(RuntimeError::StateDirLocked { path: dir }),
            Err(source) => Err(io(source)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `flock(LOCK_EX | LOCK_NB)` on `file`: `Ok(false)` when another open file holds the lock.
/// (`File::try_lock` does the same from Rust 1.89; the crate supports Rust 1.85.)
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor belongs to `file`, which is borrowed for the whole call; flock
    // takes no pointer.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
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
