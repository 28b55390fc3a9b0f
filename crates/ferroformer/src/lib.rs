//! # ferroformer
//!
//! Transformers from their parts, in Rust: the building blocks ([`nn`]), the architectures
//! built from them ([`arch`]), and pretrained model families ([`models`]) that load
//! Hugging Face checkpoints onto the same blocks.
//!
//! Layers, from the bottom: `nn` → `arch` → `models` → `generation` / `train` → `pipelines`.
//! A layer imports only layers below it.

#![warn(missing_docs)]

pub mod arch;
pub mod error;
pub mod generation;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod pipelines;
pub mod train;
pub mod viz;
pub mod weights;

pub use error::{Error, Result};
pub use generation::AutoModelForCausalLM;
pub use generation::{GenerateOutput, GenerationConfig};
pub use models::{
    AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification, AutoModelForTokenClassification, LoadOptions,
    PretrainedConfig,
};
pub use weights::Weights;

pub use candle_core::{DType, Device, Tensor};

/// The README's examples compile as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
