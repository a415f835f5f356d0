//! The flag_off action (`[daemon.flag_off]`): turn one feature flag off, by an HTTP request to
//! the flag service or by writing the flag's off state into the JSON file the app reads.
//! Synchronous (the daemon runs it on a thread of its own) and done once: a failure is told,
//! never retried; whether the service recovered is the supervisor's to judge on the traffic.
//! Which flags may be turned off, and how often, is decided before (`daemon::flag_limits`).

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Action, Outcome};
use crate::config::{FlagOffSettings, FlagService, FlagTarget};
use crate::daemon::supervisor::{Remediation, Remedied, Remedy};
use crate::store::EventKind;

/// The most of the flag service's answer kept for the record.
const ANSWER_KEPT: usize = 500;

/// Turns the remediation's flag off.
pub struct FlagOff {
    settings: FlagOffSettings,
    /// One writer of the flags file at a time (a change's flag and a request's may race).
    file_lock: Mutex<()>,
}

impl FlagOff {
    pub fn new(settings: FlagOffSettings) -> FlagOff {
        FlagOff {
            settings,
            file_lock: Mutex::new(()),
        }
    }

    /// Turns `flag` off, once. Its account says what was done and how it ended.
    pub fn turn_off(&self, flag: &str) -> FlagOffReport {
        let started = Instant::now();
        let (target, result) = match &self.settings.target {
            FlagTarget::Http(service) => (
                format!(
                    "{} {}",
                    service.method,
                    FlagService::fill(&service.url, flag)
                ),
                call(service, flag),
            ),
            FlagTarget::File(path) => {
                let _one_writer = self.file_lock.lock().unwrap_or_else(|e| e.into_inner());
                (format!("file {}", path.display()), write_off(path, flag))
            }
        };
        let (done, error) = match result {
            Ok(what) => (Some(what), None),
            Err(why) => (None, Some(why)),
        };
        FlagOffReport {
            flag: flag.to_owned(),
            target,
            done,
            error,
            took_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// What turning a flag off did, for the record and the post-mortem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagOffReport {
    pub flag: String,
    /// The request made (`POST http://...`) or the file written.
    pub target: String,
    /// What was done, when it was ("the flag service answered 200", "was true, now false").
    pub done: Option<String>,
    /// Why it could not be done.
    pub error: Option<String>,
    pub took_ms: u64,
}

impl Action for FlagOff {
    fn kind(&self) -> EventKind {
        EventKind::FlagOff
    }

    fn run(&self, job: &Remediation) -> Outcome {
        let Remedy::FlagOff { flag } = &job.remedy else {
            return Outcome {
                remedied: Remedied::Failed("flag_off was asked to revert".to_owned()),
                record: serde_json::Value::Null,
            };
        };
        let report = self.turn_off(flag);
        let remedied = match (&report.done, &report.error) {
            (Some(done), None) => Remedied::Done(format!("turned flag {flag} off ({done})")),
            (_, Some(error)) => Remedied::Failed(error.clone()),
            (None, None) => Remedied::Failed("nothing was done".to_owned()),
        };
        Outcome {
            remedied,
            record: serde_json::to_value(&report).unwrap_or_default(),
        }
    }
}

/// The flag service's request, with its token; a 2xx answer is done.
fn call(service: &FlagService, flag: &str) -> Result<String, String> {
    let url = FlagService::fill(&service.url, flag);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(u64::from(service.timeout_secs)))
        .redirects(0)
        .build();
    let mut request = agent.request(&service.method, &url);
    if let Some(file) = &service.token_file {
        let token = crate::daemon::engine::read_token(file)?;
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let answer = match &service.body {
        Some(body) => request
            .set("Content-Type", "application/json")
            .send_string(&FlagService::fill(body, flag)),
        None => request.call(),
    };
    let kept = |r: ureq::Response| {
        let text = r.into_string().unwrap_or_default();
        crate::report::text::printable(&text.chars().take(ANSWER_KEPT).collect::<String>())
    };
    match answer {
        Ok(r) => Ok(format!("the flag service answered {}", r.status())),
        Err(ureq::Error::Status(code, r)) => Err(format!(
            "the flag service answered {code} to {} {url}: {}",
            service.method,
            kept(r)
        )),
        Err(ureq::Error::Transport(t)) => Err(format!(
            "cannot reach the flag service ({} {url}): {t}",
            service.method
        )),
    }
}

/// Sets `flag` to `false` in the JSON object in `path` (made if missing), every other key as it
/// was, by writing a new file beside it and renaming it over (so the app reads the old file or
/// the new one, never half of one). The file's permissions are kept.
fn write_off(path: &Path, flag: &str) -> Result<String, String> {
    let shown = path.display();
    let (mut flags, mode) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{shown} is not JSON: {e}"))?;
            let serde_json::Value::Object(map) = value else {
                return Err(format!(
                    "{shown} is not a JSON object of flag names to true/false"
                ));
            };
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            (map, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (serde_json::Map::new(), 0o644),
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    let was = flags.insert(flag.to_owned(), serde_json::Value::Bool(false));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        let mut text = serde_json::to_string_pretty(&flags).map_err(std::io::Error::other)?;
        text.push('\n');
        file.write_all(text.as_bytes())?;
        use std::os::unix::fs::PermissionsExt as _;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        // The rename itself is made durable with the directory.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {shown}: {e}"))?;
    Ok(match was {
        Some(v) => format!("{flag} was {v} in {shown}, now false"),
        None => format!("{flag} set to false in {shown}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn action(body: &str) -> FlagOff {
        FlagOff::new(
            Config::parse(&format!(
                "[daemon]\n[daemon.flag_off]\n{body}\nflags = [\"*\"]\n"
            ))
            .unwrap()
            .daemon
            .unwrap()
            .flag_off
            .unwrap(),
        )
    }

    #[test]
    fn the_flags_file_gets_the_flag_off_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        std::fs::write(&path, "{\"new-total\": true, \"search\": true}").unwrap();
        let off = action(&format!("file = {:?}", path.display().to_string()));
        let report = off.turn_off("new-total");
        assert_eq!(report.error, None);
        let flags: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            flags,
            serde_json::json!({"new-total": false, "search": true})
        );
        std::fs::write(&path, "[1]").unwrap();
        let refused = off.turn_off("new-total").error.unwrap();
        assert!(refused.contains("is not a JSON object"), "{refused}");
    }

    #[test]
    fn a_flag_service_that_cannot_be_reached_is_a_failure_that_says_so() {
        let off = action("url = \"http://127.0.0.1:9/flags/{flag}\"\ntimeout_secs = 2");
        let report = off.turn_off("new-total");
        let error = report.error.unwrap();
        assert!(
            error.starts_with(
                "cannot reach the flag service (POST http://127.0.0.1:9/flags/new-total)"
            ),
            "{error}"
        );
    }
}
