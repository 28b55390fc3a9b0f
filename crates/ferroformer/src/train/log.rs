//! A run's `log.jsonl`: one JSON object per training step or evaluation, kept consistent
//! with the checkpoint a run resumes from, and the series it holds for plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checkpoint::atomic_write;
use crate::error::{Error, Result};

/// Appends records to `log.jsonl` and remembers every numeric field as a series over steps.
pub struct LogWriter {
    path: PathBuf,
    series: BTreeMap<String, Vec<(u64, f64)>>,
}

impl LogWriter {
    /// Opens the log, dropping entries after `step` (a resumed run rewrites what came after
    /// its checkpoint, so the log never holds steps twice).
    pub fn open(path: &Path, step: u64) -> Result<Self> {
        let mut w = Self {
            path: path.to_path_buf(),
            series: BTreeMap::new(),
        };
        if let Ok(text) = std::fs::read_to_string(path) {
            let mut kept = String::new();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let s = v["step"].as_u64().unwrap_or(u64::MAX);
                if s > step {
                    continue;
                }
                w.remember(&v);
                kept.push_str(line);
                kept.push('\n');
            }
            atomic_write(path, kept.as_bytes())?;
        }
        Ok(w)
    }

    fn remember(&mut self, v: &serde_json::Value) {
        let Some(step) = v["step"].as_u64() else {
            return;
        };
        if let Some(obj) = v.as_object() {
            for (k, x) in obj {
                if let (true, Some(x)) = (k != "step", x.as_f64()) {
                    self.series.entry(k.clone()).or_default().push((step, x));
                }
            }
        }
    }

    /// Appends one record (an object with a `step`).
    pub fn append(&mut self, v: serde_json::Value) -> Result<()> {
        use std::io::Write;
        self.remember(&v);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::file(&self.path, e))?;
        writeln!(f, "{v}").map_err(|e| Error::file(&self.path, e))
    }

    /// The values of field `key` by step, in the order they were logged.
    pub fn series(&self, key: &str) -> &[(u64, f64)] {
        self.series.get(key).map_or(&[], Vec::as_slice)
    }

    /// Logs a training step.
    pub fn train(&mut self, step: u64, loss: f64, lr: f64) -> Result<()> {
        self.append(serde_json::json!({ "step": step, "loss": loss, "lr": lr }))
    }

    /// Draws `train_key` and `val_key` against steps (see [`crate::viz::loss_curves_png`]).
    pub fn plot(&self, path: &Path, train_key: &str, val_key: &str) -> Result<()> {
        crate::viz::loss_curves_png(path, self.series(train_key), self.series(val_key))
    }
}
