//! Progress bars and notes on stderr, silenced by `-q`.
//!
//! Every bar joins one process-wide `MultiProgress`, so that the bars of
//! units running at once stack instead of overwriting each other, and notes
//! are printed with the bars suspended.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// `-q` for notes said outside a stage's run (the compute choice, which
/// the config's resolution says once per process).
static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences [`process_note`] for this process (`-q`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// A note from code that holds no [`Progress`]; silenced by `-q`.
pub fn process_note(line: impl AsRef<str>) {
    Progress {
        quiet: QUIET.load(Ordering::Relaxed),
    }
    .note(line);
}

#[derive(Clone, Copy)]
pub struct Progress {
    pub quiet: bool,
}

fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

impl Progress {
    /// A bar over `total` items of `unit` with a rate (e.g. tokens/s).
    pub fn bar(&self, total: u64, message: impl Into<String>, unit: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let pb = bars().add(ProgressBar::new(total));
        let template = format!(
            "{{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})"
        );
        pb.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_message(message.into());
        pb
    }

    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let pb = bars().add(ProgressBar::new_spinner());
        pb.set_message(message.into());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    }

    pub fn note(&self, line: impl AsRef<str>) {
        if !self.quiet {
            // Not MultiProgress::println, which prints nothing when stderr
            // is not a terminal (a log file, CI).
            bars().suspend(|| eprintln!("{}", line.as_ref()));
        }
    }
}
