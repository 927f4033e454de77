//! `coact status`: one line per stage, fresh / stale (and why) / missing /
//! damaged (which file).

use crate::config::Config;
use crate::pipeline::plan::{status, Planned, State};
use crate::pipeline::stage::Registry;
use crate::pipeline::store::Store;
use anyhow::Result;
use std::fmt::Write;

pub fn report(cfg: &Config, registry: &Registry) -> Result<String> {
    let store = Store::new(cfg.data_dir());
    let mut out = String::new();
    writeln!(
        out,
        "study {} ({}), data in {}",
        cfg.study,
        cfg.file.display(),
        store.root().display()
    )?;
    if let Some(h) = crate::pipeline::lock::current_holder(store.root()) {
        writeln!(
            out,
            "in use by `{}` ({}): what it is building shows as missing until it publishes",
            h.command,
            h.describe()
        )?;
    }
    let states = status(cfg, &store, registry)?;
    for s in registry.stages {
        let mine: Vec<&(Planned, State)> =
            states.iter().filter(|(p, _)| p.stage == s.name()).collect();
        // A stage this config gives nothing to build still gets its line.
        if mine.is_empty() {
            let why = if s.on_demand() {
                "not needed: no selected benchmark reads it"
            } else {
                "nothing to build for this config"
            };
            writeln!(out, "{:<9} -        {why}", s.name())?;
        }
        for (planned, state) in mine {
            write_state(&mut out, &store, planned, state)?;
        }
    }
    Ok(out)
}

/// One artifact's line (and, when stale or damaged, why).
fn write_state(out: &mut String, store: &Store, planned: &Planned, state: &State) -> Result<()> {
    let (stage, key) = (planned.stage, planned.key.as_str());
    let unit = planned
        .unit
        .as_deref()
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
    }
    Ok(())
}
