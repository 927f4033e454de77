//! Progress bars and notes on stderr, silenced by `-q`.

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy)]
pub struct Progress {
    pub quiet: bool,
}

impl Progress {
    /// A bar over `total` items of `unit` with a rate (e.g. tokens/s).
    pub fn bar(&self, total: u64, message: impl Into<String>, unit: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(total);
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
        let pb = ProgressBar::new_spinner();
        pb.set_message(message.into());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    }

    pub fn note(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }
}
