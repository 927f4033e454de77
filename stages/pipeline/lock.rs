//! One writer per data folder: `coact run` and `coact clean` hold an
//! exclusive advisory lock (flock) on `<data>/.lock` for as long as they run.
//! The file's body says who holds it (pid, start time, config, command), so a
//! second writer fails at once with a message naming the first. The kernel
//! drops the lock when its process dies, so a body left by a killed run is
//! recognised as stale and taken over. Read-only commands (status, query,
//! verify) never take it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = ".lock";

/// Who holds (or last held) the lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub pid: u32,
    pub started_unix: u64,
    pub config: String,
    pub command: String,
}

impl Holder {
    /// `pid N, started T, config F`.
    pub fn describe(&self) -> String {
        format!(
            "pid {}, started {}, config {}",
            self.pid,
            format_utc(self.started_unix),
            self.config
        )
    }
}

/// Held until dropped; dropping empties the body so that the next run sees
/// a clean release rather than a stale lock.
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `data_dir` for `command`, or fails at once naming
    /// the run that holds it. Creates the data folder if needed.
    pub fn acquire(data_dir: &Path, config: &Path, command: &str) -> Result<RunLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let who = read_holder_waiting(&path)
                    .map(|h| format!("`{}` ({})", h.command, h.describe()))
                    .unwrap_or_else(|| "another coact process (it has not said which yet)".into());
                // `data/`, not `./data/`, for a config in the current folder.
                let shown = match data_dir.strip_prefix(".") {
                    Ok(p) if !p.as_os_str().is_empty() => p,
                    _ => data_dir,
                };
                bail!(
                    "{}/ is in use by {who}; wait for it or stop it",
                    shown.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                bail!("cannot lock {}: {e}", path.display())
            }
        }
        // Ours now. A body left behind is a run that died holding it.
        if let Some(old) = read_body(&mut file).and_then(|b| parse(&b)) {
            if old.pid != std::process::id() {
                let why = if pid_alive(old.pid) {
                    "it no longer holds it"
                } else {
                    "no longer running"
                };
                eprintln!(
                    "warning: taking over the lock {} of pid {} ({why}; `{}`, started {}, config {})",
                    path.display(),
                    old.pid,
                    old.command,
                    format_utc(old.started_unix),
                    old.config
                );
            }
        }
        let me = Holder {
            pid: std::process::id(),
            started_unix: crate::pipeline::store::now_unix(),
            config: std::path::absolute(config)
                .unwrap_or_else(|_| config.to_path_buf())
                .display()
                .to_string(),
            command: command.to_string(),
        };
        let body = serde_json::to_string(&me)? + "\n";
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(body.as_bytes()))
            .with_context(|| format!("writing the lock file {}", path.display()))?;
        Ok(RunLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Emptied while still locked; closing the file releases the lock.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Who holds the lock of `data_dir` right now, without taking it: the body
/// of a lock file whose process is still running (for `coact status`).
pub fn current_holder(data_dir: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(data_dir.join(LOCK_FILE)).ok()?;
    parse(&text).filter(|h| pid_alive(h.pid))
}

/// The command line as the user typed it, for the lock body.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let prog = args
        .next()
        .and_then(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
        })
        .unwrap_or_else(|| "coact".into());
    std::iter::once(prog)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_body(file: &mut File) -> Option<String> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    Some(s)
}

fn parse(body: &str) -> Option<Holder> {
    serde_json::from_str(body.trim()).ok()
}

/// The holder writes its body right after taking the lock; give it a moment.
fn read_holder_waiting(path: &Path) -> Option<Holder> {
    for _ in 0..20 {
        if let Some(h) = std::fs::read_to_string(path).ok().and_then(|b| parse(&b)) {
            return Some(h);
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    None
}

fn pid_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        // Unknown elsewhere: say "it no longer holds it", which is true.
        true
    }
}

/// `2026-12-01 08:12:33 UTC`, without a date library.
pub fn format_utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(499_162_500), "1985-10-26 08:15:00 UTC");
        assert_eq!(format_utc(1_709_210_096), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn a_second_lock_on_the_same_folder_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let first = RunLock::acquire(&data, Path::new("pipeline.yaml"), "coact run").unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts like a second process would.
        let err = RunLock::acquire(&data, Path::new("other.yaml"), "coact clean")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("is in use by `coact run`")
                && err.contains(&format!("pid {}", std::process::id()))
                && err.contains("pipeline.yaml")
                && err.contains("wait for it or stop it"),
            "{err}"
        );
        assert_eq!(
            current_holder(&data).map(|h| h.command),
            Some("coact run".to_string())
        );
        drop(first);
        assert_eq!(std::fs::read_to_string(data.join(LOCK_FILE)).unwrap(), "");
        assert!(current_holder(&data).is_none());
        drop(RunLock::acquire(&data, Path::new("other.yaml"), "coact clean").unwrap());
    }
}
