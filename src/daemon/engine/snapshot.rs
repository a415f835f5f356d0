//! The core's state saved beside the database, so that a restart resumes a watch with the
//! evidence it had, and reads the lines logged since exactly once.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Engine, SNAPSHOT_FILE, SNAPSHOT_VERSION};
use crate::core::Monitor;
use crate::daemon::supervisor::Phase;
use crate::tail::Position;

/// What a restart can resume: the watch of a change, by id (serialized as the engine's phase
/// always was: `"Idle"` or `{"Watching": id}`).
#[derive(Serialize, Deserialize)]
pub(super) enum SavedPhase {
    Idle,
    Watching(String),
}

/// The core's state and the log positions it corresponds to, saved together so that after a
/// restart the lines read since are read again, exactly once, into the same state.
#[derive(Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub(super) version: u32,
    pub(super) saved_at: f64,
    pub(super) phase: SavedPhase,
    pub(super) monitor: Monitor,
    pub(super) positions: Vec<(String, Position)>,
}

impl Engine {
    /// Saves the core's state and the log positions it goes with (atomically: a crash leaves
    /// the previous snapshot or this one, never half of one). A rollback in flight is not
    /// resumable: it is saved as idle, and a restart escalates the change to a person.
    pub fn save_snapshot(&self, now: f64) -> std::io::Result<()> {
        let phase = match self.supervisor.phase() {
            Phase::Watching(change) => SavedPhase::Watching(change.id.clone()),
            _ => SavedPhase::Idle,
        };
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            saved_at: now,
            phase,
            monitor: self.supervisor.monitor().clone(),
            positions: self
                .sources
                .iter()
                .filter_map(|s| Some((s.name().to_owned(), s.position()?)))
                .collect(),
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        write_atomically(&self.settings.state_dir.join(SNAPSHOT_FILE), &bytes)
    }
}

/// What was found of the last run's saved state.
pub(super) enum Loaded {
    /// Nothing saved (a first start), or nothing readable.
    Nothing,
    /// Saved, and to be resumed; saved under other `[detector]` settings when `changed` says
    /// which (then applied as a reload applies them).
    Usable {
        snapshot: Box<Snapshot>,
        changed: Option<String>,
    },
    /// Saved by another version, so not to be used: why.
    Discarded(String),
}

/// The saved snapshot, if there is one this guardian can use.
pub(super) fn load_snapshot(dir: &Path, settings: &crate::core::DetectorSettings) -> Loaded {
    let path = dir.join(SNAPSHOT_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return Loaded::Nothing;
    };
    match serde_json::from_slice::<Snapshot>(&bytes) {
        Ok(s) if s.version != SNAPSHOT_VERSION => Loaded::Discarded(format!(
            "its saved state was written by another version of guardian (format {}, this one \
             reads {SNAPSHOT_VERSION})",
            s.version
        )),
        Ok(s) => Loaded::Usable {
            changed: (s.monitor.settings() != settings)
                .then(|| settings_changed(s.monitor.settings(), settings)),
            snapshot: Box::new(s),
        },
        Err(e) => Loaded::Discarded(format!("its saved state cannot be read ({e})")),
    }
}

/// The settings that differ, as `name old -> new`.
fn settings_changed(
    old: &crate::core::DetectorSettings,
    new: &crate::core::DetectorSettings,
) -> String {
    let (serde_json::Value::Object(old), serde_json::Value::Object(new)) = (
        serde_json::to_value(old).unwrap_or_default(),
        serde_json::to_value(new).unwrap_or_default(),
    ) else {
        return "which cannot be told".to_owned();
    };
    let changed: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| {
            let was = old.get(k).map_or("unset".to_owned(), |o| o.to_string());
            format!("{k} {was} -> {v}")
        })
        .collect();
    if changed.is_empty() {
        "in a way that cannot be told".to_owned()
    } else {
        changed.join(", ")
    }
}

/// Writes a file so that a crash leaves either the old content or the new, never a mix: a
/// temporary file in the same directory, flushed to disk, renamed over the old one, and the
/// directory flushed so the rename itself survives a power loss.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Owner only, whatever the umask: the state directory's files are private.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
