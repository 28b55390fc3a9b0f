//! `fill-mask`: the most likely tokens for the mask token(s) of a text.

use std::path::Path;

use serde::Serialize;

use super::driver::{self, EncoderRunner, PipelineTask, Prepared};
use super::{argsort_desc, softmax, PipelineConfig, PipelineInput, Task};
use crate::error::{Error, Result};
use crate::models::tokenizer::{EncodeOptions, Encoding};
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
    runner: EncoderRunner<AutoModelForMaskedLM>,
    mask_id: u32,
}

/// The options of one run, resolved.
pub(crate) struct Params {
    top_k: usize,
    /// The target token ids (deduplicated, sorted), if any.
    targets: Option<Vec<u32>>,
}

impl FillMaskPipeline {
    /// Loads the tokenizer and the model from a checkpoint directory.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        let runner = EncoderRunner::<AutoModelForMaskedLM>::from_dir(dir, config)?;
        let mask_id = runner.tokenizer.mask_token_id().ok_or_else(|| {
            Error::file(
                dir,
                "fill-mask needs a tokenizer with a mask token, and this one defines none",
            )
        })?;
        Ok(Self { runner, mask_id })
    }

    /// The token ids of `targets` (deduplicated, sorted); every one must be a row of the
    /// model's output (an added token of the tokenizer may not be).
    fn target_ids(&self, targets: &[String]) -> Result<Vec<u32>> {
        let config = self.runner.model.config();
        let vocab_size = config
            .raw
            .get("vocab_size")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize);
        let mut ids = Vec::new();
        for target in targets {
            let id = match self.runner.tokenizer.token_to_id(target) {
                Some(id) => Some(id),
                None => {
                    let opts = EncodeOptions {
                        add_special_tokens: false,
                        ..EncodeOptions::default()
                    };
                    let enc = self.runner.tokenizer.encode(target, &opts)?;
                    enc.first().and_then(|e| e.ids.first()).copied()
                }
            };
            if let (Some(id), Some(vocab_size)) = (id, vocab_size) {
                if id as usize >= vocab_size {
                    return Err(Error::file(
                        config.source(),
                        format!(
                            "fill-mask: the target {target:?} is token {id} of the tokenizer,                              but the model predicts only {vocab_size} tokens (`vocab_size`)"
                        ),
                    ));
                }
            }
            ids.extend(id);
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
        driver::run(self, texts, options, self.runner.config.batch_size)
    }

    /// The candidates for the mask at `pos` of `enc`, best first.
    fn predictions(
        &self,
        enc: &Encoding,
        real: &[u32],
        pos: usize,
        logits: &[f32],
        single: bool,
        params: &Params,
    ) -> Result<Vec<FillMaskPrediction>> {
        let probs = softmax(logits);
        let (candidates, scores): (Vec<u32>, Vec<f32>) = match &params.targets {
            Some(t) => {
                let scores = t
                    .iter()
                    .map(|&i| {
                        probs.get(i as usize).copied().ok_or_else(|| {
                            Error::Invalid(format!(
                                "fill-mask: the target token {i} is beyond the model's {} \
                                 output tokens",
                                probs.len()
                            ))
                        })
                    })
                    .collect::<Result<Vec<f32>>>()?;
                (t.clone(), scores)
            }
            None => ((0..probs.len() as u32).collect(), probs),
        };
        let pad = self.runner.tokenizer.pad_token_id();
        // Where the mask sits among the tokens kept in the sequence.
        let real_pos = enc.ids[..pos].iter().filter(|&&id| Some(id) != pad).count();
        let k = params.top_k.min(candidates.len());
        let mut preds = Vec::with_capacity(k);
        for &c in argsort_desc(&scores).iter().take(k) {
            let token = candidates[c];
            // The sequence is the input with this mask replaced (and the padding dropped);
            // special tokens are kept when there are several masks, as in `transformers`.
            let mut filled = real.to_vec();
            if let Some(slot) = filled.get_mut(real_pos) {
                *slot = token;
            }
            preds.push(FillMaskPrediction {
                score: scores[c],
                token,
                token_str: self.runner.tokenizer.decode(&[token], false)?,
                sequence: self.runner.tokenizer.decode(&filled, single)?,
            });
        }
        Ok(preds)
    }
}

impl PipelineTask for FillMaskPipeline {
    type Input<'a> = &'a str;
    type Options = FillMaskOptions;
    type Params = Params;
    type Row = Encoding;
    type State = ();
    type RowOutput = Vec<Vec<f32>>;
    type Output = FillMaskOutput;

    fn input(input: &PipelineInput) -> Result<&str> {
        input.as_text(Task::FillMask)
    }

    fn params(&self, options: &FillMaskOptions) -> Result<Params> {
        if options.top_k == 0 {
            return Err(Error::Invalid("fill-mask: top_k must be at least 1".into()));
        }
        Ok(Params {
            top_k: options.top_k,
            targets: options
                .targets
                .as_ref()
                .map(|t| self.target_ids(t))
                .transpose()?,
        })
    }

    /// A text without a mask token fails before anything runs.
    fn preprocess(&self, text: &str, _: &Params) -> Result<Prepared<(), Encoding>> {
        let enc = self.runner.encode_text(text)?;
        if !enc.ids.contains(&self.mask_id) {
            let mask_token = self.runner.tokenizer.mask_token().unwrap_or("[MASK]");
            return Err(Error::Invalid(format!(
                "fill-mask: no mask token ({mask_token}) in the input {text:?}"
            )));
        }
        Ok(Prepared::new(vec![enc], ()))
    }

    fn forward(&self, rows: &[Encoding], _: &Params) -> Result<Vec<Vec<Vec<f32>>>> {
        let (batch, logits) = self.runner.forward(rows)?;
        batch.rows3(&logits)
    }

    fn postprocess(
        &self,
        _: (),
        rows: Vec<(Encoding, Vec<Vec<f32>>)>,
        params: &Params,
    ) -> Result<FillMaskOutput> {
        let Some((enc, logits)) = rows.into_iter().next() else {
            return Err(Error::Invalid("fill-mask: a text gave no output".into()));
        };
        let masked: Vec<usize> = (0..enc.ids.len())
            .filter(|&i| enc.ids[i] == self.mask_id)
            .collect();
        let single = masked.len() == 1;
        let pad = self.runner.tokenizer.pad_token_id();
        let real: Vec<u32> = enc
            .ids
            .iter()
            .copied()
            .filter(|&id| Some(id) != pad)
            .collect();
        let mut per_mask = Vec::with_capacity(masked.len());
        for &pos in &masked {
            let row = logits.get(pos).ok_or_else(|| {
                Error::Invalid(format!("fill-mask: no logits for the mask at token {pos}"))
            })?;
            per_mask.push(self.predictions(&enc, &real, pos, row, single, params)?);
        }
        Ok(if single {
            FillMaskOutput::Single(per_mask.pop().unwrap_or_default())
        } else {
            FillMaskOutput::Multiple(per_mask)
        })
    }
}
