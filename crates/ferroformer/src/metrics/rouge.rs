//! ROUGE as Google's `rouge_score` computes it, aggregated as `evaluate`'s `rouge` does.
//!
//! Tokens are the lowercased text's runs of ASCII letters and digits (`rouge_score`'s
//! default tokenizer), optionally Porter-stemmed ([`super::porter`], words longer than three
//! letters). ROUGE-N counts clipped n-gram overlaps, ROUGE-L the longest common
//! subsequence, ROUGE-Lsum the union LCS over newline-separated sentences. With several
//! references the best F-measure per ROUGE type counts (`score_multi`).
//!
//! Aggregation: the default is the plain mean of the per-example F-measures; `evaluate`'s
//! default, `rouge_score`'s `BootstrapAggregator` (the median of bootstrap means), is
//! [`RougeAggregation::Bootstrap`], which draws its resamples as numpy's legacy seeded
//! generator does (`np.random.seed(seed)`) so a seeded run is reproducible in both.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::{check_pairs, check_reference_lists, porter};
use crate::error::{Error, Result};

/// A ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RougeType {
    /// ROUGE-N on n-grams (`rouge1` .. `rouge9`).
    N(usize),
    /// ROUGE-L: longest common subsequence of the whole texts.
    L,
    /// ROUGE-Lsum: summary-level union LCS over newline-separated sentences.
    Lsum,
}

impl RougeType {
    /// `rouge_score`'s name: `rouge1`, `rouge2`, `rougeL`, `rougeLsum`.
    pub fn name(self) -> String {
        match self {
            RougeType::N(n) => format!("rouge{n}"),
            RougeType::L => "rougeL".into(),
            RougeType::Lsum => "rougeLsum".into(),
        }
    }
}

impl std::str::FromStr for RougeType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rougeL" => Ok(RougeType::L),
            "rougeLsum" => Ok(RougeType::Lsum),
            _ => match s
                .strip_prefix("rouge")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) if (1..=9).contains(&n) && s.len() == 6 => Ok(RougeType::N(n)),
                _ => Err(Error::Invalid(format!(
                    "unknown ROUGE type `{s}`: expected rouge1..rouge9, rougeL or rougeLsum"
                ))),
            },
        }
    }
}

/// `evaluate`'s default ROUGE types.
pub const DEFAULT_ROUGE_TYPES: [RougeType; 4] = [
    RougeType::N(1),
    RougeType::N(2),
    RougeType::L,
    RougeType::Lsum,
];

/// Precision, recall and F-measure of one prediction (`rouge_score.scoring.Score`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RougeScore {
    /// Overlap over the prediction's size.
    pub precision: f64,
    /// Overlap over the reference's size.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub fmeasure: f64,
}

impl RougeScore {
    const ZERO: RougeScore = RougeScore {
        precision: 0.0,
        recall: 0.0,
        fmeasure: 0.0,
    };

