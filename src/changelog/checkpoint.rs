//! The task checkpoint file, in Kafka Streams' `.checkpoint` text format (`OffsetCheckpoint`):
//! a version line `0`, a count line `N`, then `N` lines `topic partition offset`, where the
//! offset is the last changelog record applied to the local store. Owns reading and atomic
//! writing of that file; knows nothing of stores or Kafka clients.
//!
//! Writes go to `<file>.tmp`, are fsynced, renamed over the file and the directory is fsynced,
//! so a crash leaves either the old or the new checkpoint, never a torn one. A missing file
//! means "no checkpoint" (full restore); a corrupt one is an error naming the line, and the
//! caller falls back to a full restore.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The only version Kafka Streams writes and reads.
const VERSION: i32 = 0;
/// Kafka Streams' `OFFSET_UNKNOWN` sentinel: the only negative offset a checkpoint may hold.
pub const OFFSET_UNKNOWN: i64 = -4;

/// Errors reading or writing a checkpoint file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is corrupt at line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Changelog offsets per `(topic, partition)`: the last record applied to the local store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    offsets: BTreeMap<(String, i32), i64>,
}

impl Checkpoint {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last applied offset of `topic`/`partition`, if the checkpoint knows it
    /// (`OFFSET_UNKNOWN` counts as not knowing).
    pub fn offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets
            .get(&(topic.to_string(), partition))
            .copied()
            .filter(|&o| o >= 0)
    }

    pub fn set(&mut self, topic: &str, partition: i32, offset: i64) {
        self.offsets.insert((topic.to_string(), partition), offset);
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.offsets.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    /// Reads the checkpoint at `path`; `Ok(None)` when there is no file.
    pub fn read(path: &Path) -> Result<Option<Self>, CheckpointError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|(line, reason)| CheckpointError::Corrupt {
                path: path.to_path_buf(),
                line,
                reason,
            })
    }

    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        let (n, version) = lines.next().ok_or((1, "empty file".to_string()))?;
        match version.parse::<i32>() {
            Ok(VERSION) => {}
            _ => return Err((n, format!("unknown version '{version}'"))),
        }
        let (n, count) = lines.next().ok_or((2, "missing entry count".to_string()))?;
        let count: usize = count
            .parse()
            .map_err(|_| (n, format!("bad entry count '{count}'")))?;
        let mut offsets = BTreeMap::new();
        for _ in 0..count {
            let (n, line) = lines
                .next()
                .ok_or((n + offsets.len() + 1, format!("expected {count} entries")))?;
            let mut parts = line.split(' ');
            let (Some(topic), Some(partition), Some(offset), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err((
                    n,
                    format!("expected 'topic partition offset', got '{line}'"),
                ));
            };
            let partition: i32 = partition
                .parse()
                .map_err(|_| (n, format!("bad partition '{partition}'")))?;
            let offset: i64 = offset
                .parse()
                .map_err(|_| (n, format!("bad offset '{offset}'")))?;
            if offset < 0 && offset != OFFSET_UNKNOWN {
                return Err((n, format!("negative offset {offset}")));
            }
            offsets.insert((topic.to_string(), partition), offset);
        }
        if let Some((n, extra)) = lines.find(|(_, l)| !l.is_empty()) {
            return Err((
                n,
                format!("unexpected line after {count} entries: '{extra}'"),
            ));
        }
        Ok(Self { offsets })
    }

    fn render(&self) -> String {
        let mut out = format!("{VERSION}\n{}\n", self.offsets.len());
        for ((topic, partition), offset) in &self.offsets {
            out.push_str(&format!("{topic} {partition} {offset}\n"));
        }
        out
    }

    /// Writes the checkpoint atomically (tmp file, fsync, rename, fsync of the directory).
    /// An empty checkpoint deletes the file, as Kafka Streams does.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        if self.offsets.is_empty() {
            return match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
                _ => Ok(()),
            };
        }
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut file = File::create(&tmp).map_err(io)?;
            file.write_all(self.render().as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, path).map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }

    /// Deletes the checkpoint file (Kafka Streams does so under exactly-once right after
    /// loading it, so that a crash forces a full restore).
    pub fn delete(path: &Path) -> Result<(), CheckpointError> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CheckpointError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kstate-checkpoint-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_kafka_streams_format() {
        let mut cp = Checkpoint::new();
        cp.set("app-store-changelog", 3, 41);
        cp.set("app-store-changelog", 0, 7);
        assert_eq!(
            cp.render(),
            "0\n2\napp-store-changelog 0 7\napp-store-changelog 3 41\n"
        );
    }

    #[test]
    fn reads_a_file_written_by_kafka_streams() {
        let cp = Checkpoint::parse("0\n2\nclicks-counts-changelog 1 100\nother 0 -4\n").unwrap();
        assert_eq!(cp.offset("clicks-counts-changelog", 1), Some(100));
        assert_eq!(
            cp.offset("other", 0),
            None,
            "OFFSET_UNKNOWN is not an offset"
        );
        assert_eq!(cp.offset("clicks-counts-changelog", 0), None);
    }

    #[test]
    fn missing_file_is_no_checkpoint() {
        let path = dir().join("missing").join(".checkpoint");
        assert_eq!(Checkpoint::read(&path).unwrap(), None);
    }

    #[test]
    fn write_then_read_round_trips_and_leaves_no_tmp() {
        let path = dir().join("rt.checkpoint");
        let mut cp = Checkpoint::new();
        cp.set("t", 2, 99);
        cp.write(&path).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), Some(cp));
        assert!(!path.with_extension("checkpoint.tmp").exists());
        Checkpoint::new().write(&path).unwrap();
        assert!(!path.exists(), "an empty checkpoint deletes the file");
    }

    #[test]
    fn corrupt_files_name_the_line() {
        let cases = [
            ("", 1),
            ("1\n0\n", 1),
            ("0\nx\n", 2),
            ("0\n2\nt 0 5\n", 4),
            ("0\n1\nt zero 5\n", 3),
            ("0\n1\nt 0 5 extra\n", 3),
            ("0\n1\nt 0 -1\n", 3),
            ("0\n1\nt 0 5\nt 1 6\n", 4),
        ];
        for (text, line) in cases {
            let path = dir().join("corrupt.checkpoint");
            fs::write(&path, text).unwrap();
            match Checkpoint::read(&path) {
                Err(CheckpointError::Corrupt { line: got, .. }) => {
                    assert_eq!(got, line, "line for {text:?}")
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn render_parse_round_trip(entries in proptest::collection::btree_map(
            ("[a-z][a-z0-9._-]{0,20}", 0i32..1000), 0i64..i64::MAX, 0..20)) {
            let mut cp = Checkpoint::new();
            for ((t, p), o) in &entries {
                cp.set(t, *p, *o);
            }
            prop_assert_eq!(Checkpoint::parse(&cp.render()).unwrap(), cp);
        }
    }

    /// Checkpoint text for fuzzing, drawn from `seed` (one `u64` per case keeps 100k cases
    /// within seconds in a debug build): 0–6 lines of 0–4 tokens, each a token of the format
    /// at its limits or arbitrary.
    fn fuzz_text(seed: u64) -> String {
        const TOKENS: [&str; 14] = [
            "0",
            "1",
            "-1",
            "-2",
            "2147483648",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "",
            "topic",
            "t-changelog",
            "+3",
            "0x10",
            "\u{0}",
        ];
        let mut state = seed | 1;
        let mut next = |bound: u64| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
        };
        let lines: Vec<String> = (0..next(7))
            .map(|_| {
                let tokens: Vec<String> = (0..next(5))
                    .map(|_| match next(4) {
                        0 => (next(u64::MAX) as i64).to_string(),
                        _ => TOKENS[next(TOKENS.len() as u64) as usize].to_string(),
                    })
                    .collect();
                tokens.join(if next(8) == 0 { "  " } else { " " })
            })
            .collect();
        lines.join(if next(8) == 0 { "\r\n" } else { "\n" })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Fuzzing (issue 16): any text parses or is an error naming a line, never a panic.
        #[test]
        fn any_text_parses_or_names_a_line(seed in any::<u64>()) {
            let text = fuzz_text(seed);
            match Checkpoint::parse(&text) {
                Ok(cp) => prop_assert_eq!(Checkpoint::parse(&cp.render()).unwrap(), cp),
                Err((line, _)) => prop_assert!(line >= 1 && line <= text.lines().count() + 1),
            }
        }
    }
}
