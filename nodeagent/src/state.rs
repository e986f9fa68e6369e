use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What the agent remembers across restarts: the seq of the last event it
/// handled, so a restarted agent resumes the watch right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentState {
    pub last_seq: u64,
}

/// The agent's state file in `--data-dir`. It is replaced atomically (write
/// a temporary file, fsync, rename over the old one, fsync the directory),
/// so a crash leaves either the old or the new state, never a torn one.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub const FILE_NAME: &'static str = "agent-state.json";

    /// Creates `data_dir` if needed.
    pub fn open(data_dir: &Path) -> Result<StateFile> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Error::State { path: data_dir.to_path_buf(), reason: format!("cannot create: {e}") })?;
        Ok(StateFile { path: data_dir.join(Self::FILE_NAME) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state; the default (seq 0) when there is no file yet.
    pub fn load(&self) -> Result<AgentState> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::State {
                path: self.path.clone(),
                reason: format!("is not valid agent state ({e}); delete it to replay all placements"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
            Err(e) => Err(Error::State { path: self.path.clone(), reason: format!("cannot read: {e}") }),
        }
    }

    pub fn store(&self, state: &AgentState) -> Result<()> {
        let err =
            |what: &str, e: std::io::Error| Error::State { path: self.path.clone(), reason: format!("{what}: {e}") };
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| err("cannot create temporary file", e))?;
        let bytes = serde_json::to_vec(state).expect("agent state serializes");
        f.write_all(&bytes).map_err(|e| err("cannot write", e))?;
        f.sync_all().map_err(|e| err("cannot fsync", e))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| err("cannot rename into place", e))?;
        if let Some(dir) = self.path.parent() {
            // Makes the rename itself durable.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err("cannot fsync the directory", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_seq_zero_and_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::open(&dir.path().join("nested")).unwrap();
        assert_eq!(f.load().unwrap(), AgentState { last_seq: 0 });
        f.store(&AgentState { last_seq: 42 }).unwrap();
        assert_eq!(f.load().unwrap(), AgentState { last_seq: 42 });
        f.store(&AgentState { last_seq: 43 }).unwrap();
        assert_eq!(StateFile::open(&dir.path().join("nested")).unwrap().load().unwrap().last_seq, 43);
        // No temporary file is left behind.
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("nested")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(StateFile::FILE_NAME)]);
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::open(dir.path()).unwrap();
        std::fs::write(f.path(), b"{not json").unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains(StateFile::FILE_NAME) && e.contains("delete it"), "{e}");
    }
}
