//! The `coact` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};
use coact_pipeline::config::Config;
use coact_pipeline::pipeline::progress::Progress;
use coact_pipeline::pipeline::query::{self, Format};
use coact_pipeline::pipeline::{clean, runner, status, verify};
use coact_pipeline::registry::REGISTRY;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "coact",
    version,
    about = "Sparse autoencoders with sparsity-guided orthogonality: a cached, queryable study pipeline",
    after_help = stage_help()
)]
struct Cli {
    /// The study configuration.
    #[arg(long, short, global = true, default_value = "pipeline.yaml")]
    config: PathBuf,
    /// No progress bars or notes.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run stages (all when none named) and any missing prerequisites; fresh artifacts are cache hits.
    Run {
        /// Stage names (see `coact --help`); none: every stage.
        #[arg(help = run_stages_help())]
        stages: Vec<String>,
        /// Rerun the named stages even when fresh.
        #[arg(long)]
        force: bool,
        /// Check the content digests of fresh artifacts before serving them;
        /// rebuild the damaged ones (sizes are always checked).
        #[arg(long)]
        verify: bool,
        /// Units of a stage to run at once where they are independent (train,
        /// compete, bench), the threads split among them; the artifacts are
        /// the same bytes for any value. Default: 2 where there are at least
        /// 2 threads (see the README's "Units at once"), else 1.
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
    },
    /// Each stage's artifacts: fresh, stale (and why), missing or damaged (which file).
    Status,
    /// Check the content of the config's artifacts (one stage's when named)
    /// against the digests recorded when they were published.
    Verify {
        /// Only this stage's artifacts.
        stage: Option<String>,
    },
    /// SQL over every Parquet table of the fresh artifacts (`<stage>_<table>`).
    Query {
        /// The SQL statement.
        sql: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// List the tables and their columns.
        #[arg(long)]
        tables: bool,
    },
    /// Remove stale artifacts and leftovers of interrupted runs.
    Clean {
        /// Remove fresh artifacts too.
        #[arg(long)]
        all: bool,
    },
}

/// The stages and benchmarks, from the registry.
fn stage_help() -> String {
    let mut s = String::from("Stages, in dependency order:\n");
    for st in REGISTRY.stages {
        s += &format!("  {:<15}{}\n", st.name(), st.about());
    }
    s += "\nBenchmarks (the bench stage; choose with bench.benchmarks):\n";
    for b in REGISTRY.benchmarks {
        s += &format!("  {:<15}{}\n", b.name(), b.about());
    }
    s
}

fn run_stages_help() -> String {
    format!(
        "Stages to run: {}; none: every stage",
        REGISTRY.stage_names().join(", ")
    )
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Each SAE step allocates and frees tens of MB of buffers (5-25 MB each).
/// glibc returns such blocks to the kernel on free and takes fresh zeroed
/// pages on the next allocation: 4.4 M page faults in one 1 Mi-token
/// training run. Serving them from the heap and not trimming it cuts that
/// to 0.7 M (the time saved, a few percent, is within this machine's
/// run-to-run noise). Values are unaffected.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        // glibc's cap on the mmap threshold (32 MiB on 64-bit).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Two units at once where there are two threads or more. On the 2-core
/// development machine this took 4% off train (whose step already keeps
/// both cores busy) and 10-20% off bench and compete (which leave a core
/// idle between their parallel parts), in one paired measurement.
fn default_jobs() -> usize {
    if rayon::current_num_threads() >= 2 {
        2
    } else {
        1
    }
}

fn real_main(cli: Cli) -> Result<()> {
    coact_pipeline::pipeline::progress::set_quiet(cli.quiet);
    let cfg = Config::load(&cli.config)?;
    REGISTRY
        .validate(&cfg)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", cli.config.display()))?;
    let progress = Progress { quiet: cli.quiet };
    match cli.command {
        Command::Run {
            stages,
            force,
            verify,
            jobs,
        } => {
            let jobs = jobs.map_or_else(default_jobs, usize::from);
            runner::run(&cfg, &REGISTRY, &stages, force, verify, jobs, &progress)
        }
        Command::Verify { stage } => {
            let (report, damaged) = verify::verify(&cfg, &REGISTRY, stage.as_deref())?;
            print!("{report}");
            if damaged > 0 {
                anyhow::bail!(
                    "{damaged} damaged artifact{}",
                    if damaged == 1 { "" } else { "s" }
                );
            }
            Ok(())
        }
        Command::Status => {
            print!("{}", status::report(&cfg, &REGISTRY)?);
            Ok(())
        }
        Command::Query {
            sql,
            format,
            tables,
        } => {
            let sources = query::fresh_tables(&cfg, &REGISTRY)?;
            if tables {
                print!("{}", query::describe(&sources)?);
                return Ok(());
            }
            let sql = sql.ok_or_else(|| {
                anyhow::anyhow!("give a SQL statement, or --tables to list the tables")
            })?;
            let batches = query::run_sql(&sources, &sql)?;
            print!("{}", query::format(&batches, format)?);
            Ok(())
        }
        Command::Clean { all } => {
            let removed = clean::clean(&cfg, &REGISTRY, all)?;
            if removed.is_empty() {
                progress.note("nothing to remove");
            }
            for r in removed {
                progress.note(format!("removed {r}"));
            }
            Ok(())
        }
    }
}
