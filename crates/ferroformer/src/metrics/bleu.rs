//! BLEU two ways and chrF:
//!
//! - [`bleu`]: `evaluate`'s `bleu`, i.e. tensorflow/nmt's `compute_bleu` on 13a tokens (a
//!   0..=1 score; the brevity penalty uses the *shortest* reference of each prediction).
//! - [`sacrebleu`]: sacreBLEU's corpus BLEU (0..=100; the *closest* reference length;
//!   smoothing methods; tokenizers 13a, intl, char, none).
//! - [`chrf`]: sacreBLEU's chrF (character n-grams up to 6, β = 2).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use super::{check_pairs, check_reference_lists, python_split};
use crate::error::{Error, Result};

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // The patterns are constants of this module; a test compiles each one.
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|e| unreachable!("{e}")))
}

/// sacreBLEU's 13a tokenizer (mteval-v13a.pl): the tokens joined by single spaces.
pub fn tokenize_13a(line: &str) -> String {
    static SYMBOLS: OnceLock<Regex> = OnceLock::new();
    static PERIOD_COMMA_AFTER_NON_DIGIT: OnceLock<Regex> = OnceLock::new();
    static PERIOD_COMMA_BEFORE_NON_DIGIT: OnceLock<Regex> = OnceLock::new();
    static DASH_AFTER_DIGIT: OnceLock<Regex> = OnceLock::new();
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let line = format!(" {line} ");
    // ASCII ranges {-~, [-`, space-&, (-+, :-@ and /.
    let line = regex(
        &SYMBOLS,
        r"([\x7B-\x7E\x5B-\x60\x20-\x26\x28-\x2B\x3A-\x40/])",
    )
    .replace_all(&line, " ${1} ");
    let line =
        regex(&PERIOD_COMMA_AFTER_NON_DIGIT, r"([^0-9])([.,])").replace_all(&line, "${1} ${2} ");
    let line =
        regex(&PERIOD_COMMA_BEFORE_NON_DIGIT, r"([.,])([^0-9])").replace_all(&line, " ${1} ${2}");
    let line = regex(&DASH_AFTER_DIGIT, r"([0-9])(-)").replace_all(&line, "${1} ${2} ");
    python_split(&line).collect::<Vec<_>>().join(" ")
}

/// sacreBLEU's `intl` tokenizer (mteval-v14.pl's international tokenization).
pub fn tokenize_intl(line: &str) -> String {
    static PUNCT_AFTER_NON_NUMBER: OnceLock<Regex> = OnceLock::new();
    static PUNCT_BEFORE_NON_NUMBER: OnceLock<Regex> = OnceLock::new();
    static SYMBOL: OnceLock<Regex> = OnceLock::new();
    let line = regex(&PUNCT_AFTER_NON_NUMBER, r"(\P{N})(\p{P})").replace_all(line, "${1} ${2} ");
    let line = regex(&PUNCT_BEFORE_NON_NUMBER, r"(\p{P})(\P{N})").replace_all(&line, " ${1} ${2}");
    let line = regex(&SYMBOL, r"(\p{S})").replace_all(&line, " ${1} ");
    python_split(&line).collect::<Vec<_>>().join(" ")
}

