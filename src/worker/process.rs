//! The worker's process id: one UUID per state directory and application, kept in
//! `<state.dir>/<application.id>/kstate-process-id` so that a restarted worker declares the
//! same process to the streams group (and, under exactly-once, reuses its transactional id,
//! fencing a zombie predecessor), as Kafka Streams keeps its process id in its state dir.

use std::path::Path;

/// Reads the process id, creating the directory and a fresh id on first use.
pub fn process_id(state_dir: &Path, application_id: &str) -> std::io::Result<String> {
    let dir = state_dir.join(application_id);
    let path = dir.join("kstate-process-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if uuid::Uuid::parse_str(id.trim()).is_ok() => return Ok(id.trim().to_string()),
        Ok(_) | Err(_) => {}
    }
    std::fs::create_dir_all(&dir)?;
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = dir.join("kstate-process-id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_survives_a_restart_and_differs_per_application() {
        let dir = std::env::temp_dir().join(format!("kstate-pid-{}", std::process::id()));
        let first = process_id(&dir, "app").unwrap();
        assert_eq!(process_id(&dir, "app").unwrap(), first);
        assert_ne!(process_id(&dir, "other").unwrap(), first);
        std::fs::write(dir.join("app").join("kstate-process-id"), "garbage").unwrap();
        assert_ne!(
            process_id(&dir, "app").unwrap(),
            first,
            "a corrupt id is replaced"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
