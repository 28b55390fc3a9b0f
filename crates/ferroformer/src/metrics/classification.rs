//! Accuracy, precision, recall and F1 as scikit-learn computes them (`accuracy_score`,
//! `precision_recall_fscore_support` with `zero_division="warn"`, i.e. 0 where a ratio has
//! an empty denominator), with the keys `evaluate`'s metrics return.
//!
//! Labels are compared as strings; JSON numbers are read as their text (`1` and `"1"` are
//! the same label).

use std::collections::BTreeMap;

use serde::Serialize;

use super::check_pairs;
use crate::error::{Error, Result};

/// How per-label scores are combined (scikit-learn's `average`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Average {
    /// Only the positive label's score; the labels must be at most two.
    #[default]
    Binary,
    /// Counts summed over labels, then one score.
    Micro,
    /// Unweighted mean of the per-label scores.
    Macro,
    /// Mean of the per-label scores weighted by each label's number of references.
    Weighted,
}

impl std::str::FromStr for Average {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "binary" => Ok(Average::Binary),
            "micro" => Ok(Average::Micro),
            "macro" => Ok(Average::Macro),
            "weighted" => Ok(Average::Weighted),
            other => Err(Error::Invalid(format!(
                "unknown average `{other}`: expected binary, micro, macro or weighted"
            ))),
        }
    }
}

/// Options of precision, recall and F1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassificationOptions {
    /// How per-label scores are combined.
    pub average: Average,
    /// The positive label for [`Average::Binary`] (scikit-learn's default is 1).
    pub pos_label: String,
}

impl Default for ClassificationOptions {
    fn default() -> Self {
        ClassificationOptions {
            average: Average::Binary,
            pos_label: "1".into(),
        }
    }
}

/// `{"accuracy": x}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    /// Fraction of predictions equal to their reference.
    pub accuracy: f64,
}

/// `{"precision": x}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Precision {
    /// True positives over predicted positives.
    pub precision: f64,
}

/// `{"recall": x}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recall {
    /// True positives over actual positives.
    pub recall: f64,
}

/// `{"f1": x}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct F1 {
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

/// Fraction of predictions equal to their reference.
pub fn accuracy(predictions: &[String], references: &[String]) -> Result<Accuracy> {
    check_pairs(predictions.len(), references.len())?;
    let correct = predictions
        .iter()
        .zip(references)
        .filter(|(p, r)| p == r)
        .count();
    Ok(Accuracy {
        accuracy: correct as f64 / predictions.len() as f64,
    })
}

/// scikit-learn's `precision_score`.
pub fn precision(
    predictions: &[String],
    references: &[String],
    options: &ClassificationOptions,
) -> Result<Precision> {
    let scores = scores(predictions, references, options)?;
    Ok(Precision {
        precision: scores.precision,
    })
}

/// scikit-learn's `recall_score`.
pub fn recall(
    predictions: &[String],
    references: &[String],
    options: &ClassificationOptions,
) -> Result<Recall> {
    let scores = scores(predictions, references, options)?;
    Ok(Recall {
        recall: scores.recall,
    })
}

/// scikit-learn's `f1_score`.
pub fn f1(
    predictions: &[String],
    references: &[String],
    options: &ClassificationOptions,
) -> Result<F1> {
    let scores = scores(predictions, references, options)?;
    Ok(F1 { f1: scores.f1 })
}

/// Averaged precision, recall and F1 (scikit-learn's `precision_recall_fscore_support`
/// with an `average`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AveragedScores {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

/// Per-label counts: true positives, predicted, actual.
#[derive(Debug, Clone, Copy, Default)]
struct LabelCounts {
    true_positives: u64,
    predicted: u64,
    actual: u64,
}

