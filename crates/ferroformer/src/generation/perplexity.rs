//! Perplexity of a causal language model on a text, by the sliding-window method of
//! `transformers`' perplexity guide: windows of `context_length` tokens, `stride` apart,
//! each scoring only the tokens the previous window did not reach.

use candle_core::{DType, Device, IndexOp, Tensor, D};

use crate::arch::DecoderOnlyTransformer;
use crate::error::{Error, Result};

/// The result of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Perplexity {
    /// `exp(nll_per_token)`.
    pub perplexity: f64,
    /// Mean negative log-likelihood per scored token, in nats.
    pub nll_per_token: f64,
    /// Tokens scored.
    pub tokens: usize,
}

/// Perplexity of `ids` under `model` with windows of `context_length` tokens moved by
/// `stride`.
///
/// The arithmetic is the guide's, so the numbers compare with it: each window's loss is the
/// mean over its target tokens (the last `end - previous_end` of the window, minus the first,
/// which the shift leaves without a prediction) and is weighted by that count minus one.
pub fn perplexity(
    model: &DecoderOnlyTransformer,
    ids: &[u32],
    context_length: usize,
    stride: usize,
    device: &Device,
) -> Result<Perplexity> {
    if context_length < 2 {
        return Err(Error::config("context_length", "must be at least 2"));
    }
    if stride == 0 || stride > context_length {
        return Err(Error::config(
            "stride",
            format!("must be in 1..={context_length} (the context length), found {stride}"),
        ));
    }
    if ids.len() < 2 {
        return Err(Error::Invalid(format!(
            "perplexity needs a text of at least 2 tokens, found {}",
            ids.len()
        )));
    }
    let (mut nll_sum, mut n_tokens, mut prev_end) = (0f64, 0usize, 0usize);
    let mut begin = 0;
    while begin < ids.len() {
        let end = (begin + context_length).min(ids.len());
        let target_len = end - prev_end;
        let window = &ids[begin..end];
        let input = Tensor::new(window, device)?.unsqueeze(0)?;
        let logits = model
            .forward(&input, None, None, crate::nn::Pass::INFERENCE)?
            .logits;
        let logp = candle_nn::ops::log_softmax(&logits.i(0)?.to_dtype(DType::F32)?, D::Minus1)?;
        let logp = logp.to_vec2::<f32>()?;
        // Labels are the window with all but the last `target_len` masked; predictions for
        // position t come from position t - 1.
        let first_target = window.len() - target_len.min(window.len());
        let mut sum = 0f64;
        let mut count = 0usize;
        for t in first_target.max(1)..window.len() {
            sum -= logp[t - 1][window[t] as usize] as f64;
            count += 1;
        }
        if count > 0 {
            let weight = target_len.min(window.len()) - 1;
            nll_sum += sum / count as f64 * weight as f64;
            n_tokens += weight;
        }
        prev_end = end;
        if end == ids.len() {
            break;
        }
        begin += stride;
    }
    let nll_per_token = nll_sum / n_tokens.max(1) as f64;
    Ok(Perplexity {
        perplexity: nll_per_token.exp(),
        nll_per_token,
        tokens: n_tokens,
    })
}

/// The result of [`text_perplexities`], with the keys of `evaluate`'s `perplexity` metric.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TextPerplexities {
    /// Each text's perplexity, in input order.
    pub perplexities: Vec<f64>,
    /// Their arithmetic mean.
    pub mean_perplexity: f64,
}

/// `evaluate`'s `perplexity` metric: each text scored on its own, `start_token` (the BOS,
/// `add_start_token=True`) put in front so that its first token is predicted too; a text's
/// perplexity is `exp` of the mean negative log-likelihood of its tokens, and
/// `mean_perplexity` the mean of those (not the perplexity of the texts joined).
///
/// Each text must fit the model's context with the start token; `evaluate` truncates only
/// when given `max_length`, which callers apply to the ids before this.
pub fn text_perplexities(
    model: &DecoderOnlyTransformer,
    texts: &[Vec<u32>],
    start_token: Option<u32>,
) -> Result<TextPerplexities> {
    if texts.is_empty() {
        return Err(Error::Invalid("perplexity needs at least one text".into()));
    }
    let context = model.config().embeddings.max_positions;
    let device = model.device();
    let mut perplexities = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let ids: Vec<u32> = start_token
            .into_iter()
            .chain(text.iter().copied())
            .collect();
        if ids.len() < 2 {
            return Err(Error::Invalid(format!(
                "text {} has {} token(s){}; perplexity needs at least one predicted token",
                i + 1,
                text.len(),
                if start_token.is_some() {
                    " after the start token"
                } else {
                    " and no start token before it"
                }
            )));
        }
        if ids.len() > context {
            return Err(Error::Invalid(format!(
                "text {} has {} tokens{}, more than the model's context of {context}; \
                 truncate it (max_length)",
                i + 1,
                text.len(),
                if start_token.is_some() {
                    " plus the start token"
                } else {
                    ""
                }
            )));
        }
        let input = Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?;
        let logits = model
            .forward(&input, None, None, crate::nn::Pass::INFERENCE)?
            .logits;
        let logp = candle_nn::ops::log_softmax(&logits.i(0)?.to_dtype(DType::F32)?, D::Minus1)?
            .to_vec2::<f32>()?;
        let nll: f64 = (1..ids.len())
            .map(|t| -(logp[t - 1][ids[t] as usize] as f64))
            .sum();
        perplexities.push((nll / (ids.len() - 1) as f64).exp());
    }
    let mean_perplexity = perplexities.iter().sum::<f64>() / perplexities.len() as f64;
    Ok(TextPerplexities {
        perplexities,
        mean_perplexity,
    })
}
