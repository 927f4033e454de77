//! Raw input files (corpus, tokenizer, model, word list, datasets) are keyed
//! by their content: a sha256 digest, so an edit that keeps the size and the
//! modification time (npm gives every file the same mtime) still changes the
//! key. Digests are cached in `<data>/.fingerprints.json` by absolute path
//! and a stamp of size, mtime, inode, device and ctime, so an unchanged file
//! is hashed once, not on every `coact status`. ctime cannot be set by hand:
//! any write (or touch) changes it, and the file is hashed again. As in git's
//! index, a file changed within the last second (the kernel's timestamps are
//! coarser than its writes) is hashed but not cached: a second edit inside
//! the same clock tick would otherwise keep the stamp.

use crate::config::{Config, CorpusFormat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const CACHE_FILE: &str = ".fingerprints.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Entry {
    stamp: String,
    digest: String,
}

/// The digest cache of one data folder.
pub struct Fingerprints {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
    dirty: bool,
    /// Files hashed (cache misses) since opening.
    pub hashed: usize,
}

impl Fingerprints {
    /// Loads the cache; a missing or unreadable one starts empty.
    pub fn open(data_dir: &Path) -> Self {
        let path = data_dir.join(CACHE_FILE);
        let entries = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Self {
            path,
            entries,
            dirty: false,
            hashed: 0,
        }
    }

    /// `sha256:<hex>` of a file's content, `missing` when it cannot be read.
    pub fn file(&mut self, p: &Path) -> String {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let name = abs.to_string_lossy().to_string();
        let Some((stamp, changed)) = stamp(&abs) else {
            return "missing".into();
        };
        if let Some(e) = self.entries.get(&name) {
            if e.stamp == stamp {
                return e.digest.clone();
            }
        }
        let Ok(digest) = crate::pipeline::digest::sha256_file(&abs) else {
            return "missing".into();
        };
        self.hashed += 1;
        // Not cached: a file that changed while it was read, or so recently
        // that a further change could keep the same stamp.
        let settled = now_secs() - changed > RACY_SECS;
        if settled && self::stamp(&abs).map(|s| s.0).as_ref() == Some(&stamp) {
            self.entries.insert(
                name,
                Entry {
                    stamp,
                    digest: digest.clone(),
                },
            );
            self.dirty = true;
        }
        digest
    }

    /// A file's digest, or one per file of a folder (every .txt file of a
    /// txt corpus folder) as `name=digest,...` sorted by name.
    pub fn path(&mut self, path: &Path, format: Option<CorpusFormat>) -> String {
        if !path.is_dir() {
            return self.file(path);
        }
        let txt_only = format == Some(CorpusFormat::TxtDir);
        let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .filter(|e| !txt_only || e.path().extension().is_some_and(|x| x == "txt"))
                    .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|(name, p)| format!("{name}={}", self.file(&p)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Writes the cache if it changed (atomically; entries of files that no
    /// longer exist are dropped). A data folder that cannot be written to
    /// only costs rehashing next time.
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        self.entries.retain(|p, _| Path::new(p).exists());
        let Some(dir) = self.path.parent() else {
            return;
        };
        let tmp = dir.join(format!("{CACHE_FILE}.tmp-{}", std::process::id()));
        let ok = std::fs::create_dir_all(dir).is_ok()
            && serde_json::to_string_pretty(&self.entries)
                .ok()
                .is_some_and(|text| std::fs::write(&tmp, text).is_ok())
            && std::fs::rename(&tmp, &self.path).is_ok();
        if !ok {
            let _ = std::fs::remove_file(&tmp);
        }
        self.dirty = false;
    }
}

impl Drop for Fingerprints {
    fn drop(&mut self) {
        self.save();
    }
}

/// How long after its last change a file's digest may be cached.
const RACY_SECS: f64 = 1.0;

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What identifies a file's current content without reading it, and when
/// it last changed (unix seconds).
#[cfg(unix)]
fn stamp(p: &Path) -> Option<(String, f64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    let secs = |s: i64, ns: i64| s as f64 + ns as f64 * 1e-9;
    let changed = secs(m.mtime(), m.mtime_nsec()).max(secs(m.ctime(), m.ctime_nsec()));
    Some((
        format!(
            "{} {}.{:09} {} {} {}.{:09}",
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino(),
            m.dev(),
            m.ctime(),
            m.ctime_nsec()
        ),
        changed,
    ))
}

#[cfg(not(unix))]
fn stamp(p: &Path) -> Option<(String, f64)> {
    let m = std::fs::metadata(p).ok()?;
    let t = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((format!("{} {}", m.len(), t.as_nanos()), t.as_secs_f64()))
}

/// The content fingerprint of a raw input of `cfg`, through the digest cache
/// of its data folder.
pub fn fingerprint(cfg: &Config, path: &Path, format: Option<CorpusFormat>) -> String {
    Fingerprints::open(&cfg.data_dir()).path(path, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_file_is_hashed_once_and_any_write_rehashes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let f = tmp.path().join("corpus.jsonl");
        std::fs::write(&f, b"{\"text\": \"teh union\"}\n").unwrap();
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();

        // Just written: hashed every time until it has settled.
        let mut fp = Fingerprints::open(&data);
        let first = fp.file(&f);
        assert!(first.starts_with("sha256:"), "{first}");
        assert_eq!(fp.file(&f), first);
        assert_eq!(fp.hashed, 2);
        std::thread::sleep(std::time::Duration::from_secs_f64(RACY_SECS + 0.1));
        assert_eq!(fp.file(&f), first);
        assert_eq!(fp.file(&f), first);
        assert_eq!(fp.hashed, 3, "a settled file is hashed once");
        fp.save();
        assert!(data.join(CACHE_FILE).is_file());

        // A new process (a new Fingerprints) reads the cache: no hashing.
        let mut fp = Fingerprints::open(&data);
        assert_eq!(fp.file(&f), first);
        assert_eq!(fp.hashed, 0);

        // Same size, same mtime, same inode, other content: a new digest.
        std::fs::write(&f, b"{\"text\": \"the union\"}\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), mtime);
        let second = fp.file(&f);
        assert_ne!(second, first);
        assert_eq!(fp.hashed, 1);
        assert_eq!(fp.file(&tmp.path().join("nope")), "missing");
    }
}