/// `numerator / denominator`, 0 where the denominator is 0 (scikit-learn's
/// `zero_division="warn"`).
fn divide(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

/// Precision, recall and F1 of `predictions` against `references`, averaged as `options`
/// says.
pub fn scores(
    predictions: &[String],
    references: &[String],
    options: &ClassificationOptions,
) -> Result<AveragedScores> {
    check_pairs(predictions.len(), references.len())?;
    // Sorted like numpy's `unique`, which scikit-learn uses for the label order.
    let mut counts: BTreeMap<&str, LabelCounts> = BTreeMap::new();
    for (p, r) in predictions.iter().zip(references) {
        counts.entry(p.as_str()).or_default().predicted += 1;
        counts.entry(r.as_str()).or_default().actual += 1;
        if p == r {
            counts.entry(p.as_str()).or_default().true_positives += 1;
        }
    }
    let per_label: Vec<LabelCounts> = match options.average {
        Average::Binary => {
            if counts.len() > 2 {
                return Err(Error::Invalid(format!(
                    "the labels are multiclass ({} labels: {}) but the average is binary; \
                     choose micro, macro or weighted",
                    counts.len(),
                    label_list(&counts)
                )));
            }
            match counts.get(options.pos_label.as_str()) {
                Some(c) => vec![*c],
                None if counts.len() == 2 => {
                    return Err(Error::Invalid(format!(
                        "positive label `{}` is not one of the labels ({})",
                        options.pos_label,
                        label_list(&counts)
                    )))
                }
                // A positive label absent from a one-label input scores 0, as in scikit-learn.
                None => vec![LabelCounts::default()],
            }
        }
        Average::Micro => {
            let mut total = LabelCounts::default();
            for c in counts.values() {
                total.true_positives += c.true_positives;
                total.predicted += c.predicted;
                total.actual += c.actual;
            }
            vec![total]
        }
        Average::Macro | Average::Weighted => counts.values().copied().collect(),
    };
    let mut precisions = Vec::with_capacity(per_label.len());
    let mut recalls = Vec::with_capacity(per_label.len());
    let mut f1s = Vec::with_capacity(per_label.len());
    for c in &per_label {
        let tp = c.true_positives as f64;
        precisions.push(divide(tp, c.predicted as f64));
        recalls.push(divide(tp, c.actual as f64));
        // scikit-learn computes F from counts: (1 + β²)·tp / (β²·actual + predicted), β = 1.
        f1s.push(divide(2.0 * tp, c.actual as f64 + c.predicted as f64));
    }
    let weights: Option<Vec<f64>> = (options.average == Average::Weighted)
        .then(|| per_label.iter().map(|c| c.actual as f64).collect());
    Ok(AveragedScores {
        precision: average(&precisions, weights.as_deref()),
        recall: average(&recalls, weights.as_deref()),
        f1: average(&f1s, weights.as_deref()),
    })
}

/// numpy's `average`, falling back to the plain mean when all weights are 0 (scikit-learn's
/// `_nanaverage`).
fn average(values: &[f64], weights: Option<&[f64]>) -> f64 {
    if let Some(weights) = weights {
        let total: f64 = weights.iter().sum();
        if total != 0.0 {
            let weighted: f64 = values.iter().zip(weights).map(|(v, w)| v * w).sum();
            return weighted / total;
        }
    }
    values.iter().sum::<f64>() / values.len() as f64
}

fn label_list(counts: &BTreeMap<&str, LabelCounts>) -> String {
    counts
        .keys()
        .map(|l| format!("`{l}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn binary_scores_count_the_positive_label() {
        let p = labels("1 1 0 0");
        let r = labels("1 0 1 0");
        let s = scores(&p, &r, &ClassificationOptions::default()).unwrap();
        assert_eq!((s.precision, s.recall, s.f1), (0.5, 0.5, 0.5));
    }

    #[test]
    fn binary_rejects_three_labels_and_an_unknown_positive_label() {
        let o = ClassificationOptions::default();
        assert!(scores(&labels("0 1 2"), &labels("0 1 2"), &o).is_err());
        let o = ClassificationOptions {
            pos_label: "yes".into(),
            ..o
        };
        assert!(scores(&labels("0 1"), &labels("1 0"), &o).is_err());
    }
}
