//! Entity-level scores of tag sequences as `seqeval` computes them in its default mode
//! (conlleval's chunking: `B-`/`I-` tags, an `I-` after `O` or after another type starts an
//! entity), micro-averaged over every entity type, and the tag accuracy.
//!
//! An entity is `(type, start, end)` over the sentences laid end to end; a predicted entity
//! counts only when its type and both ends equal a reference entity's.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::error::{Error, Result};

/// `overall_precision`, `overall_recall`, `overall_f1`, `overall_accuracy` as `evaluate`'s
/// `seqeval` names them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeqevalScores {
    /// Correct entities / predicted entities (0 when nothing is predicted).
    pub overall_precision: f64,
    /// Correct entities / reference entities (0 when there are none).
    pub overall_recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub overall_f1: f64,
    /// Correct tags / tags.
    pub overall_accuracy: f64,
}

/// The tag's prefix (`B`, `I`, `O`, `E`, `S`; the first character) and its entity type
/// (after the first `-`; `_` when there is none), as `seqeval.get_entities` splits it.
fn split_tag(tag: &str) -> (char, &str) {
    let mut chars = tag.chars();
    let prefix = chars.next().unwrap_or('O');
    let rest = chars.as_str();
    let type_ = match rest.split_once('-') {
        Some((_, t)) => t,
        None => rest,
    };
    (prefix, if type_.is_empty() { "_" } else { type_ })
}

fn end_of_chunk(prev: char, tag: char, prev_type: &str, type_: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_type != type_)
}

fn start_of_chunk(prev: char, tag: char, prev_type: &str, type_: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != type_)
}

/// The entities of tagged sentences as `(type, start, end)` (inclusive ends) over the
/// sentences joined with an `O` between them, as `seqeval.metrics.sequence_labeling
/// .get_entities` returns them.
pub fn entities<S: AsRef<str>>(sentences: &[Vec<S>]) -> Vec<(String, usize, usize)> {
    let mut tags: Vec<&str> = Vec::new();
    for s in sentences {
        tags.extend(s.iter().map(AsRef::as_ref));
        tags.push("O");
    }
    tags.push("O");
    let (mut prev, mut prev_type, mut begin) = ('O', "", 0usize);
    let mut out = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let (t, ty) = split_tag(tag);
        if end_of_chunk(prev, t, prev_type, ty) {
            out.push((prev_type.to_string(), begin, i - 1));
        }
        if start_of_chunk(prev, t, prev_type, ty) {
            begin = i;
        }
        prev = t;
        prev_type = ty;
    }
    out
}

/// Micro-averaged entity precision, recall and F1 and the tag accuracy of `predictions`
/// against `references` (sentences of tags, same lengths).
pub fn seqeval<S: AsRef<str>>(
    predictions: &[Vec<S>],
    references: &[Vec<S>],
) -> Result<SeqevalScores> {
    if predictions.len() != references.len() {
        return Err(Error::Invalid(format!(
            "seqeval: {} predicted sentences but {} references",
            predictions.len(),
            references.len()
        )));
    }
    let (mut correct, mut total) = (0usize, 0usize);
    for (i, (p, r)) in predictions.iter().zip(references).enumerate() {
        if p.len() != r.len() {
            return Err(Error::Invalid(format!(
                "seqeval: sentence {i} has {} predicted tags but {} reference tags",
                p.len(),
                r.len()
            )));
        }
        correct += p
            .iter()
            .zip(r)
            .filter(|(a, b)| a.as_ref() == b.as_ref())
            .count();
        total += r.len();
    }
    let pred: BTreeSet<_> = entities(predictions).into_iter().collect();
    let gold: BTreeSet<_> = entities(references).into_iter().collect();
    let tp = pred.intersection(&gold).count() as f64;
    let ratio = |a: f64, b: usize| if b == 0 { 0.0 } else { a / b as f64 };
    let precision = ratio(tp, pred.len());
    let recall = ratio(tp, gold.len());
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Ok(SeqevalScores {
        overall_precision: precision,
        overall_recall: recall,
        overall_f1: f1,
        overall_accuracy: ratio(correct as f64, total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    /// `seqeval`'s own docstring examples.
    #[test]
    fn docstring_examples() {
        assert_eq!(
            entities(&[s(&["B-PER", "I-PER", "O", "B-LOC"])]),
            [("PER".to_string(), 0, 1), ("LOC".to_string(), 3, 3)]
        );
        let gold = [
            s(&["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"]),
            s(&["B-PER", "I-PER", "O"]),
        ];
        let pred = [
            s(&["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"]),
            s(&["B-PER", "I-PER", "O"]),
        ];
        let r = seqeval(&pred, &gold).unwrap();
        assert_eq!(
            (r.overall_precision, r.overall_recall, r.overall_f1),
            (0.5, 0.5, 0.5)
        );
        assert_eq!(r.overall_accuracy, 0.8);
    }
}
