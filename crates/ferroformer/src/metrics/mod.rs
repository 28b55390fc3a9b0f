//! Evaluation metrics with the keys, scales and arithmetic of the reference implementations
//! (scikit-learn, Hugging Face `evaluate`'s metric scripts, sacreBLEU, `rouge_score`, NLTK).
//!
//! Every metric takes predictions and references as strings (labels for the classification
//! metrics) and returns a serializable result whose field names are the keys the reference
//! returns, so `serde_json::to_value(result)` gives the same object as
//! `evaluate.load(name).compute(...)`.
//!
//! - [`classification`]: accuracy, precision, recall, F1 (scikit-learn's averages and
//!   zero-division behaviour).
//! - [`exact_match`]: `evaluate`'s exact_match and the SQuAD v1.1 script.
//! - [`bleu`]: `evaluate`'s bleu (tensorflow/nmt's `compute_bleu`), sacreBLEU's corpus BLEU
//!   and chrF, sharing the 13a tokenizer.
//! - [`rouge`]: `rouge_score`'s ROUGE-1/2/L/Lsum with NLTK's Porter stemmer ([`porter`]).
//! - [`meteor`]: NLTK's METEOR, with WordNet synonyms read by [`wordnet`].
//! - [`seqeval`]: `seqeval`'s entity precision, recall and F1 of tag sequences, and
//!   `evaluate`'s `seqeval` result; it scores sequences of tags, so it goes through
//!   [`compute_sequences`] rather than [`compute`].

pub mod bleu;
pub mod classification;
pub mod exact_match;
pub mod meteor;
pub mod porter;
pub mod rouge;
pub mod seqeval;
pub mod wordnet;

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The metrics [`compute`] knows, by the names `evaluate` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// [`classification::accuracy`].
    Accuracy,
    /// [`classification::precision`].
    Precision,
    /// [`classification::recall`].
    Recall,
    /// [`classification::f1`].
    F1,
    /// [`exact_match::exact_match`].
    ExactMatch,
    /// [`exact_match::squad`].
    Squad,
    /// [`bleu::bleu`].
    Bleu,
    /// [`bleu::sacrebleu`].
    SacreBleu,
    /// [`bleu::chrf`].
    Chrf,
    /// [`rouge::rouge`].
    Rouge,
    /// [`meteor::meteor`].
    Meteor,
    /// [`seqeval::report`] (sequences of tags: [`compute_sequences`]).
    Seqeval,
}

impl Metric {
    /// Every metric, in the order help texts list them.
    pub const ALL: [Metric; 12] = [
        Metric::Accuracy,
        Metric::Precision,
        Metric::Recall,
        Metric::F1,
        Metric::ExactMatch,
        Metric::Squad,
        Metric::Bleu,
        Metric::SacreBleu,
        Metric::Chrf,
        Metric::Rouge,
        Metric::Meteor,
        Metric::Seqeval,
    ];