/// sacreBLEU's `char` tokenizer: every character a token.
pub fn tokenize_char(line: &str) -> String {
    let mut out = String::with_capacity(line.len() * 2);
    for (i, c) in line.chars().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The tokenizers of [`sacrebleu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BleuTokenizer {
    /// mteval-v13a.pl (sacreBLEU's default).
    #[default]
    Thirteen,
    /// mteval-v14.pl's international tokenization (Unicode punctuation and symbols).
    Intl,
    /// Every character a token.
    Char,
    /// The text as it is, split on whitespace.
    None,
}

impl std::str::FromStr for BleuTokenizer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "13a" => Ok(BleuTokenizer::Thirteen),
            "intl" => Ok(BleuTokenizer::Intl),
            "char" => Ok(BleuTokenizer::Char),
            "none" => Ok(BleuTokenizer::None),
            other => Err(Error::Invalid(format!(
                "unknown tokenizer `{other}`: expected 13a, intl, char or none"
            ))),
        }
    }
}

impl BleuTokenizer {
    /// The tokenized line, tokens separated by single spaces.
    pub fn tokenize(self, line: &str) -> String {
        match self {
            BleuTokenizer::Thirteen => tokenize_13a(line),
            BleuTokenizer::Intl => tokenize_intl(line),
            BleuTokenizer::Char => tokenize_char(line),
            BleuTokenizer::None => line.to_string(),
        }
    }
}

/// Counts of all n-grams of orders 1..=max_order.
fn ngram_counts<'a>(tokens: &[&'a str], max_order: usize) -> HashMap<Vec<&'a str>, usize> {
    let mut counts = HashMap::new();
    for order in 1..=max_order {
        for window in tokens.windows(order) {
            *counts.entry(window.to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

/// Merges `other` into `into` keeping the larger count of each n-gram (`Counter |=`).
fn merge_max<'a>(into: &mut HashMap<Vec<&'a str>, usize>, other: HashMap<Vec<&'a str>, usize>) {
    for (ngram, count) in other {
        let slot = into.entry(ngram).or_insert(0);
        *slot = (*slot).max(count);
    }
}

/// The largest n-gram order [`bleu`] accepts (BLEU uses 4; orders past this only cost time).
pub const MAX_BLEU_ORDER: usize = 32;

/// Options of [`bleu`] (`evaluate`'s bleu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BleuOptions {
    /// Largest n-gram order (4).
    pub max_order: usize,
    /// Lin & Och (2004) add-one smoothing of every precision.
    pub smooth: bool,
}

impl Default for BleuOptions {
    fn default() -> Self {
        BleuOptions {
            max_order: 4,
            smooth: false,
        }
    }
}

/// `evaluate`'s bleu result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bleu {
    /// BLEU, 0..=1.
    pub bleu: f64,
    /// Modified n-gram precisions, orders 1..=max_order.
    pub precisions: Vec<f64>,
    /// exp(1 − reference_length / translation_length) when shorter, else 1.
    pub brevity_penalty: f64,
    /// translation_length / reference_length.
    pub length_ratio: f64,
    /// Tokens in all predictions.
    pub translation_length: usize,
    /// Tokens in the shortest reference of each prediction, summed.
    pub reference_length: usize,
}

/// `evaluate`'s bleu: tensorflow/nmt's `compute_bleu` on 13a tokens.
pub fn bleu(
    predictions: &[String],
    references: &[Vec<String>],
    options: &BleuOptions,
) -> Result<Bleu> {
    check_pairs(predictions.len(), references.len())?;
    check_reference_lists(references)?;
    if !(1..=MAX_BLEU_ORDER).contains(&options.max_order) {
        return Err(Error::Invalid(format!(
            "--max-order must be between 1 and {MAX_BLEU_ORDER}, found {}",
            options.max_order
        )));
    }
    let max_order = options.max_order;
    let mut matches_by_order = vec![0usize; max_order];
    let mut possible_by_order = vec![0usize; max_order];
    let mut reference_length = 0usize;
    let mut translation_length = 0usize;
    for (prediction, refs) in predictions.iter().zip(references) {
        let ref_texts: Vec<String> = refs.iter().map(|r| tokenize_13a(r)).collect();
        let ref_tokens: Vec<Vec<&str>> = ref_texts
            .iter()
            .map(|r| python_split(r).collect())
            .collect();
        let pred_text = tokenize_13a(prediction);
        let pred_tokens: Vec<&str> = python_split(&pred_text).collect();
        reference_length += ref_tokens.iter().map(Vec::len).min().unwrap_or(0);
        translation_length += pred_tokens.len();
        let mut merged = HashMap::new();
        for r in &ref_tokens {
            merge_max(&mut merged, ngram_counts(r, max_order));
        }
        for (ngram, count) in ngram_counts(&pred_tokens, max_order) {
            let overlap = count.min(merged.get(&ngram).copied().unwrap_or(0));
            matches_by_order[ngram.len() - 1] += overlap;
        }
        for order in 1..=max_order {
            if pred_tokens.len() >= order {
                possible_by_order[order - 1] += pred_tokens.len() - order + 1;
            }
        }
    }
    let precisions: Vec<f64> = (0..max_order)
        .map(|i| {
            if options.smooth {
                (matches_by_order[i] as f64 + 1.0) / (possible_by_order[i] as f64 + 1.0)
            } else if possible_by_order[i] > 0 {
                matches_by_order[i] as f64 / possible_by_order[i] as f64
            } else {
                0.0
            }
        })
        .collect();
    let geo_mean = if precisions.iter().all(|&p| p > 0.0) {
        let log_sum: f64 = precisions
            .iter()
            .fold(0.0, |sum, p| sum + (1.0 / max_order as f64) * p.ln());
        log_sum.exp()
    } else {
        0.0
    };
    // nmt's guard: no tokens on either side gives a ratio and a penalty of 0.
    let (ratio, bp) = if reference_length == 0 || translation_length == 0 {
        (0.0, 0.0)
    } else {
        let ratio = translation_length as f64 / reference_length as f64;
        let bp = if ratio > 1.0 {
            1.0
        } else {
            (1.0 - 1.0 / ratio).exp()
        };
        (ratio, bp)
    };
    Ok(Bleu {
        bleu: geo_mean * bp,
        precisions,
        brevity_penalty: bp,
        length_ratio: ratio,
        translation_length,
        reference_length,
    })
}

/// sacreBLEU's smoothing methods.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum SmoothMethod {
    /// NIST's geometric sequence (sacreBLEU's default).
    #[default]
    Exp,
    /// Zero precisions replaced by `value` / total (default 0.1).
    Floor(f64),
    /// `value` added to the counts of orders ≥ 2 (default 1).
    AddK(f64),
    /// No smoothing.
    None,
}

impl SmoothMethod {
    /// The method by sacreBLEU's name with its default value (`floor` 0.1, `add-k` 1), or
    /// `value` where given.
    pub fn from_name(name: &str, value: Option<f64>) -> Result<Self> {
        match (name, value) {
            ("exp", None) => Ok(SmoothMethod::Exp),
            ("none", None) => Ok(SmoothMethod::None),
            ("floor", v) => Ok(SmoothMethod::Floor(v.unwrap_or(0.1))),
            ("add-k", v) => Ok(SmoothMethod::AddK(v.unwrap_or(1.0))),
            ("exp" | "none", Some(_)) => Err(Error::Invalid(format!(
                "smooth method `{name}` takes no smooth value"
            ))),
            (other, _) => Err(Error::Invalid(format!(
                "unknown smooth method `{other}`: expected exp, floor, add-k or none"
            ))),
        }
    }
}

/// Options of [`sacrebleu`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SacreBleuOptions {
    /// Tokenizer (13a).
    pub tokenizer: BleuTokenizer,
    /// Smoothing (exp).
    pub smooth: SmoothMethod,
    /// Lowercase predictions and references first.
    pub lowercase: bool,
}

/// sacreBLEU's corpus BLEU with the keys of `evaluate`'s `sacrebleu`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SacreBleu {
    /// BLEU, 0..=100.
    pub score: f64,
    /// Matched n-grams per order (with add-k's additions, as sacreBLEU reports them).
    #[serde(serialize_with = "whole_numbers_as_integers")]
    pub counts: Vec<f64>,
    /// Predicted n-grams per order (with add-k's additions).
    #[serde(serialize_with = "whole_numbers_as_integers")]
    pub totals: Vec<f64>,
    /// Precisions per order, 0..=100.
    pub precisions: Vec<f64>,
    /// Brevity penalty.
    pub bp: f64,
    /// Prediction tokens.
    pub sys_len: usize,
    /// Reference tokens (the closest reference length of each prediction).
    pub ref_len: usize,
}

/// Counts are integers unless add-k smoothing added a fraction: written as sacreBLEU's
/// (Python's) `8`, not `8.0`.
fn whole_numbers_as_integers<S: serde::Serializer>(
    values: &[f64],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(values.len()))?;
    for &v in values {
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            seq.serialize_element(&(v as i64))?;
        } else {
            seq.serialize_element(&v)?;
        }
    }
    seq.end()
}

/// sacreBLEU's n-gram order.
const SACREBLEU_MAX_ORDER: usize = 4;

/// sacreBLEU's `_get_closest_ref_len`: the reference length nearest the prediction's, the
/// shorter one on ties.
fn closest_reference_length(hyp_len: usize, ref_lens: &[usize]) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            None => Some((diff, len)),
            Some((d, _)) if diff < d => Some((diff, len)),
            Some((d, l)) if diff == d && len < l => Some((d, len)),
            keep => keep,
        };
    }
    best.map_or(0, |(_, len)| len)
}

/// sacreBLEU's `BLEU(...).corpus_score(predictions, references)`.
pub fn sacrebleu(
    predictions: &[String],
    references: &[Vec<String>],
    options: &SacreBleuOptions,
) -> Result<SacreBleu> {
    check_pairs(predictions.len(), references.len())?;
    check_reference_lists(references)?;
    let preprocess = |text: &str| -> String {
        let text = if options.lowercase {
            text.to_lowercase()
        } else {
            text.to_string()
        };
        options
            .tokenizer
            .tokenize(text.trim_end_matches(super::is_python_space))
    };
    let order = SACREBLEU_MAX_ORDER;
    let mut correct = vec![0usize; order];
    let mut total = vec![0usize; order];
    let mut sys_len = 0usize;
    let mut ref_len = 0usize;
    for (prediction, refs) in predictions.iter().zip(references) {
        let ref_texts: Vec<String> = refs.iter().map(|r| preprocess(r)).collect();
        let mut merged = HashMap::new();
        let mut ref_lens = Vec::with_capacity(refs.len());
        for r in &ref_texts {
            let tokens: Vec<&str> = python_split(r).collect();
            ref_lens.push(tokens.len());
            merge_max(&mut merged, ngram_counts(&tokens, order));
        }
        let hyp_text = preprocess(prediction);
        let hyp_tokens: Vec<&str> = python_split(&hyp_text).collect();
        sys_len += hyp_tokens.len();
        ref_len += closest_reference_length(hyp_tokens.len(), &ref_lens);
        for (ngram, count) in ngram_counts(&hyp_tokens, order) {
            let n = ngram.len() - 1;
            total[n] += count;
            correct[n] += count.min(merged.get(&ngram).copied().unwrap_or(0));
        }
    }
    Ok(compute_sacrebleu(
        &correct,
        &total,
        sys_len,
        ref_len,
        options.smooth,
    ))
}

/// sacreBLEU's `BLEU.compute_bleu` from corpus statistics.
fn compute_sacrebleu(
    correct: &[usize],
    total: &[usize],
    sys_len: usize,
    ref_len: usize,
    smooth: SmoothMethod,
) -> SacreBleu {
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut counts: Vec<f64> = correct.iter().map(|&c| c as f64).collect();
    let mut totals: Vec<f64> = total.iter().map(|&t| t as f64).collect();
    let mut precisions = vec![0.0f64; correct.len()];
    let result = |score, counts, totals, precisions| SacreBleu {
        score,
        counts,
        totals,
        precisions,
        bp,
        sys_len,
        ref_len,
    };
    if correct.iter().all(|&c| c == 0) {
        return result(0.0, counts, totals, precisions);
    }
    let mut smooth_mteval = 1.0f64;
    for n in 0..precisions.len() {
        if let SmoothMethod::AddK(k) = smooth {
            if n > 0 {
                counts[n] += k;
                totals[n] += k;
            }
        }
        if totals[n] == 0.0 {
            break;
        }
        if counts[n] == 0.0 {
            match smooth {
                SmoothMethod::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n] = 100.0 / (smooth_mteval * totals[n]);
                }
                SmoothMethod::Floor(value) => precisions[n] = 100.0 * value / totals[n],
                SmoothMethod::AddK(_) | SmoothMethod::None => {}
            }
        } else {
            precisions[n] = 100.0 * counts[n] / totals[n];
        }
    }
    // sacreBLEU's `my_log` floors log(0) at -9999999999.
    let log_sum = precisions.iter().fold(0.0, |sum, &p| {
        sum + if p == 0.0 { -9_999_999_999.0 } else { p.ln() }
    });
    let score = bp * (log_sum / precisions.len() as f64).exp();
    result(score, counts, totals, precisions)
}

/// sacreBLEU's chrF with the keys of `evaluate`'s `chrf`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chrf {
    /// chrF, 0..=100.
    pub score: f64,
    /// Character n-gram order (6).
    pub char_order: usize,
    /// Word n-gram order (0: chrF, not chrF++).
    pub word_order: usize,
    /// Recall weight β (2).
    pub beta: usize,
}

/// Options of [`chrf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChrfOptions {
    /// Lowercase predictions and references first.
    pub lowercase: bool,
}

const CHRF_CHAR_ORDER: usize = 6;
const CHRF_BETA: usize = 2;

/// Character n-gram counts of orders 1..=max_order, whitespace removed.
fn char_ngram_counts(text: &str, max_order: usize) -> Vec<HashMap<String, usize>> {
    let chars: Vec<char> = python_split(text).flat_map(str::chars).collect();
    (1..=max_order)
        .map(|n| {
            let mut counts = HashMap::new();
            for window in chars.windows(n) {
                *counts.entry(window.iter().collect::<String>()).or_insert(0) += 1;
            }
            counts
        })
        .collect()
}

/// `[predicted, reference, matched]` n-gram counts per order, flattened.
fn chrf_statistics(
    hyp: &[HashMap<String, usize>],
    reference: &[HashMap<String, usize>],
) -> Vec<usize> {
    let mut stats = Vec::with_capacity(3 * hyp.len());
    for (h, r) in hyp.iter().zip(reference) {
        let mut matched = 0;
        let mut predicted = 0;
        for (ngram, &count) in h {
            predicted += count;
            if let Some(&rc) = r.get(ngram) {
                matched += count.min(rc);
            }
        }
        // sacreBLEU counts no predicted n-grams against a reference that has none.
        stats.push(if r.is_empty() { 0 } else { predicted });
        stats.push(r.values().sum());
        stats.push(matched);
    }
    stats
}

/// sacreBLEU's `CHRF._compute_f_score` without eps smoothing: precisions and recalls
/// averaged over the orders both sides have, then F-β.
fn chrf_f_score(stats: &[usize]) -> f64 {
    const EPS: f64 = 1e-16;
    let factor = (CHRF_BETA * CHRF_BETA) as f64;
    let (mut avg_prec, mut avg_rec) = (0.0f64, 0.0f64);
    let mut effective_order = 0usize;
    for triple in stats.chunks_exact(3) {
        let (n_hyp, n_ref, n_match) = (triple[0], triple[1], triple[2]);
        let prec = if n_hyp > 0 {
            n_match as f64 / n_hyp as f64
        } else {
            EPS
        };
        let rec = if n_ref > 0 {
            n_match as f64 / n_ref as f64
        } else {
            EPS
        };
        if n_hyp > 0 && n_ref > 0 {
            avg_prec += prec;
            avg_rec += rec;
            effective_order += 1;
        }
    }
    if effective_order == 0 {
        return 0.0;
    }
    avg_prec /= effective_order as f64;
    avg_rec /= effective_order as f64;
    if avg_prec + avg_rec != 0.0 {
        let mut score = (1.0 + factor) * avg_prec * avg_rec;
        score /= (factor * avg_prec) + avg_rec;
        100.0 * score
    } else {
        0.0
    }
}

/// sacreBLEU's `CHRF().corpus_score(predictions, references)`: per prediction the statistics
/// of its best-scoring reference, summed over the corpus, then one F-score.
pub fn chrf(
    predictions: &[String],
    references: &[Vec<String>],
    options: &ChrfOptions,
) -> Result<Chrf> {
    check_pairs(predictions.len(), references.len())?;
    check_reference_lists(references)?;
    let preprocess = |text: &str| {
        if options.lowercase {
            text.to_lowercase()
        } else {
            text.to_string()
        }
    };
    let mut totals = vec![0usize; 3 * CHRF_CHAR_ORDER];
    for (prediction, refs) in predictions.iter().zip(references) {
        let hyp = char_ngram_counts(&preprocess(prediction), CHRF_CHAR_ORDER);
        let mut best: Option<(f64, Vec<usize>)> = None;
        for r in refs {
            let stats = chrf_statistics(&hyp, &char_ngram_counts(&preprocess(r), CHRF_CHAR_ORDER));
            let f = chrf_f_score(&stats);
            if best.as_ref().is_none_or(|(best_f, _)| f > *best_f) {
                best = Some((f, stats));
            }
        }
        if let Some((_, stats)) = best {
            for (t, s) in totals.iter_mut().zip(stats) {
                *t += s;
            }
        }
    }
    Ok(Chrf {
        score: chrf_f_score(&totals),
        char_order: CHRF_CHAR_ORDER,
        word_order: 0,
        beta: CHRF_BETA,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_13a_splits_punctuation_but_not_numbers() {
        assert_eq!(
            tokenize_13a("Hello, world! It costs 3.50 &amp; 1-2 items."),
            "Hello , world ! It costs 3.50 & 1 - 2 items ."
        );
    }

    #[test]
    fn intl_tokenizer_separates_unicode_punctuation() {
        assert_eq!(
            tokenize_intl("«Bonjour», dit-il."),
            "« Bonjour » , dit - il ."
        );
    }

    #[test]
    fn closest_reference_length_prefers_the_shorter_on_ties() {
        assert_eq!(closest_reference_length(5, &[7, 3, 6]), 6);
        assert_eq!(closest_reference_length(5, &[7, 3]), 3);
    }
}
