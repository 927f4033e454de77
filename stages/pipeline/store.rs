//! The artifact store: data/<stage>/<key>/ folders with a manifest.json,
//! content keys, and atomic publication.
//!
//! key = hash(stage, format version, canonical stage config, input keys), so a
//! change to one stage's settings changes that stage's key and, through the
//! input keys, every key downstream of it, and nothing else.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
const TMP_PREFIX: &str = ".tmp-";

/// The content key of one artifact. serde_json's maps are ordered, so the
/// serialisation below is canonical.
pub fn compute_key(
    stage: &str,
    format_version: u32,
    config: &Value,
    inputs: &BTreeMap<String, String>,
) -> String {
    let canonical = serde_json::json!({
        "stage": stage,
        "format": format_version,
        "config": config,
        "inputs": inputs,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    /// `sha256:<hex>` of the content at publish time, for `coact verify`.
    /// Manifests written before digests were recorded have none; their files
    /// can only be checked by size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableEntry {
    /// Parquet files of the table, relative to the artifact folder.
    pub files: Vec<String>,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub stage: String,
    /// Which of the stage's artifacts this is (the variant, for train).
    #[serde(default)]
    pub unit: Option<String>,
    pub key: String,
    pub format_version: u32,
    /// Input stage -> key of the artifact it was made from.
    pub inputs: BTreeMap<String, String>,
    /// The resolved stage config the key was computed from.
    pub config: Value,
    pub coact_version: String,
    pub created_unix: u64,
    pub elapsed_s: f64,
    /// The threads the unit ran on (its share when units ran at once);
    /// absent in manifests from before units ran at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    pub files: Vec<FileEntry>,
    pub tables: BTreeMap<String, TableEntry>,
    /// Stage-specific figures (token counts, norms, ...).
    #[serde(default)]
    pub summary: Value,
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn artifact_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join(stage).join(key)
    }

    /// An artifact exists only once its manifest is in its published folder.
    pub fn exists(&self, stage: &str, key: &str) -> bool {
        self.artifact_dir(stage, key).join(MANIFEST).is_file()
    }

    pub fn manifest(&self, stage: &str, key: &str) -> Result<Manifest> {
        let path = self.artifact_dir(stage, key).join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a coact manifest", path.display()))
    }

    /// Published artifacts of a stage, newest first. A folder whose manifest
    /// cannot be read (hand-edited, truncated) is skipped with a warning;
    /// `unreadable` lists those for `coact clean`.
    pub fn list(&self, stage: &str) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for name in self.published_names(stage)? {
            match self.manifest(stage, &name) {
                Ok(m) => out.push(m),
                Err(e) => eprintln!(
                    "warning: skipping {}: {e:#}; `coact clean` removes it",
                    self.artifact_dir(stage, &name).display()
                ),
            }
        }
        out.sort_by(|a, b| b.created_unix.cmp(&a.created_unix).then(a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Published folders of a stage whose manifest cannot be read.
    pub fn unreadable(&self, stage: &str) -> Result<Vec<String>> {
        Ok(self
            .published_names(stage)?
            .into_iter()
            .filter(|n| self.manifest(stage, n).is_err())
            .collect())
    }

    fn published_names(&self, stage: &str) -> Result<Vec<String>> {
        let dir = self.root.join(stage);
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with('.') && entry.path().join(MANIFEST).is_file() {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Leftovers of interrupted runs (temporary folders) of a stage, with the
    /// key a resumable folder (`.tmp-<key>`) would continue.
    pub fn leftovers(&self, stage: &str) -> Vec<(PathBuf, String)> {
        let Ok(rd) = std::fs::read_dir(self.root.join(stage)) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let rest = name.strip_prefix(TMP_PREFIX)?.to_string();
                Some((e.path(), rest))
            })
            .collect()
    }

    /// A temporary folder to build the artifact in. It is removed again unless
    /// published, so a failed or interrupted stage leaves no artifact.
    pub fn begin(&self, stage: &str, key: &str) -> Result<Staging> {
        let parent = self.root.join(stage);
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let dir = parent.join(format!("{TMP_PREFIX}{key}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Staging {
            dir,
            final_dir: self.artifact_dir(stage, key),
            published: false,
            keep_on_failure: false,
        })
    }

    /// Like `begin`, but the folder is named by the key alone and survives a
    /// failure or kill, so a rerun continues from the files already finished
    /// in it. The stage must only ever leave complete files under their final
    /// names (write to a temporary name, then rename).
    pub fn begin_resumable(&self, stage: &str, key: &str) -> Result<Staging> {
        let parent = self.root.join(stage);
        let dir = parent.join(format!("{TMP_PREFIX}{key}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Staging {
            dir,
            final_dir: self.artifact_dir(stage, key),
            published: false,
            keep_on_failure: true,
        })
    }

    pub fn remove(&self, stage: &str, key: &str) -> Result<()> {
        let dir = self.artifact_dir(stage, key);
        remove_atomically(&dir)
    }
}

/// Renames first so that a crash midway never leaves a folder that still
/// looks like a complete artifact.
fn remove_atomically(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let doomed = dir.with_file_name(format!(
        "{TMP_PREFIX}old-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::rename(dir, &doomed).with_context(|| format!("moving {} aside", dir.display()))?;
    std::fs::remove_dir_all(&doomed).with_context(|| format!("removing {}", doomed.display()))
}

pub struct Staging {
    dir: PathBuf,
    final_dir: PathBuf,
    published: bool,
    keep_on_failure: bool,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fills in the file list (sizes and content digests), writes the
    /// manifest and renames the folder into place, replacing an earlier artifact of the same key (`--force`).
    pub fn publish(mut self, mut manifest: Manifest) -> Result<PathBuf> {
        for table in manifest.tables.values() {
            for f in &table.files {
                if !self.dir.join(f).is_file() {
                    bail!("stage {}: table file {f} was not written", manifest.stage);
                }
            }
        }
        manifest.files = list_files(&self.dir)?;
        let text = serde_json::to_string_pretty(&manifest)?;
        std::fs::write(self.dir.join(MANIFEST), text)
            .with_context(|| format!("writing the manifest in {}", self.dir.display()))?;
        if self.final_dir.exists() {
            remove_atomically(&self.final_dir)?;
        }
        std::fs::rename(&self.dir, &self.final_dir).map_err(|e| {
            anyhow!(
                "publishing {} as {}: {e}",
                self.dir.display(),
                self.final_dir.display()
            )
        })?;
        self.published = true;
        Ok(self.final_dir.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published && !self.keep_on_failure {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn list_files(dir: &Path) -> Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(dir)?
                    .to_string_lossy()
                    .to_string();
                let digest = crate::pipeline::digest::sha256_file(&entry.path())
                    .with_context(|| format!("hashing {}", entry.path().display()))?;
                out.push(FileEntry {
                    name: rel,
                    bytes: meta.len(),
                    digest: Some(digest),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Leaf paths where two JSON values differ, as `a.b[2].c: old -> new`.
pub fn json_diff(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                json_diff(
                    &p,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_diff(&format!("{prefix}[{i}]"), x, y, out);
            }
        }
        _ if old != new => out.push(format!("{prefix}: {old} -> {new}")),
        _ => {}
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_depends_on_every_part() {
        let inputs: BTreeMap<String, String> = [("tokenize".to_string(), "abc".to_string())].into();
        let k = compute_key("extract", 1, &json!({"a": 1}), &inputs);
        // Pinned: the manifest's format (sizes, digests) must never change
        // keys, or every cache would be rebuilt.
        assert_eq!(k, "5a8cd81e1cf0bd78");
        assert_eq!(k, compute_key("extract", 1, &json!({"a": 1}), &inputs));
        assert_ne!(k, compute_key("extract", 2, &json!({"a": 1}), &inputs));
        assert_ne!(k, compute_key("extract", 1, &json!({"a": 2}), &inputs));
        assert_ne!(k, compute_key("train", 1, &json!({"a": 1}), &inputs));
        assert_ne!(
            k,
            compute_key("extract", 1, &json!({"a": 1}), &BTreeMap::new())
        );
    }

    #[test]
    fn diff_names_changed_leaves() {
        let mut out = Vec::new();
        json_diff(
            "",
            &json!({"t": {"c": 128, "s": 0}}),
            &json!({"t": {"c": 256, "s": 0}}),
            &mut out,
        );
        assert_eq!(out, vec!["t.c: 128 -> 256"]);
    }

    fn manifest(key: &str) -> Manifest {
        Manifest {
            stage: "s".into(),
            unit: None,
            key: key.into(),
            format_version: 1,
            inputs: BTreeMap::new(),
            config: json!({}),
            coact_version: "0".into(),
            created_unix: 0,
            elapsed_s: 0.0,
            threads: None,
            files: vec![],
            tables: BTreeMap::new(),
            summary: Value::Null,
        }
    }

    #[test]
    fn unpublished_staging_leaves_nothing_and_publish_is_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        {
            let st = store.begin("s", "k1").unwrap();
            std::fs::write(st.path().join("half.parquet"), b"x").unwrap();
            // dropped without publishing: a failure midway
        }
        assert!(!store.exists("s", "k1"));
        assert!(store.leftovers("s").is_empty());
        assert!(store.list("s").unwrap().is_empty());
        // A resumable folder survives a failure and names its key.
        drop(store.begin_resumable("s", "k9").unwrap());
        let left = store.leftovers("s");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1, "k9");
        std::fs::remove_dir_all(&left[0].0).unwrap();

        let st = store.begin("s", "k2").unwrap();
        std::fs::write(st.path().join("t.parquet"), b"abc").unwrap();
        let mut m = manifest("k2");
        m.tables.insert(
            "t".into(),
            TableEntry {
                files: vec!["t.parquet".into()],
                rows: 1,
            },
        );
        st.publish(m).unwrap();
        assert!(store.exists("s", "k2"));
        // A manifest from before digests were recorded still loads.
        let old = r#"{"stage":"s","key":"k","format_version":1,"inputs":{},"config":{},
            "coact_version":"0","created_unix":0,"elapsed_s":0.0,
            "files":[{"name":"t.parquet","bytes":3}],"tables":{}}"#;
        let old: Manifest = serde_json::from_str(old).unwrap();
        assert_eq!(old.files[0].digest, None);
        let back = store.manifest("s", "k2").unwrap();
        assert_eq!(
            back.files,
            vec![FileEntry {
                name: "t.parquet".into(),
                bytes: 3,
                digest: Some(
                    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                        .into()
                ),
            }]
        );

        // A manifest naming a table file that is not there is refused.
        let st = store.begin("s", "k3").unwrap();
        let mut m = manifest("k3");
        m.tables.insert(
            "t".into(),
            TableEntry {
                files: vec!["missing.parquet".into()],
                rows: 1,
            },
        );
        assert!(st.publish(m).is_err());
        assert!(!store.exists("s", "k3"));
        assert!(store.leftovers("s").is_empty());

        // An unreadable manifest is skipped by list and reported for clean.
        std::fs::create_dir_all(tmp.path().join("s/k4")).unwrap();
        std::fs::write(tmp.path().join("s/k4").join(MANIFEST), b"").unwrap();
        assert_eq!(store.list("s").unwrap().len(), 1);
        assert_eq!(store.unreadable("s").unwrap(), vec!["k4".to_string()]);
    }
}