    fn new(precision: f64, recall: f64) -> Self {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        RougeScore {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// `rouge_score`'s default tokenizer.
pub fn tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| {
            if use_stemmer && t.len() > 3 {
                porter::stem(t)
            } else {
                t.to_string()
            }
        })
        // The stemmer keeps ASCII letters and digits; rouge_score checks anyway.
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .collect()
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for w in tokens.windows(n) {
        *counts.entry(w).or_insert(0) += 1;
    }
    counts
}

fn score_ngrams(target: &[String], prediction: &[String], n: usize) -> RougeScore {
    let target_ngrams = ngrams(target, n);
    let prediction_ngrams = ngrams(prediction, n);
    let overlap: usize = target_ngrams
        .iter()
        .map(|(g, &c)| c.min(prediction_ngrams.get(g).copied().unwrap_or(0)))
        .sum();
    let target_count: usize = target_ngrams.values().sum();
    let prediction_count: usize = prediction_ngrams.values().sum();
    RougeScore::new(
        overlap as f64 / prediction_count.max(1) as f64,
        overlap as f64 / target_count.max(1) as f64,
    )
}

fn lcs_table(reference: &[String], candidate: &[String]) -> Vec<Vec<usize>> {
    let mut table = vec![vec![0usize; candidate.len() + 1]; reference.len() + 1];
    for i in 1..=reference.len() {
        for j in 1..=candidate.len() {
            table[i][j] = if reference[i - 1] == candidate[j - 1] {
                table[i - 1][j - 1] + 1
            } else {
                table[i - 1][j].max(table[i][j - 1])
            };
        }
    }
    table
}

fn score_lcs(target: &[String], prediction: &[String]) -> RougeScore {
    if target.is_empty() || prediction.is_empty() {
        return RougeScore::ZERO;
    }
    let lcs = lcs_table(target, prediction)[target.len()][prediction.len()] as f64;
    RougeScore::new(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// Indices into `reference` of one longest common subsequence (`rouge_score`'s
/// `_backtrack_norec`, which prefers moving up the reference on ties).
fn lcs_indices(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let table = lcs_table(reference, candidate);
    let (mut i, mut j) = (reference.len(), candidate.len());
    let mut indices = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == candidate[j - 1] {
            indices.push(i - 1);
            i -= 1;
            j -= 1;
        } else if table[i][j - 1] > table[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    indices.reverse();
    indices
}

fn summary_level_lcs(reference: &[Vec<String>], candidate: &[Vec<String>]) -> RougeScore {
    if reference.is_empty() || candidate.is_empty() {
        return RougeScore::ZERO;
    }
    let m: usize = reference.iter().map(Vec::len).sum();
    let n: usize = candidate.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return RougeScore::ZERO;
    }
    let mut reference_counts: HashMap<&str, usize> = HashMap::new();
    let mut candidate_counts: HashMap<&str, usize> = HashMap::new();
    for t in reference.iter().flatten() {
        *reference_counts.entry(t).or_default() += 1;
    }
    for t in candidate.iter().flatten() {
        *candidate_counts.entry(t).or_default() += 1;
    }
    let mut hits = 0usize;
    for r in reference {
        let union: BTreeSet<usize> = candidate.iter().flat_map(|c| lcs_indices(r, c)).collect();
        for i in union {
            let token = r[i].as_str();
            let (Some(c), Some(rc)) = (
                candidate_counts.get(token).copied(),
                reference_counts.get(token).copied(),
            ) else {
                continue;
            };
            if c > 0 && rc > 0 {
                hits += 1;
                candidate_counts.insert(token, c - 1);
                reference_counts.insert(token, rc - 1);
            }
        }
    }
    RougeScore::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

/// Newline-separated, non-empty sentences, tokenized (rougeLsum's `get_sents`).
fn sentences(text: &str, use_stemmer: bool) -> Vec<Vec<String>> {
    text.split('\n')
        .filter(|s| !s.is_empty())
        .map(|s| tokenize(s, use_stemmer))
        .collect()
}

/// `RougeScorer(rouge_types, use_stemmer).score(target, prediction)`.
pub fn score_pair(
    target: &str,
    prediction: &str,
    rouge_types: &[RougeType],
    use_stemmer: bool,
) -> Vec<RougeScore> {
    let target_tokens = tokenize(target, use_stemmer);
    let prediction_tokens = tokenize(prediction, use_stemmer);
    rouge_types
        .iter()
        .map(|t| match t {
            RougeType::N(n) => score_ngrams(&target_tokens, &prediction_tokens, *n),
            RougeType::L => score_lcs(&target_tokens, &prediction_tokens),
            RougeType::Lsum => summary_level_lcs(
                &sentences(target, use_stemmer),
                &sentences(prediction, use_stemmer),
            ),
        })
        .collect()
}

/// `score_multi`: per ROUGE type, the score of the reference with the best F-measure (the
/// first on ties, as `np.argmax`).
pub fn score_multi(
    targets: &[String],
    prediction: &str,
    rouge_types: &[RougeType],
    use_stemmer: bool,
) -> Vec<RougeScore> {
    let all: Vec<Vec<RougeScore>> = targets
        .iter()
        .map(|t| score_pair(t, prediction, rouge_types, use_stemmer))
        .collect();
    (0..rouge_types.len())
        .map(|k| {
            let mut best = RougeScore::ZERO;
            let mut best_f = f64::NEG_INFINITY;
            for scores in &all {
                if scores[k].fmeasure > best_f {
                    best_f = scores[k].fmeasure;
                    best = scores[k];
                }
            }
            best
        })
        .collect()
}

/// How per-example F-measures become the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RougeAggregation {
    /// The mean over examples.
    #[default]
    Mean,
    /// One F-measure per example (`use_aggregator=False`).
    PerExample,
    /// `rouge_score`'s `BootstrapAggregator(n_samples=samples)` after
    /// `np.random.seed(seed)`: the median of the bootstrap means.
    Bootstrap {
        /// Bootstrap resamples.
        samples: usize,
        /// numpy legacy seed (0..2^32).
        seed: u32,
    },
}

/// The most bootstrap resamples [`rouge`] draws (rouge_score's default is 1000).
pub const MAX_BOOTSTRAP_SAMPLES: usize = 1_000_000;

/// Options of [`rouge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RougeOptions {
    /// ROUGE types, in output order.
    pub rouge_types: Vec<RougeType>,
    /// Porter-stem tokens longer than three letters.
    pub use_stemmer: bool,
    /// Aggregation.
    pub aggregation: RougeAggregation,
}

impl Default for RougeOptions {
    fn default() -> Self {
        RougeOptions {
            rouge_types: DEFAULT_ROUGE_TYPES.to_vec(),
            use_stemmer: false,
            aggregation: RougeAggregation::Mean,
        }
    }
}

/// A ROUGE type's aggregate: one number, or one per example.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RougeValue {
    /// Mean or bootstrap median F-measure.
    Aggregate(f64),
    /// Per-example F-measures.
    PerExample(Vec<f64>),
}

/// `{"rouge1": .., "rouge2": .., "rougeL": .., "rougeLsum": ..}` in the requested order.
pub type Rouge = BTreeMap<String, RougeValue>;

/// ROUGE F-measures of `predictions` against their references, aggregated as `options`
/// says. The map is ordered by name; the keys are `rouge_score`'s.
pub fn rouge(
    predictions: &[String],
    references: &[Vec<String>],
    options: &RougeOptions,
) -> Result<Rouge> {
    check_pairs(predictions.len(), references.len())?;
    check_reference_lists(references)?;
    if options.rouge_types.is_empty() {
        return Err(Error::Invalid("no ROUGE types requested".into()));
    }
    let per_example: Vec<Vec<RougeScore>> = predictions
        .iter()
        .zip(references)
        .map(|(p, refs)| match refs.as_slice() {
            [one] => score_pair(one, p, &options.rouge_types, options.use_stemmer),
            many => score_multi(many, p, &options.rouge_types, options.use_stemmer),
        })
        .collect();
    let mut generator = match options.aggregation {
        RougeAggregation::Bootstrap { samples, seed } => {
            if !(1..=MAX_BOOTSTRAP_SAMPLES).contains(&samples) {
                return Err(Error::Invalid(format!(
                    "--bootstrap takes 1 to {MAX_BOOTSTRAP_SAMPLES} samples, found {samples}"
                )));
            }
            Some((samples, Mt19937::new(seed)))
        }
        _ => None,
    };
    let mut result = Rouge::new();
    for (k, rouge_type) in options.rouge_types.iter().enumerate() {
        let fmeasures: Vec<f64> = per_example.iter().map(|s| s[k].fmeasure).collect();
        let value = match (&options.aggregation, generator.as_mut()) {
            (RougeAggregation::PerExample, _) => RougeValue::PerExample(fmeasures),
            (_, Some((samples, rng))) => {
                RougeValue::Aggregate(bootstrap_median(&fmeasures, *samples, rng))
            }
            _ => RougeValue::Aggregate(fmeasures.iter().sum::<f64>() / fmeasures.len() as f64),
        };
        result.insert(rouge_type.name(), value);
    }
    Ok(result)
}

/// `BootstrapAggregator._bootstrap_resample`'s mid row for one measure: `samples` means of
/// resamples drawn with `np.random.choice(n, size=n)`, then their 50th percentile.
fn bootstrap_median(values: &[f64], samples: usize, rng: &mut Mt19937) -> f64 {
    let n = values.len();
    let mut means: Vec<f64> = (0..samples)
        .map(|_| {
            let sum: f64 = (0..n).map(|_| values[rng.below(n)]).sum();
            sum / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    percentile_linear(&means, 0.5)
}

/// numpy's `percentile` with the default linear method on sorted values, `q` in 0..=1.
fn percentile_linear(sorted: &[f64], q: f64) -> f64 {
    let last = sorted.len() - 1;
    let virtual_index = last as f64 * q;
    if virtual_index >= last as f64 {
        return sorted[last];
    }
    let below = virtual_index.floor() as usize;
    let t = virtual_index - virtual_index.floor();
    let (a, b) = (sorted[below], sorted[below + 1]);
    let diff = b - a;
    // numpy's `_lerp` switches form at t = 0.5 for monotonicity.
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// The Mersenne Twister MT19937 as numpy's legacy `RandomState` seeds and uses it.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    next ^= 0x9908_b0df;
                }
                self.state[i] = next;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// A uniform integer in 0..n as legacy `randint(0, n)` draws it: masked rejection
    /// sampling on 32-bit outputs; no draw at all when n is 1.
    fn below(&mut self, n: usize) -> usize {
        let max = (n - 1) as u32;
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // First outputs of init_genrand(5489), the reference implementation's default seed.
        let mut rng = Mt19937::new(5489);
        assert_eq!(rng.next_u32(), 3_499_211_612);
        assert_eq!(rng.next_u32(), 581_869_302);
    }

    #[test]
    fn tokenizer_keeps_ascii_alphanumeric_runs() {
        assert_eq!(
            tokenize("The cat's 2 HATS—naïve!", false),
            ["the", "cat", "s", "2", "hats", "na", "ve"]
        );
    }
}