    /// The metric's name (`evaluate.load`'s).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::F1 => "f1",
            Metric::ExactMatch => "exact_match",
            Metric::Squad => "squad",
            Metric::Bleu => "bleu",
            Metric::SacreBleu => "sacrebleu",
            Metric::Chrf => "chrf",
            Metric::Rouge => "rouge",
            Metric::Meteor => "meteor",
            Metric::Seqeval => "seqeval",
        }
    }

    /// The options (as [`MetricOptions`] field names) that apply to this metric.
    pub fn options(self) -> &'static [&'static str] {
        match self {
            Metric::Accuracy | Metric::Squad => &[],
            Metric::Precision | Metric::Recall | Metric::F1 => &["average", "pos_label"],
            Metric::ExactMatch => &[
                "regexes_to_ignore",
                "ignore_case",
                "ignore_punctuation",
                "ignore_numbers",
            ],
            Metric::Bleu => &["max_order", "smooth"],
            Metric::SacreBleu => &["tokenize", "smooth_method", "smooth_value", "lowercase"],
            Metric::Chrf => &["lowercase"],
            Metric::Rouge => &[
                "rouge_types",
                "use_stemmer",
                "no_aggregator",
                "bootstrap",
                "seed",
            ],
            Metric::Meteor => &["wordnet"],
            Metric::Seqeval => &["scheme", "mode", "suffix", "zero_division"],
        }
    }

    /// Whether the metric compares sequences of tags (a list per line; [`compute_sequences`]).
    pub fn takes_sequences(self) -> bool {
        self == Metric::Seqeval
    }

    /// Whether the metric compares labels (one per line) rather than texts.
    pub fn takes_labels(self) -> bool {
        matches!(
            self,
            Metric::Accuracy | Metric::Precision | Metric::Recall | Metric::F1
        )
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                Error::Invalid(format!(
                    "unknown metric `{s}`: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// The options of every metric, named as the reference implementations name their
/// arguments; the command line spells them as flags (`ignore_case` is `--ignore-case`).
/// [`compute`] rejects an option the metric does not take.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricOptions {
    /// precision/recall/f1: binary, micro, macro or weighted (default binary).
    pub average: Option<String>,
    /// precision/recall/f1: the positive label of a binary average (default "1").
    pub pos_label: Option<String>,
    /// exact_match: patterns removed first.
    #[serde(default)]
    pub regexes_to_ignore: Vec<String>,
    /// exact_match: lowercase.
    #[serde(default)]
    pub ignore_case: bool,
    /// exact_match: remove ASCII punctuation.
    #[serde(default)]
    pub ignore_punctuation: bool,
    /// exact_match: remove digits.
    #[serde(default)]
    pub ignore_numbers: bool,
    /// bleu: largest n-gram order (4).
    pub max_order: Option<usize>,
    /// bleu: add-one smoothing.
    #[serde(default)]
    pub smooth: bool,
    /// sacrebleu: 13a, intl, char or none.
    pub tokenize: Option<String>,
    /// sacrebleu: exp, floor, add-k or none.
    pub smooth_method: Option<String>,
    /// sacrebleu: the value of floor (0.1) or add-k (1).
    pub smooth_value: Option<f64>,
    /// sacrebleu/chrf: lowercase.
    #[serde(default)]
    pub lowercase: bool,
    /// rouge: types to compute (rouge1, rouge2, rougeL, rougeLsum).
    #[serde(default)]
    pub rouge_types: Vec<String>,
    /// rouge: Porter-stem tokens.
    #[serde(default)]
    pub use_stemmer: bool,
    /// rouge: per-example F-measures instead of their mean.
    #[serde(default)]
    pub no_aggregator: bool,
    /// rouge: bootstrap resamples (with `seed`).
    pub bootstrap: Option<usize>,
    /// rouge: numpy legacy seed of the bootstrap.
    pub seed: Option<u32>,
    /// meteor: WordNet 3.0 database directory (default [`DEFAULT_WORDNET_DIR`]).
    pub wordnet: Option<PathBuf>,
    /// seqeval: IOB1, IOB2, IOE1, IOE2, IOBES or BILOU (with `mode` strict).
    pub scheme: Option<String>,
    /// seqeval: `strict` (default: conlleval's chunking).
    pub mode: Option<String>,
    /// seqeval: the prefix ends the tag (`PER-B`).
    #[serde(default)]
    pub suffix: bool,
    /// seqeval: warn (default, acts as 0), 0 or 1.
    pub zero_division: Option<String>,
}

/// Where Debian's `wordnet-base` installs the WordNet database.
pub const DEFAULT_WORDNET_DIR: &str = "/usr/share/wordnet";

impl MetricOptions {
    /// The names of the options that are set (differ from their defaults).
    pub fn set_options(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut mark = |on: bool, name: &'static str| {
            if on {
                set.push(name);
            }
        };
        mark(self.average.is_some(), "average");
        mark(self.pos_label.is_some(), "pos_label");
        mark(!self.regexes_to_ignore.is_empty(), "regexes_to_ignore");
        mark(self.ignore_case, "ignore_case");
        mark(self.ignore_punctuation, "ignore_punctuation");
        mark(self.ignore_numbers, "ignore_numbers");
        mark(self.max_order.is_some(), "max_order");
        mark(self.smooth, "smooth");
        mark(self.tokenize.is_some(), "tokenize");
        mark(self.smooth_method.is_some(), "smooth_method");
        mark(self.smooth_value.is_some(), "smooth_value");
        mark(self.lowercase, "lowercase");
        mark(!self.rouge_types.is_empty(), "rouge_types");
        mark(self.use_stemmer, "use_stemmer");
        mark(self.no_aggregator, "no_aggregator");
        mark(self.bootstrap.is_some(), "bootstrap");
        mark(self.seed.is_some(), "seed");
        mark(self.wordnet.is_some(), "wordnet");
        mark(self.scheme.is_some(), "scheme");
        mark(self.mode.is_some(), "mode");
        mark(self.suffix, "suffix");
        mark(self.zero_division.is_some(), "zero_division");
        set
    }
}

/// An option name as a command-line flag: `ignore_case` → `--ignore-case`.
pub fn flag_name(option: &str) -> String {
    format!("--{}", option.replace('_', "-"))
}

/// Computes `metric` on predictions and their references (one list per prediction; the
/// classification metrics and exact_match take exactly one each) and returns the result
/// as the reference implementation's JSON object.
pub fn compute(
    metric: Metric,
    predictions: &[String],
    references: &[Vec<String>],
    options: &MetricOptions,
) -> Result<serde_json::Value> {
    check_options(metric, options)?;
    check_pairs(predictions.len(), references.len())?;
    let json = |r: std::result::Result<serde_json::Value, serde_json::Error>| {
        r.map_err(|e| Error::Invalid(format!("cannot serialize the result: {e}")))
    };
    let labels = || -> Result<Vec<String>> {
        Ok(single_references(metric.name(), references)?
            .into_iter()
            .map(String::from)
            .collect())
    };
    let classification = || -> Result<classification::ClassificationOptions> {
        let mut o = classification::ClassificationOptions::default();
        if let Some(a) = &options.average {
            o.average = a.parse()?;
        }
        if let Some(p) = &options.pos_label {
            o.pos_label = p.clone();
        }
        Ok(o)
    };
    match metric {
        Metric::Accuracy => json(serde_json::to_value(classification::accuracy(
            predictions,
            &labels()?,
        )?)),
        Metric::Precision => json(serde_json::to_value(classification::precision(
            predictions,
            &labels()?,
            &classification()?,
        )?)),
        Metric::Recall => json(serde_json::to_value(classification::recall(
            predictions,
            &labels()?,
            &classification()?,
        )?)),
        Metric::F1 => json(serde_json::to_value(classification::f1(
            predictions,
            &labels()?,
            &classification()?,
        )?)),
        Metric::ExactMatch => {
            let o = exact_match::ExactMatchOptions {
                regexes_to_ignore: options.regexes_to_ignore.clone(),
                ignore_case: options.ignore_case,
                ignore_punctuation: options.ignore_punctuation,
                ignore_numbers: options.ignore_numbers,
            };
            json(serde_json::to_value(exact_match::exact_match(
                predictions,
                references,
                &o,
            )?))
        }
        Metric::Squad => json(serde_json::to_value(exact_match::squad(
            predictions,
            references,
        )?)),
        Metric::Bleu => {
            let o = bleu::BleuOptions {
                max_order: options.max_order.unwrap_or(4),
                smooth: options.smooth,
            };
            json(serde_json::to_value(bleu::bleu(
                predictions,
                references,
                &o,
            )?))
        }
        Metric::SacreBleu => {
            let o = bleu::SacreBleuOptions {
                tokenizer: options.tokenize.as_deref().unwrap_or("13a").parse()?,
                smooth: bleu::SmoothMethod::from_name(
                    options.smooth_method.as_deref().unwrap_or("exp"),
                    options.smooth_value,
                )?,
                lowercase: options.lowercase,
            };
            json(serde_json::to_value(bleu::sacrebleu(
                predictions,
                references,
                &o,
            )?))
        }
        Metric::Chrf => {
            let o = bleu::ChrfOptions {
                lowercase: options.lowercase,
            };
            json(serde_json::to_value(bleu::chrf(
                predictions,
                references,
                &o,
            )?))
        }
        Metric::Rouge => {
            let rouge_types = if options.rouge_types.is_empty() {
                rouge::DEFAULT_ROUGE_TYPES.to_vec()
            } else {
                options
                    .rouge_types
                    .iter()
                    .map(|t| t.parse())
                    .collect::<Result<Vec<_>>>()?
            };
            let aggregation = match (options.no_aggregator, options.bootstrap, options.seed) {
                (false, None, None) => rouge::RougeAggregation::Mean,
                (true, None, None) => rouge::RougeAggregation::PerExample,
                (false, Some(samples), Some(seed)) => {
                    rouge::RougeAggregation::Bootstrap { samples, seed }
                }
                (true, Some(_), _) => {
                    return Err(Error::Invalid(
                        "--no-aggregator and --bootstrap exclude each other".into(),
                    ))
                }
                (_, Some(_), None) | (_, None, Some(_)) => {
                    return Err(Error::Invalid(
                        "the bootstrap aggregate needs both --bootstrap N and --seed S".into(),
                    ))
                }
            };
            let o = rouge::RougeOptions {
                rouge_types,
                use_stemmer: options.use_stemmer,
                aggregation,
            };
            json(serde_json::to_value(rouge::rouge(
                predictions,
                references,
                &o,
            )?))
        }
        Metric::Meteor => {
            let dir = options
                .wordnet
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_WORDNET_DIR));
            let wordnet = wordnet::WordNet::open(&dir)?;
            json(serde_json::to_value(meteor::meteor(
                predictions,
                references,
                &wordnet,
                &meteor::MeteorParameters::default(),
            )?))
        }
        Metric::Seqeval => Err(Error::Invalid(
            "seqeval scores sequences of tags, not texts: call compute_sequences".into(),
        )),
    }
}

