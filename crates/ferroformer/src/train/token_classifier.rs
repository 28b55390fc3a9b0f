//! `train token-classifier`: fine-tuning a token-classification head (NER, POS tagging) on
//! a pretrained encoder with [`super::finetune`]'s loop. This file holds what is the task's
//! own: reading tagged sentences (CoNLL-style files or JSONL), tokenizing the words and
//! aligning the tags with the sub-tokens as `transformers`' `tokenize_and_align_labels`
//! recipe does (a word's tag on its first sub-token, [`IGNORE_LABEL`] on the others and on
//! special tokens), and the metrics: tag accuracy and `seqeval`'s entity precision, recall
//! and F1.
//!
//! The output directory is a Hugging Face checkpoint that `transformers`'
//! `AutoModelForTokenClassification` and our `token-classification` pipeline load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::finetune::{
    fine_tune, FineTuneConfig, FineTuneEvent, FineTuneRun, FineTuneTask, HeadKind, TaskData,
    Tokenized, IGNORE_LABEL,
};
use super::labelled_data::{at, jsonl_objects, sorted_labels, split_off};
use crate::error::{Error, Result};
use crate::metrics::seqeval::seqeval;
use crate::models::tokenizer::{EncodeOptions, TruncationStrategy};
use crate::models::AutoTokenizer;

/// Everything a token-classification run needs: the shared settings (flattened: every key
/// is a top-level TOML key and a flag) and the JSONL columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenClassifierConfig {
    /// The settings every fine-tuning run shares.
    #[serde(flatten)]
    pub common: FineTuneConfig,
    /// JSONL field holding the words (a list of strings).
    pub tokens_column: String,
    /// JSONL field holding the tags (a list of tag names or integer ids, one per word).
    pub tags_column: String,
}

impl Default for TokenClassifierConfig {
    fn default() -> Self {
        Self {
            common: FineTuneConfig {
                out: PathBuf::from("runs/token-classifier"),
                metric: vec!["f1".into()],
                ..Default::default()
            },
            tokens_column: "tokens".into(),
            tags_column: "tags".into(),
        }
    }
}

/// The metrics an evaluation can compute: `seqeval`'s micro-averaged entity `f1`,
/// `precision` and `recall`, the `accuracy` of the words' tags, and `loss`.
pub const TOKEN_CLASSIFIER_METRICS: &[&str] = &["f1", "precision", "recall", "accuracy", "loss"];

impl TokenClassifierConfig {
    /// Reads a TOML file (unknown keys are errors with a suggestion).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        super::config::from_toml_file(path)
    }

    /// Sets one key from its string form (a `--flag value` or `key=value`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        super::config::set_key(self, key, value)
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<()> {
        self.common.validate(TOKEN_CLASSIFIER_METRICS)?;
        for (key, v) in [
            ("tokens_column", &self.tokens_column),
            ("tags_column", &self.tags_column),
        ] {
            if v.is_empty() {
                return Err(Error::config(key, "must not be empty"));
            }
        }
        Ok(())
    }
}

/// One tagged sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedSentence {
    /// The words.
    pub tokens: Vec<String>,
    /// One tag per word, as written (an id is kept as its decimal text).
    pub tags: Vec<String>,
    /// The file it came from.
    pub file: PathBuf,
    /// The line of each tag (CoNLL: each word's own line; JSONL: the record's).
    pub lines: Vec<usize>,
}

/// Reads tagged sentences: JSONL (`.jsonl`, `.json`, `.ndjson`: one object per line with a
/// list of words and a list of tags) or, any other extension, CoNLL style (one `word … TAG`
/// per line, the tag in the last column, a blank line between sentences, `-DOCSTART-` lines
/// skipped).
pub fn read_tagged(
    path: &Path,
    tokens_column: &str,
    tags_column: &str,
) -> Result<Vec<TaggedSentence>> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format!(
                "not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let sentences = match ext.as_str() {
        "jsonl" | "json" | "ndjson" => read_jsonl(path, text, tokens_column, tags_column)?,
        _ => read_conll(path, text)?,
    };
    if sentences.is_empty() {
        return Err(Error::file(path, "holds no sentences"));
    }
    Ok(sentences)
}

