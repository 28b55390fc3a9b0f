//! `AutoModelForSeq2SeqLM`'s model side: which encoder-decoder family a `config.json`
//! describes (dispatch on `model_type`) and loading it onto the shared
//! [`EncoderDecoderTransformer`].

use std::path::Path;

use serde_json::Value;

use super::bart::{BartConfig, BART_FAMILY};
use super::t5::{t5_names, T5Config};
use super::{read_config, LoadOptions};
use crate::arch::EncoderDecoderTransformer;
use crate::error::{Error, Result};
use crate::weights::Weights;

/// The `model_type`s `AutoModelForSeq2SeqLM` loads (M2M100 and NLLB checkpoints say
/// `m2m_100`).
pub const SUPPORTED_SEQ2SEQ_MODEL_TYPES: &[&str] =
    &["t5", "mt5", "bart", "mbart", "marian", "pegasus", "m2m_100"];

/// Whether `model_type` is an encoder-decoder family this crate loads.
pub fn is_seq2seq_model_type(model_type: &str) -> bool {
    SUPPORTED_SEQ2SEQ_MODEL_TYPES.contains(&model_type)
}

fn parse<T: serde::de::DeserializeOwned>(raw: &Value, source: &Path) -> Result<T> {
    serde_json::from_value(raw.clone()).map_err(|e| Error::file(source, e))
}

/// Builds the model a parsed `config.json` (read from `source`) describes from the
/// checkpoint weights `w` (rooted where `save_pretrained` writes them).
pub fn load_seq2seq_lm(
    w: &Weights,
    raw: &Value,
    source: &Path,
) -> Result<EncoderDecoderTransformer> {
    let model_type = raw.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    match model_type {
        "t5" | "mt5" => {
            let c: T5Config = parse(raw, source)?;
            let cfg = c.encoder_decoder_config()?;
            EncoderDecoderTransformer::load(w, &cfg, &t5_names(&cfg))
        }
        t if BART_FAMILY.contains(&t) => {
            let c: BartConfig = parse(raw, source)?;
            let cfg = c.encoder_decoder_config()?;
            // `BartForConditionalGeneration` keeps the body under `model.`; `BartModel`
            // exports store it at the root.
            let body = if w.is_trainable() {
                w.pp("model")
            } else {
                super::under_prefix_if_present(w, "model", "encoder.layers.0.fc1.weight")
            };
            let names = c.names(&cfg, &body)?;
            EncoderDecoderTransformer::load_split(&body, w, &cfg, &names)
        }
        other => Err(Error::file(
            source,
            format!(
                "model_type `{other}` is not a supported encoder-decoder model; supported: {}",
                SUPPORTED_SEQ2SEQ_MODEL_TYPES.join(", ")
            ),
        )),
    }
}

/// Loads the encoder-decoder model of a checkpoint directory, with its parsed
/// `config.json`.
pub fn seq2seq_lm_from_dir(
    dir: &Path,
    options: &LoadOptions,
) -> Result<(EncoderDecoderTransformer, Value)> {
    let raw: Value = read_config(dir)?;
    let w = super::weights_from_dir(dir, options.dtype, &options.device)?;
    let model = load_seq2seq_lm(&w, &raw, &dir.join("config.json"))?;
    Ok((model, raw))
}
