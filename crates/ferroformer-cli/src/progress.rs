//! The progress bar of the training commands, on stderr: hidden without a terminal (logs,
//! CI) and with `--json`, where messages go to stderr line by line, or not at all.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A steps bar, and where messages go.
pub struct TrainingProgress {
    /// The bar (hidden unless stderr is a terminal and the output is not JSON).
    pub bar: ProgressBar,
    interactive: bool,
    json: bool,
}

impl TrainingProgress {
    /// A bar of `steps` steps.
    pub fn new(steps: u64, json: bool) -> anyhow::Result<Self> {
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        );
        let interactive = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        if !interactive {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Ok(Self {
            bar,
            interactive,
            json,
        })
    }

    /// Whether the bar is drawn (stderr is a terminal and the output is not JSON).
    pub fn interactive(&self) -> bool {
        self.interactive
    }

    /// A message above the bar, or on stderr without one; nothing with `--json` (stdout
    /// carries the events).
    pub fn say(&self, msg: String) {
        if self.interactive {
            self.bar.println(msg);
        } else if !self.json {
            eprintln!("{msg}");
        }
    }
}

/// A flag Ctrl-C sets: the training loop saves a checkpoint and stops at the next step; a
/// second Ctrl-C exits at once without saving.
pub fn interrupt_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: saving a checkpoint, then exiting (Ctrl-C again to quit now)");
    })?;
    Ok(stop)
}
