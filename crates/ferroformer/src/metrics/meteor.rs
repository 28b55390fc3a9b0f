//! METEOR as NLTK's `meteor_score` computes it: words aligned in three stages — exact
//! matches, then Porter stems, then WordNet synonyms — each stage matching right to left;
//! F-mean with α = 0.9 weighted towards recall, times a fragmentation penalty
//! γ·(chunks/matches)^β with β = 3, γ = 0.5. Several references: the best score counts.
//!
//! Texts are split on whitespace and lowercased (NLTK's `meteor_score` takes tokens;
//! `evaluate`'s wrapper tokenizes with NLTK's `word_tokenize`, which also splits
//! punctuation off words — split it off beforehand to reproduce that).

use std::collections::HashMap;

use serde::Serialize;

use super::wordnet::WordNet;
use super::{check_pairs, check_reference_lists, porter, python_split};
use crate::error::Result;

/// NLTK's METEOR parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeteorParameters {
    /// Precision weight in the F-mean (0.9).
    pub alpha: f64,
    /// Exponent of the fragmentation penalty (3).
    pub beta: f64,
    /// Weight of the fragmentation penalty (0.5).
    pub gamma: f64,
}

impl Default for MeteorParameters {
    fn default() -> Self {
        MeteorParameters {
            alpha: 0.9,
            beta: 3.0,
            gamma: 0.5,
        }
    }
}

/// `{"meteor": x}`: the mean METEOR over predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Meteor {
    /// Mean METEOR, 0..=1.
    pub meteor: f64,
}

/// (original position, word) pairs still unmatched.
type Enumerated = Vec<(usize, String)>;

/// A stage's matches as (hypothesis position, reference position), and the words of each
/// side it left unmatched.
type Alignment = (Vec<(usize, usize)>, Enumerated, Enumerated);

/// The pairs whose flag is not set.
fn unmatched(list: Enumerated, matched: &[bool]) -> Enumerated {
    list.into_iter()
        .zip(matched)
        .filter(|(_, &m)| !m)
        .map(|(pair, _)| pair)
        .collect()
}

/// NLTK's `_match_enums`: hypothesis words from last to first, each taking the last
/// remaining reference position of the same word.
fn match_exact(hyp: Enumerated, reference: Enumerated) -> Alignment {
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, word)) in reference.iter().enumerate() {
        positions.entry(word.as_str()).or_default().push(j);
    }
    let mut matches = Vec::new();
    let mut hyp_matched = vec![false; hyp.len()];
    let mut ref_matched = vec![false; reference.len()];
    for i in (0..hyp.len()).rev() {
        if let Some(j) = positions.get_mut(hyp[i].1.as_str()).and_then(Vec::pop) {
            hyp_matched[i] = true;
            ref_matched[j] = true;
            matches.push((hyp[i].0, reference[j].0));
        }
    }
    (
        matches,
        unmatched(hyp, &hyp_matched),
        unmatched(reference, &ref_matched),
    )
}

/// NLTK's `_enum_wordnetsyn_match`: a hypothesis word matches the remaining reference
/// word, among its WordNet synonyms and itself, whose last position is largest.
fn match_synonyms(hyp: Enumerated, reference: Enumerated, wordnet: &WordNet) -> Result<Alignment> {
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, word)) in reference.iter().enumerate() {
        positions.entry(word.as_str()).or_default().push(j);
    }
    let mut matches = Vec::new();
    let mut hyp_matched = vec![false; hyp.len()];
    let mut ref_matched = vec![false; reference.len()];
    for i in (0..hyp.len()).rev() {
        let word = hyp[i].1.as_str();
        let mut synonyms = wordnet.synonyms(word)?;
        synonyms.retain(|s| !s.contains('_'));
        synonyms.insert(word.to_string());
        let best = synonyms
            .iter()
            .filter_map(|s| {
                positions
                    .get(s.as_str())
                    .and_then(|p| p.last())
                    .map(|&j| (j, s.as_str()))
            })
            .max_by_key(|&(j, _)| j);
        if let Some((j, synonym)) = best {
            if let Some(p) = positions.get_mut(synonym) {
                p.pop();
            }
            hyp_matched[i] = true;
            ref_matched[j] = true;
            matches.push((hyp[i].0, reference[j].0));
        }
    }
    Ok((
        matches,
        unmatched(hyp, &hyp_matched),
        unmatched(reference, &ref_matched),
    ))
}

/// Chunks: runs of matches adjacent in both the hypothesis and the reference.
fn count_chunks(matches: &[(usize, usize)]) -> usize {
    1 + matches
        .windows(2)
        .filter(|w| !(w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1))
        .count()
}

/// NLTK's `single_meteor_score` on whitespace tokens.
pub fn single_meteor(
    reference: &str,
    hypothesis: &str,
    wordnet: &WordNet,
    parameters: &MeteorParameters,
) -> Result<f64> {
    let enumerate = |text: &str| -> Enumerated {
        python_split(text)
            .map(str::to_lowercase)
            .enumerate()
            .collect()
    };
    let hyp = enumerate(hypothesis);
    let reference = enumerate(reference);
    let (translation_length, reference_length) = (hyp.len(), reference.len());
    let (mut matches, hyp, reference) = match_exact(hyp, reference);
    // The stem stage leaves the stems in the lists: synonyms are looked up for stems.
    let stem_all = |list: Enumerated| -> Enumerated {
        list.into_iter()
            .map(|(i, w)| (i, porter::stem(&w)))
            .collect()
    };
    let (stem_matches, hyp, reference) = match_exact(stem_all(hyp), stem_all(reference));
    let (synonym_matches, _, _) = match_synonyms(hyp, reference, wordnet)?;
    matches.extend(stem_matches);
    matches.extend(synonym_matches);
    matches.sort_by_key(|&(h, _)| h);
    let matched = matches.len();
    // Where NLTK divides by zero it returns 0.
    if matched == 0 || translation_length == 0 || reference_length == 0 {
        return Ok(0.0);
    }
    let precision = matched as f64 / translation_length as f64;
    let recall = matched as f64 / reference_length as f64;
    let MeteorParameters { alpha, beta, gamma } = *parameters;
    let fmean = (precision * recall) / (alpha * precision + (1.0 - alpha) * recall);
    let fragmentation = count_chunks(&matches) as f64 / matched as f64;
    let penalty = gamma * fragmentation.powf(beta);
    Ok((1.0 - penalty) * fmean)
}

/// Mean over predictions of NLTK's `meteor_score` (the best over each prediction's
/// references), as `evaluate`'s meteor returns it.
pub fn meteor(
    predictions: &[String],
    references: &[Vec<String>],
    wordnet: &WordNet,
    parameters: &MeteorParameters,
) -> Result<Meteor> {
    check_pairs(predictions.len(), references.len())?;
    check_reference_lists(references)?;
    let mut scores = Vec::with_capacity(predictions.len());
    for (prediction, refs) in predictions.iter().zip(references) {
        let mut best = f64::NEG_INFINITY;
        for r in refs {
            best = best.max(single_meteor(r, prediction, wordnet, parameters)?);
        }
        scores.push(best);
    }
    Ok(Meteor {
        meteor: scores.iter().sum::<f64>() / scores.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::count_chunks;

    #[test]
    fn chunks_break_where_either_side_jumps() {
        assert_eq!(count_chunks(&[(0, 0), (1, 1), (2, 5), (3, 6), (5, 7)]), 3);
        assert_eq!(count_chunks(&[(0, 3)]), 1);
    }
}
