//! The `coact` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};
use coact_pipeline::config::Config;
use coact_pipeline::progress::Progress;
use coact_pipeline::query::{self, Format};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "coact",
    version,
    about = "Sparse autoencoders with sparsity-guided orthogonality: a cached, queryable study pipeline"
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
        /// tokenize, extract, train, compete, bench, report
        stages: Vec<String>,
        /// Rerun the named stages even when fresh.
        #[arg(long)]
        force: bool,
        /// Check the content digests of fresh artifacts before serving them;
        /// rebuild the damaged ones (sizes are always checked).
        #[arg(long)]
        verify: bool,
    },
    /// Each stage: fresh, stale (and why), missing, damaged (which file) or not yet implemented.
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

fn main() {
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    let cfg = Config::load(&cli.config)?;
    let progress = Progress { quiet: cli.quiet };
    match cli.command {
        Command::Run {
            stages,
            force,
            verify,
        } => coact_pipeline::runner::run(&cfg, &stages, force, verify, &progress),
        Command::Verify { stage } => {
            let (report, damaged) = coact_pipeline::verify::verify(&cfg, stage.as_deref())?;
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
            print!("{}", coact_pipeline::status::report(&cfg)?);
            Ok(())
        }
        Command::Query {
            sql,
            format,
            tables,
        } => {
            let sources = query::fresh_tables(&cfg)?;
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
            let removed = coact_pipeline::clean::clean(&cfg, all)?;
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
