//! Training: tokenizers you can train, next-token datasets, and the language-model training
//! loop. Sits beside generation and uses `arch`/`models`.

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod data;
pub mod labelled_data;
pub mod lm;
pub mod log;
pub mod optim;
pub mod tokenizer;

pub use config::{Preset, TrainConfig};
pub use lm::{train_lm, train_lm_on, TrainEvent};
