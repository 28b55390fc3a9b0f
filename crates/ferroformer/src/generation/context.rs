//! Fitting a prompt and its new tokens into the model's context window.

use std::str::FromStr;

use crate::error::{Error, Result};

/// What to do with a prompt that does not fit the model's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// A prompt that leaves no room for a new token is an error (the default).
    #[default]
    Error,
    /// Keep the last tokens of the prompt, leaving room for the new tokens when possible
    /// (`transformers`' text-generation `handle_long_generation="hole"`).
    Left,
}

impl FromStr for Truncation {
    type Err = Error;

    /// `left`, or `none` / `error` for the default.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "left" => Ok(Self::Left),
            "none" | "error" => Ok(Self::Error),
            other => Err(Error::config(
                "truncate",
                format!("must be `left` (or `none`), found `{other}`"),
            )),
        }
    }
}

/// How a prompt fits: drop its first `skip` tokens and generate at most `max_new_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextFit {
    /// Tokens dropped from the start of the prompt.
    pub skip: usize,
    /// New tokens that fit after the (kept) prompt, at most the requested number.
    pub max_new_tokens: usize,
}

impl ContextFit {
    /// Whether generation stops earlier than asked because the context is full.
    pub fn shortened(&self, requested: usize) -> bool {
        self.max_new_tokens < requested
    }
}

/// Fits a prompt of `prompt_len` tokens and `max_new_tokens` new ones into a model of
/// `context` positions (a sequence, prompt and new tokens, holds at most `context` tokens).
///
/// - A prompt of `context` tokens or more is an error naming both lengths, unless
///   `truncation` is [`Truncation::Left`].
/// - With [`Truncation::Left`], a prompt that leaves less than `max_new_tokens` of room keeps
///   only its last `context - max_new_tokens` tokens, but at least half the context (so a
///   request for more new tokens than the context holds still keeps a useful prompt).
/// - Otherwise the prompt is kept whole and the new tokens are capped at what still fits.
pub fn fit_to_context(
    prompt_len: usize,
    max_new_tokens: usize,
    context: usize,
    truncation: Truncation,
) -> Result<ContextFit> {
    if context < 2 {
        return Err(Error::Invalid(format!(
            "the model's context of {context} positions leaves no room to generate"
        )));
    }
    let mut keep = prompt_len;
    if truncation == Truncation::Left && prompt_len + max_new_tokens > context {
        keep = prompt_len.min(context.saturating_sub(max_new_tokens).max(context / 2));
    }
    if keep >= context {
        return Err(Error::Invalid(format!(
            "the prompt is {prompt_len} tokens long but the model's context is {context} \
             tokens: a prompt may have at most {} tokens to leave room for a new one \
             (shorten it, or truncate it on the left: `--truncate left`, `Truncation::Left`, keeps its last tokens)",
            context - 1
        )));
    }
    Ok(ContextFit {
        skip: prompt_len - keep,
        max_new_tokens: max_new_tokens.min(context - keep),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_fit_as_documented() {
        let fit = |p, n, t| fit_to_context(p, n, 16, t).map(|f| (f.skip, f.max_new_tokens));
        // Fits: unchanged.
        assert_eq!(fit(6, 8, Truncation::Error).unwrap(), (0, 8));
        // The new tokens are capped when the prompt is kept whole.
        assert_eq!(fit(12, 8, Truncation::Error).unwrap(), (0, 4));
        // Too long: an error naming both lengths …
        let err = fit(16, 8, Truncation::Error).unwrap_err().to_string();
        assert!(
            err.contains("16 tokens long") && err.contains("context is 16"),
            "{err}"
        );
        // … or the last tokens, leaving room for the new ones.
        assert_eq!(fit(40, 4, Truncation::Left).unwrap(), (28, 4));
        assert_eq!(fit(12, 8, Truncation::Left).unwrap(), (4, 8));
        // Never less than half the context for the prompt.
        assert_eq!(fit(40, 200, Truncation::Left).unwrap(), (32, 8));
        assert_eq!(fit(3, 200, Truncation::Left).unwrap(), (0, 13));
        assert!("right".parse::<Truncation>().is_err());
        assert_eq!("left".parse::<Truncation>().unwrap(), Truncation::Left);
    }
}