/// Refuses an option that `metric` does not take, listing those it does.
fn check_options(metric: Metric, options: &MetricOptions) -> Result<()> {
    let allowed = metric.options();
    if let Some(stray) = options
        .set_options()
        .into_iter()
        .find(|o| !allowed.contains(o))
    {
        let takes = if allowed.is_empty() {
            "it takes no options".to_string()
        } else {
            let flags: Vec<String> = allowed.iter().map(|o| flag_name(o)).collect();
            format!("its options are {}", flags.join(", "))
        };
        return Err(Error::Invalid(format!(
            "option {} does not apply to metric {}: {takes}",
            flag_name(stray),
            metric.name()
        )));
    }
    Ok(())
}

/// seqeval's options as [`MetricOptions`] spells them (`scheme`, `mode`, `suffix`,
/// `zero_division`), parsed.
pub fn seqeval_options(options: &MetricOptions) -> Result<seqeval::SeqevalOptions> {
    let strict = match options.mode.as_deref() {
        None => false,
        Some("strict") => true,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "unknown --mode `{other}`: seqeval has one mode besides its default, strict"
            )))
        }
    };
    Ok(seqeval::SeqevalOptions {
        strict,
        scheme: options.scheme.as_deref().map(str::parse).transpose()?,
        suffix: options.suffix,
        zero_division: options
            .zero_division
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default(),
    })
}

