//! Training: tokenizers you can train, next-token datasets, the language-model training
//! loop, and fine-tuning of classification heads on pretrained encoders (one loop,
//! [`finetune`], for the sequence [`classifier`] and the [`token_classifier`]). Sits beside
//! generation and uses `arch`/`models`.

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod data;
pub mod finetune;
pub mod labelled_data;
pub mod lm;
pub mod log;
pub mod optim;
pub mod token_classifier;
pub mod tokenizer;

pub use config::{Preset, TrainConfig};
pub use lm::{train_lm, train_lm_on, TrainEvent};
