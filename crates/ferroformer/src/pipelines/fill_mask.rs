//! `fill-mask`: the most likely tokens for the mask token(s) of a text.

use std::path::Path;

use serde::Serialize;

use super::{argsort_desc, rows3, softmax, PipelineConfig, Runner};
use crate::error::{Error, Result};
use crate::models::tokenizer::EncodeOptions;
use crate::models::AutoModelForMaskedLM;

/// Options of `fill-mask`.
#[derive(Debug, Clone)]
pub struct FillMaskOptions {
    /// Predictions per mask (default 5).
    pub top_k: usize,
    /// Restrict the predictions to these tokens. A target that is not one token of the
    /// vocabulary is replaced by the first token it tokenizes to, as `transformers` does.
    pub targets: Option<Vec<String>>,
}

impl Default for FillMaskOptions {
    fn default() -> Self {
        Self {
            top_k: 5,
            targets: None,
        }
    }
}

/// One candidate for a mask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FillMaskPrediction {
    /// Probability.
    pub score: f32,
    /// Token id.
    pub token: u32,
    /// The token, decoded.
    pub token_str: String,
    /// The input with the mask replaced by the token, decoded.
    pub sequence: String,
}

/// The result for one text: candidates for its mask, or one list per mask when the text has
/// several.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FillMaskOutput {
    /// The text has one mask.
    Single(Vec<FillMaskPrediction>),
    /// One list per mask, in order.
    Multiple(Vec<Vec<FillMaskPrediction>>),
}

/// A masked language model with its tokenizer.
pub struct FillMaskPipeline {
    runner: Runner<AutoModelForMaskedLM>,
    mask_id: u32,
}

impl FillMaskPipeline {
    /// Loads the tokenizer and the model from a checkpoint directory.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        let runner = Runner::<AutoModelForMaskedLM>::from_dir(dir, config)?;
        let mask_id = runner.tokenizer.mask_token_id().ok_or_else(|| {
            Error::file(
                dir,
                "fill-mask needs a tokenizer with a mask token, and this one defines none",
            )
        })?;
        Ok(Self { runner, mask_id })
    }

    /// The token ids of `targets` (deduplicated, sorted).
    fn target_ids(&self, targets: &[String]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for target in targets {
            match self.runner.tokenizer.token_to_id(target) {
                Some(id) => ids.push(id),
                None => {
                    let opts = EncodeOptions {
                        add_special_tokens: false,
                        ..EncodeOptions::default()
                    };
                    let enc = self.runner.tokenizer.encode(target, &opts)?;
                    if let Some(&id) = enc.first().and_then(|e| e.ids.first()) {
                        ids.push(id);
                    }
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Err(Error::Invalid(
                "fill-mask: none of the targets is a token of this vocabulary".into(),
            ));
        }
        Ok(ids)
    }

    /// Fills the masks of every text.
    pub fn run(&self, texts: &[&str], options: &FillMaskOptions) -> Result<Vec<FillMaskOutput>> {
        if options.top_k == 0 {
            return Err(Error::Invalid("fill-mask: top_k must be at least 1".into()));
        }
        let targets = match &options.targets {
            Some(t) => Some(self.target_ids(t)?),
            None => None,
        };
        let pad = self.runner.tokenizer.pad_token_id();
        let mask_token = self
            .runner
            .tokenizer
            .mask_token()
            .unwrap_or("[MASK]")
            .to_string();
        let mut out = Vec::with_capacity(texts.len());
        let chunks = texts.chunks(self.runner.config.batch_size.max(1));
        for ((batch, logits), chunk) in self.runner.run_texts(texts)?.into_iter().zip(chunks) {
            let logits = rows3(&logits)?;
            for ((enc, row_logits), text) in batch.encodings.iter().zip(&logits).zip(chunk) {
                let masked: Vec<usize> = (0..enc.ids.len())
                    .filter(|&i| enc.attention_mask[i] == 1 && enc.ids[i] == self.mask_id)
                    .collect();
                if masked.is_empty() {
                    return Err(Error::Invalid(format!(
                        "fill-mask: no mask token ({mask_token}) in the input {text:?}"
                    )));
                }
                let single = masked.len() == 1;
                let real: Vec<u32> = enc
                    .ids
                    .iter()
                    .zip(&enc.attention_mask)
                    .filter(|(id, &m)| m == 1 && Some(**id) != pad)
                    .map(|(&id, _)| id)
                    .collect();
                let mut per_mask = Vec::with_capacity(masked.len());
                for &pos in &masked {
                    let probs = softmax(&row_logits[pos]);
                    let (candidates, scores): (Vec<u32>, Vec<f32>) = match &targets {
                        Some(t) => (t.clone(), t.iter().map(|&i| probs[i as usize]).collect()),
                        None => ((0..probs.len() as u32).collect(), probs),
                    };
                    let k = options.top_k.min(candidates.len());
                    let mut preds = Vec::with_capacity(k);
                    for &c in argsort_desc(&scores).iter().take(k) {
                        let token = candidates[c];
                        // The sequence is the input with this mask replaced (and the padding
                        // dropped); special tokens are kept when there are several masks, as
                        // in `transformers`.
                        let mut filled = real.clone();
                        let real_pos = enc.ids[..pos]
                            .iter()
                            .zip(&enc.attention_mask[..pos])
                            .filter(|(id, &m)| m == 1 && Some(**id) != pad)
                            .count();
                        filled[real_pos] = token;
                        preds.push(FillMaskPrediction {
                            score: scores[c],
                            token,
                            token_str: self.runner.tokenizer.decode(&[token], false)?,
                            sequence: self.runner.tokenizer.decode(&filled, single)?,
                        });
                    }
                    per_mask.push(preds);
                }
                out.push(if single {
                    FillMaskOutput::Single(per_mask.pop().unwrap_or_default())
                } else {
                    FillMaskOutput::Multiple(per_mask)
                });
            }
        }
        Ok(out)
    }
}