/// Computes a metric of tag sequences (seqeval) on predicted sequences and their
/// reference sequences (one each, equal lengths) and returns `evaluate`'s JSON object.
pub fn compute_sequences(
    metric: Metric,
    predictions: &[Vec<String>],
    references: &[Vec<String>],
    options: &MetricOptions,
) -> Result<serde_json::Value> {
    check_options(metric, options)?;
    check_pairs(predictions.len(), references.len())?;
    match metric {
        Metric::Seqeval => {
            let report = seqeval::report(predictions, references, &seqeval_options(options)?)?;
            serde_json::to_value(report)
                .map_err(|e| Error::Invalid(format!("cannot serialize the result: {e}")))
        }
        other => Err(Error::Invalid(format!(
            "{} scores texts or labels, not sequences of tags: call compute",
            other.name()
        ))),
    }
}

/// Python's `str.isspace()`: Unicode White_Space plus the four ASCII separators
/// U+001C..U+001F that Python also splits on.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` without arguments: runs of whitespace separate, no empty pieces.
pub(crate) fn python_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_python_space)
        .filter(|piece| !piece.is_empty())
}

/// Checks that there are as many predictions as references and at least one of each.
pub(crate) fn check_pairs(predictions: usize, references: usize) -> Result<()> {
    if predictions != references {
        return Err(Error::Invalid(format!(
            "{predictions} predictions but {references} references: every prediction needs its references"
        )));
    }
    if predictions == 0 {
        return Err(Error::Invalid(
            "no predictions: a metric needs at least one prediction".into(),
        ));
    }
    Ok(())
}

/// Checks that every prediction has at least one reference.
pub(crate) fn check_reference_lists(references: &[Vec<String>]) -> Result<()> {
    if let Some(i) = references.iter().position(|r| r.is_empty()) {
        return Err(Error::Invalid(format!(
            "prediction {} has an empty list of references; at least one is needed",
            i + 1
        )));
    }
    Ok(())
}

/// The one reference of each prediction, for the metrics that accept only one.
pub(crate) fn single_references<'a>(
    metric: &str,
    references: &'a [Vec<String>],
) -> Result<Vec<&'a str>> {
    references
        .iter()
        .enumerate()
        .map(|(i, refs)| match refs.as_slice() {
            [one] => Ok(one.as_str()),
            _ => Err(Error::Invalid(format!(
                "{metric} takes exactly one reference per prediction; prediction {} has {}",
                i + 1,
                refs.len()
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_split_drops_empty_pieces_and_ascii_separators() {
        let pieces: Vec<&str> = python_split("  a\u{1f}b \u{a0}c\t\n").collect();
        assert_eq!(pieces, ["a", "b", "c"]);
    }
}