fn read_conll(path: &Path, text: &str) -> Result<Vec<TaggedSentence>> {
    let mut out = Vec::new();
    let mut current = TaggedSentence {
        tokens: Vec::new(),
        tags: Vec::new(),
        file: path.to_path_buf(),
        lines: Vec::new(),
    };
    let mut flush = |s: &mut TaggedSentence| {
        if !s.tokens.is_empty() {
            out.push(TaggedSentence {
                tokens: std::mem::take(&mut s.tokens),
                tags: std::mem::take(&mut s.tags),
                file: s.file.clone(),
                lines: std::mem::take(&mut s.lines),
            });
        }
    };
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => flush(&mut current),
            [first, ..] if *first == "-DOCSTART-" => flush(&mut current),
            [word, .., tag] => {
                current.tokens.push(word.to_string());
                current.tags.push(tag.to_string());
                current.lines.push(i + 1);
            }
            [only] => {
                return Err(at(
                    path,
                    i + 1,
                    format!(
                        "expected a word and its tag in the last column (`word TAG`), found only `{only}`"
                    ),
                ))
            }
        }
    }
    flush(&mut current);
    Ok(out)
}

fn read_jsonl(
    path: &Path,
    text: &str,
    tokens_column: &str,
    tags_column: &str,
) -> Result<Vec<TaggedSentence>> {
    let mut out = Vec::new();
    for record in jsonl_objects(path, text) {
        let (n, obj) = record?;
        let list = |col: &str, what: &str| -> Result<&Vec<serde_json::Value>> {
            match obj.get(col) {
                None => Err(at(
                    path,
                    n,
                    format!(
                        "no {what} column `{col}` (the record has {:?})",
                        obj.keys().collect::<Vec<_>>()
                    ),
                )),
                Some(serde_json::Value::Array(a)) => Ok(a),
                Some(other) => Err(at(
                    path,
                    n,
                    format!("{what} column `{col}`: expected a list, found {other}"),
                )),
            }
        };
        let words = list(tokens_column, "tokens")?;
        let tags = list(tags_column, "tags")?;
        if words.is_empty() {
            return Err(at(
                path,
                n,
                format!("tokens column `{tokens_column}` is an empty list"),
            ));
        }
        if words.len() != tags.len() {
            return Err(at(
                path,
                n,
                format!(
                    "{} tokens in column `{tokens_column}` but {} tags in column `{tags_column}`",
                    words.len(),
                    tags.len()
                ),
            ));
        }
        let tokens = words
            .iter()
            .enumerate()
            .map(|(j, w)| match w {
                serde_json::Value::String(s) => Ok(s.clone()),
                other => Err(at(
                    path,
                    n,
                    format!(
                        "tokens column `{tokens_column}`, token {j}: expected a string, found {other}"
                    ),
                )),
            })
            .collect::<Result<Vec<String>>>()?;
        let tags = tags
            .iter()
            .enumerate()
            .map(|(j, t)| match t {
                serde_json::Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                serde_json::Value::Number(x) if x.is_u64() || x.is_i64() => Ok(x.to_string()),
                other => Err(at(
                    path,
                    n,
                    format!(
                        "tags column `{tags_column}`, tag {j}: expected a tag name or an integer id, found {other}"
                    ),
                )),
            })
            .collect::<Result<Vec<String>>>()?;
        out.push(TaggedSentence {
            lines: vec![n; tokens.len()],
            tokens,
            tags,
            file: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// The class id of every tag of every sentence; a tag outside `labels` is an error naming
/// the file, the line and the column.
pub fn tag_ids(
    sentences: &[TaggedSentence],
    labels: &[String],
    tags_column: &str,
) -> Result<Vec<Vec<usize>>> {
    sentences
        .iter()
        .map(|s| {
            s.tags
                .iter()
                .zip(&s.lines)
                .map(|(tag, &line)| {
                    labels.iter().position(|l| l == tag).ok_or_else(|| {
                        let column = if is_jsonl(&s.file) {
                            format!("tags column `{tags_column}`")
                        } else {
                            "the tag column (the last)".to_string()
                        };
                        at(
                            &s.file,
                            line,
                            format!(
                                "{column}: tag `{tag}` does not occur in the training data (tags: {labels:?})"
                            ),
                        )
                    })
                })
                .collect()
        })
        .collect()
}

fn is_jsonl(path: &Path) -> bool {
    matches!(
        path.extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .as_deref(),
        Some("jsonl" | "json" | "ndjson")
    )
}

/// The label of every token of an encoding whose words have the class ids `word_labels`:
/// a word's id on its first token, [`IGNORE_LABEL`] on its other tokens and on special
/// tokens (`transformers`' `tokenize_and_align_labels`).
pub fn align_labels(word_ids: &[Option<u32>], word_labels: &[usize]) -> Vec<i64> {
    let mut previous = None;
    word_ids
        .iter()
        .map(|w| {
            let label = match w {
                Some(w) if Some(*w) != previous => word_labels
                    .get(*w as usize)
                    .map_or(IGNORE_LABEL, |&l| l as i64),
                _ => IGNORE_LABEL,
            };
            previous = *w;
            label
        })
        .collect()
}

/// Tokenizes tagged sentences word by word (truncated to `max_length`, special tokens
/// added, no padding) with their tags aligned to the tokens. A sentence none of whose words
/// leaves a token (every character removed by the normalizer) is left out: it has nothing
/// to learn or score, and a batch of only such rows would have no loss.
pub fn tokenize_tagged(
    tokenizer: &AutoTokenizer,
    sentences: &[TaggedSentence],
    ids: &[Vec<usize>],
    max_length: usize,
) -> Result<Vec<Tokenized>> {
    let opts = EncodeOptions {
        truncation: TruncationStrategy::LongestFirst,
        max_length: Some(max_length),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(sentences.len());
    for (chunk, labels) in sentences.chunks(256).zip(ids.chunks(256)) {
        let words: Vec<Vec<String>> = chunk.iter().map(|s| s.tokens.clone()).collect();
        let enc = tokenizer.encode_words_batch(&words, &opts)?;
        for (e, word_labels) in enc.encodings.into_iter().zip(labels) {
            let labels = align_labels(&e.word_ids, word_labels);
            if labels.iter().all(|&l| l == IGNORE_LABEL) {
                continue;
            }
            out.push(Tokenized {
                labels,
                ids: e.ids,
                type_ids: e.type_ids,
            });
        }
    }
    Ok(out)
}

impl FineTuneTask for TokenClassifierConfig {
    fn settings(&self) -> &FineTuneConfig {
        &self.common
    }

    fn settings_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| Error::Invalid(e.to_string()))
    }

    fn head(&self) -> HeadKind {
        HeadKind::Token
    }

    fn metric_names(&self) -> &'static [&'static str] {
        TOKEN_CLASSIFIER_METRICS
    }

    fn validate(&self) -> Result<()> {
        TokenClassifierConfig::validate(self)
    }

    fn load_data(&self, tokenizer: &AutoTokenizer, max_length: usize) -> Result<TaskData> {
        let cfg = &self.common;
        let read = |p: &Path| read_tagged(p, &self.tokens_column, &self.tags_column);
        let all = read(&cfg.data)?;
        let (train, eval) = match &cfg.eval_data {
            Some(p) => (all, read(p)?),
            None => split_off(all, cfg.val_fraction, cfg.seed)?,
        };
        let labels = sorted_labels(train.iter().flat_map(|s| s.tags.iter().map(String::as_str)));
        let train_ids = tag_ids(&train, &labels, &self.tags_column)?;
        let eval_ids = tag_ids(&eval, &labels, &self.tags_column)?;
        Ok(TaskData {
            train: tokenize_tagged(tokenizer, &train, &train_ids, max_length)?,
            eval: tokenize_tagged(tokenizer, &eval, &eval_ids, max_length)?,
            labels,
        })
    }

    fn metrics(
        &self,
        labels: &[String],
        predictions: &[Vec<u32>],
        references: &[Vec<u32>],
    ) -> Result<BTreeMap<String, f64>> {
        let names = |rows: &[Vec<u32>]| -> Vec<Vec<&str>> {
            rows.iter()
                .map(|r| {
                    r.iter()
                        .map(|&i| labels.get(i as usize).map_or("O", String::as_str))
                        .collect()
                })
                .collect()
        };
        let scores = seqeval(&names(predictions), &names(references))?;
        let mut out = BTreeMap::new();
        for m in &self.common.metric {
            let v = match m.as_str() {
                "f1" => scores.overall_f1,
                "precision" => scores.overall_precision,
                "recall" => scores.overall_recall,
                "accuracy" => scores.overall_accuracy,
                _ => continue,
            };
            out.insert(m.clone(), v);
        }
        Ok(out)
    }
}

/// Fine-tunes (or resumes) a token classifier as `cfg` says, on `device`. `stop` ends the
/// run early with a checkpoint (Ctrl-C); `on_event` receives progress.
pub fn train_token_classifier(
    cfg: &TokenClassifierConfig,
    resume: bool,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&FineTuneEvent),
    device: &Device,
) -> Result<FineTuneRun> {
    fine_tune(cfg, resume, stop, on_event, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conll_sentences_docstart_and_last_column() {
        let text = "-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\n\nPeter B-PER\n";
        let s = read_conll(Path::new("x.conll"), text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].tokens, ["EU", "rejects"]);
        assert_eq!(s[0].tags, ["B-ORG", "O"]);
        assert_eq!(s[0].lines, [3, 4]);
        assert_eq!(s[1].tags, ["B-PER"]);
        let e = read_conll(Path::new("x.conll"), "EU B-ORG\nlonely\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("lonely"), "{e}");
    }

    #[test]
    fn first_sub_token_labelled() {
        let word_ids = [None, Some(0), Some(1), Some(1), Some(2), None];
        assert_eq!(
            align_labels(&word_ids, &[3, 1, 2]),
            [-100, 3, 1, -100, 2, -100]
        );
    }
}
