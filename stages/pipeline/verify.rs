//! Published artifacts checked against their manifests: every file's size
//! (cheap: `coact status` and `coact run` always do it) and its content
//! digest recorded at publish time (`coact verify`, `coact run --verify`).

use crate::config::Config;
use crate::pipeline::plan::plan;
use crate::pipeline::stage::Registry;
use crate::pipeline::store::{Manifest, Store};
use anyhow::{anyhow, Result};
use std::fmt::Write;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    Missing,
    Size { actual: u64, expected: u64 },
    Content { expected: String, actual: String },
    Unreadable(String),
}

/// One damaged file of an artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    pub file: String,
    pub problem: Problem,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = &self.file;
        match &self.problem {
            Problem::Missing => write!(f, "{file} is missing"),
            Problem::Size { actual, expected } => {
                write!(f, "{file} is {actual} bytes, manifest says {expected}")
            }
            Problem::Content { expected, actual } => write!(
                f,
                "{file} differs from what was published ({} at publish, {} now)",
                short(expected),
                short(actual)
            ),
            Problem::Unreadable(e) => write!(f, "{file}: {e}"),
        }
    }
}

fn short(digest: &str) -> String {
    digest.chars().take(7 + 12).collect::<String>() + "…"
}

/// The damage in a line: the first few files and how many more.
pub fn summary(damage: &[Damage]) -> String {
    let mut s: Vec<String> = damage.iter().take(3).map(|d| d.to_string()).collect();
    if damage.len() > 3 {
        s.push(format!("and {} more", damage.len() - 3));
    }
    s.join("; ")
}

/// Every file of the manifest present with the size it was published with.
pub fn check_sizes(dir: &Path, m: &Manifest) -> Vec<Damage> {
    m.files
        .iter()
        .filter_map(|f| {
            let problem = match std::fs::metadata(dir.join(&f.name)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Problem::Missing,
                Err(e) => Problem::Unreadable(e.to_string()),
                Ok(meta) if !meta.is_file() => Problem::Unreadable("not a file".into()),
                Ok(meta) if meta.len() != f.bytes => Problem::Size {
                    actual: meta.len(),
                    expected: f.bytes,
                },
                Ok(_) => return None,
            };
            Some(Damage {
                file: f.name.clone(),
                problem,
            })
        })
        .collect()
}

/// What a content check found.
#[derive(Debug, Default)]
pub struct ContentCheck {
    pub damage: Vec<Damage>,
    /// Files whose manifest records no digest (published before coact
    /// recorded them): checked by size only.
    pub without_digest: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Sizes, then the content digest of every file that has one.
pub fn check_content(dir: &Path, m: &Manifest) -> ContentCheck {
    let mut out = ContentCheck {
        damage: check_sizes(dir, m),
        ..Default::default()
    };
    for f in &m.files {
        out.files += 1;
        if out.damage.iter().any(|d| d.file == f.name) {
            continue;
        }
        let Some(expected) = &f.digest else {
            out.without_digest += 1;
            continue;
        };
        out.bytes += f.bytes;
        match crate::pipeline::digest::sha256_file(&dir.join(&f.name)) {
            Ok(actual) if &actual == expected => {}
            Ok(actual) => out.damage.push(Damage {
                file: f.name.clone(),
                problem: Problem::Content {
                    expected: expected.clone(),
                    actual,
                },
            }),
            Err(e) => out.damage.push(Damage {
                file: f.name.clone(),
                problem: Problem::Unreadable(e.to_string()),
            }),
        }
    }
    out
}

/// The damage of a published artifact (by size, or by content too); an
/// unreadable manifest is damage of its own.
pub fn check_artifact(store: &Store, stage: &str, key: &str, content: bool) -> Vec<Damage> {
    let dir = store.artifact_dir(stage, key);
    match store.manifest(stage, key) {
        Ok(m) if content => check_content(&dir, &m).damage,
        Ok(m) => check_sizes(&dir, &m),
        Err(e) => vec![Damage {
            file: crate::pipeline::store::MANIFEST.into(),
            problem: Problem::Unreadable(format!("{e:#}")),
        }],
    }
}

/// `coact verify [STAGE]`: the content of every artifact the config uses
/// (of one stage when named). Returns the report and how many are damaged.
pub fn verify(cfg: &Config, registry: &Registry, stage: Option<&str>) -> Result<(String, usize)> {
    if let Some(s) = stage {
        registry.stage(s).ok_or_else(|| {
            anyhow!(
                "unknown stage '{s}'; stages: {}",
                registry.stage_names().join(", ")
            )
        })?;
    }
    let store = Store::new(cfg.data_dir());
    let started = std::time::Instant::now();
    let mut out = String::new();
    let (mut checked, mut damaged, mut bytes, mut old) = (0, 0, 0u64, 0);
    for p in plan(cfg, registry)?
        .iter()
        .filter(|p| stage.is_none_or(|s| p.stage == s))
    {
        let (name, key) = (p.stage, p.key.as_str());
        let unit = p
            .unit
            .as_deref()
            .map(|u| format!("  [{u}]"))
            .unwrap_or_default();
        if !store.exists(name, key) {
            writeln!(
                out,
                "{name:<9} missing  {key}{unit}  (not built; nothing to check)"
            )?;
            continue;
        }
        checked += 1;
        let check = match store.manifest(name, key) {
            Ok(m) => check_content(&store.artifact_dir(name, key), &m),
            Err(_) => ContentCheck {
                damage: check_artifact(&store, name, key, false),
                ..Default::default()
            },
        };
        bytes += check.bytes;
        if !check.damage.is_empty() {
            damaged += 1;
            writeln!(out, "{name:<9} damaged  {key}{unit}")?;
            for d in &check.damage {
                writeln!(out, "{:<19}{d}", "")?;
            }
        } else if check.without_digest > 0 {
            old += 1;
            writeln!(
                out,
                "{name:<9} sizes ok {key}{unit}  {} of {} files have no digest (published before coact \
                 recorded them): content not verifiable; `coact run --force {name}` records them",
                check.without_digest, check.files
            )?;
        } else {
            writeln!(
                out,
                "{name:<9} ok       {key}{unit}  {} files, {:.1} MB",
                check.files,
                check.bytes as f64 / 1e6
            )?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    write!(
        out,
        "checked {checked} artifacts, {:.1} MB hashed in {secs:.1} s: ",
        bytes as f64 / 1e6
    )?;
    match damaged {
        0 => write!(out, "none damaged")?,
        n => write!(
            out,
            "{n} damaged; `coact run --verify` rebuilds damaged artifacts"
        )?,
    }
    if old > 0 {
        write!(out, "; {old} without digests")?;
    }
    writeln!(out)?;
    Ok((out, damaged))
}
