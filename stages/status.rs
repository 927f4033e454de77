//! `coact status`: one line per stage, fresh / stale (and why) / missing /
//! damaged (which file) / not yet implemented.

use crate::config::Config;
use crate::plan::{status, State};
use crate::store::Store;
use anyhow::Result;
use std::fmt::Write;

pub fn report(cfg: &Config) -> Result<String> {
    let store = Store::new(cfg.data_dir());
    let mut out = String::new();
    writeln!(
        out,
        "study {} ({}), data in {}",
        cfg.study,
        cfg.file.display(),
        store.root().display()
    )?;
    if let Some(h) = crate::lock::current_holder(store.root()) {
        writeln!(
            out,
            "in use by `{}` ({}): what it is building shows as missing until it publishes",
            h.command,
            h.describe()
        )?;
    }
    for (stage, planned, state) in status(cfg, &store)? {
        let key = planned.as_ref().map(|p| p.key.as_str()).unwrap_or("-");
        let unit = planned
            .as_ref()
            .and_then(|p| p.unit.as_deref())
            .map(|u| format!("  [{u}]"))
            .unwrap_or_default();
        match state {
            State::Fresh => {
                let m = store.manifest(stage, key)?;
                let tables: Vec<String> = m
                    .tables
                    .iter()
                    .map(|(t, e)| format!("{stage}_{t} {} rows", e.rows))
                    .collect();
                writeln!(
                    out,
                    "{stage:<9} fresh    {key}{unit}  {:.1} s; {}",
                    m.elapsed_s,
                    tables.join(", ")
                )?;
            }
            State::Stale(why) => {
                writeln!(out, "{stage:<9} stale    {key}{unit}  (rerun needed)")?;
                for w in why {
                    writeln!(out, "{:<19}{w}", "")?;
                }
            }
            State::Missing => writeln!(out, "{stage:<9} missing  {key}{unit}")?,
            State::Damaged(damage) => {
                writeln!(
                    out,
                    "{stage:<9} damaged  {key}{unit}  (`coact run` rebuilds it)"
                )?;
                for d in damage {
                    writeln!(out, "{:<19}{d}", "")?;
                }
            }
            State::NotImplemented(issue) => {
                writeln!(out, "{stage:<9} not yet implemented ({issue})")?
            }
        }
    }
    Ok(out)
}
