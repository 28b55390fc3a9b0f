//! `evaluate`'s `exact_match` metric and the SQuAD v1.1 evaluation script (`evaluate`'s
//! `squad`).

use std::collections::HashMap;

use regex::Regex;
use serde::Serialize;

use super::{check_pairs, check_reference_lists, python_split, single_references};
use crate::error::{Error, Result};

/// Python's `string.punctuation`.
pub const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Options of [`exact_match`], as `evaluate`'s `exact_match.compute` names them.
#[derive(Debug, Clone, Default)]
pub struct ExactMatchOptions {
    /// Patterns removed from both texts first, in order (`re.sub(pattern, "", text)`).
    pub regexes_to_ignore: Vec<String>,
    /// Lowercase both texts.
    pub ignore_case: bool,
    /// Remove ASCII punctuation (`string.punctuation`).
    pub ignore_punctuation: bool,
    /// Remove the digits 0-9.
    pub ignore_numbers: bool,
}

/// `{"exact_match": x}`, a fraction in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ExactMatch {
    /// Fraction of predictions equal to their reference after normalization.
    pub exact_match: f64,
}

/// `evaluate`'s exact_match: the fraction of predictions equal to their (single) reference
/// after the normalizations in `options`. A prediction that normalizes to the empty string
/// counts only when it equals its reference before normalization, as `evaluate` has it.
pub fn exact_match(
    predictions: &[String],
    references: &[Vec<String>],
    options: &ExactMatchOptions,
) -> Result<ExactMatch> {
    check_pairs(predictions.len(), references.len())?;
    let references = single_references("exact_match", references)?;
    let patterns = options
        .regexes_to_ignore
        .iter()
        .map(|p| {
            Regex::new(p)
                .map_err(|e| Error::Invalid(format!("regex to ignore `{p}` is invalid: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let normalize = |text: &str| -> String {
        let mut text = text.to_string();
        for pattern in &patterns {
            text = pattern.replace_all(&text, "").into_owned();
        }
        if options.ignore_case {
            text = text.to_lowercase();
        }
        if options.ignore_punctuation {
            text.retain(|c| !ASCII_PUNCTUATION.contains(c));
        }
        if options.ignore_numbers {
            text.retain(|c| !c.is_ascii_digit());
        }
        text
    };
    let matches = predictions
        .iter()
        .zip(&references)
        .filter(|(p, r)| {
            let (np, nr) = (normalize(p), normalize(r));
            np == nr && (!np.is_empty() || p.as_str() == **r)
        })
        .count();
    Ok(ExactMatch {
        exact_match: matches as f64 / predictions.len() as f64,
    })
}

/// `{"exact_match": x, "f1": y}`, both percentages (0..=100) as the SQuAD script reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Squad {
    /// Percentage of predictions equal to one of their answers after normalization.
    pub exact_match: f64,
    /// Mean over predictions of the best token-overlap F1 against their answers, ×100.
    pub f1: f64,
}

/// The SQuAD v1.1 script's `normalize_answer`: lowercase, drop ASCII punctuation, the
/// articles a/an/the, and collapse whitespace.
pub fn squad_normalize(text: &str) -> String {
    let mut text = text.to_lowercase();
    text.retain(|c| !ASCII_PUNCTUATION.contains(c));
    let text = articles().replace_all(&text, " ");
    python_split(&text).collect::<Vec<_>>().join(" ")
}

fn articles() -> &'static Regex {
    static ARTICLES: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    // Python's `\b` on str patterns is Unicode-aware, as the regex crate's is.
    ARTICLES.get_or_init(|| Regex::new(r"\b(a|an|the)\b").unwrap_or_else(|_| unreachable!()))
}

/// Token-overlap F1 of one prediction against one answer (the script's `f1_score`).
fn squad_f1(prediction: &str, answer: &str) -> f64 {
    let prediction = squad_normalize(prediction);
    let answer = squad_normalize(answer);
    let prediction_tokens: Vec<&str> = python_split(&prediction).collect();
    let answer_tokens: Vec<&str> = python_split(&answer).collect();
    let mut answer_counts: HashMap<&str, usize> = HashMap::new();
    for t in &answer_tokens {
        *answer_counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &prediction_tokens {
        if let Some(c) = answer_counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / prediction_tokens.len() as f64;
    let recall = same as f64 / answer_tokens.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// The SQuAD v1.1 script: for each prediction the best exact match and F1 over its answers,
/// summed, then ×100 / the number of predictions.
pub fn squad(predictions: &[String], references: &[Vec<String>]) -> Result<Squad> {
    check_pairs(predictions.len(), references.len())?;
    check_reference_lists(references)?;
    let mut exact = 0usize;
    let mut f1 = 0.0f64;
    for (prediction, answers) in predictions.iter().zip(references) {
        let normalized = squad_normalize(prediction);
        if answers.iter().any(|a| squad_normalize(a) == normalized) {
            exact += 1;
        }
        f1 += answers
            .iter()
            .map(|a| squad_f1(prediction, a))
            .fold(f64::NEG_INFINITY, f64::max);
    }
    let total = predictions.len() as f64;
    Ok(Squad {
        exact_match: 100.0 * exact as f64 / total,
        f1: 100.0 * f1 / total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalization_drops_articles_punctuation_and_case() {
        assert_eq!(squad_normalize("The  Cat, an apple!"), "cat apple");
        assert_eq!(squad_f1("the cat sat", "a cat sat down"), 0.8);
    }
}
