//! `token-classification` (alias `ner`): a label for every token, optionally grouped into
//! words and entities with `transformers`' aggregation strategies.

use std::path::Path;

use serde::Serialize;

use super::driver::{self, require_labels, EncoderRunner, PipelineTask, Prepared};
use super::{softmax, PipelineConfig, PipelineInput, Task};
use crate::error::{Error, Result};
use crate::models::tokenizer::Encoding;
use crate::models::AutoModelForTokenClassification;

/// How token predictions are grouped (`transformers`' `aggregation_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AggregationStrategy {
    /// Every token on its own (the default).
    #[default]
    None,
    /// Adjacent tokens with the same entity type are grouped (B-/I- tags respected).
    Simple,
    /// Words take the label of their first token, then grouped as `Simple`.
    First,
    /// Words take the label of their averaged token scores, then grouped.
    Average,
    /// Words take the label of their most confident token, then grouped.
    Max,
}

impl AggregationStrategy {
    /// Parses `none`, `simple`, `first`, `average` or `max`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "none" => Ok(Self::None),
            "simple" => Ok(Self::Simple),
            "first" => Ok(Self::First),
            "average" => Ok(Self::Average),
            "max" => Ok(Self::Max),
            other => Err(Error::Invalid(format!(
                "aggregation must be none, simple, first, average or max, found `{other}`"
            ))),
        }
    }
}

/// Options of `token-classification`.
#[derive(Debug, Clone, Default)]
pub struct TokenClassificationOptions {
    /// How tokens are grouped.
    pub aggregation: AggregationStrategy,
    /// Labels left out of the output (default `["O"]`).
    pub ignore_labels: Option<Vec<String>>,
}

/// One token or one group of tokens with its label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    /// The label, without aggregation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// The entity type (B-/I- prefix removed), with aggregation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_group: Option<String>,
    /// Score of the label.
    pub score: f32,
    /// Token position, without aggregation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The token (without aggregation) or the text of the group.
    pub word: String,
    /// Start character offset into the input.
    pub start: usize,
    /// End character offset into the input.
    pub end: usize,
}

/// A token before labelling: its scores and where it sits.
struct PreEntity {
    word: String,
    scores: Vec<f32>,
    start: usize,
    end: usize,
    index: usize,
    is_subword: bool,
}

/// A labelled token or word before grouping.
struct Labelled {
    entity: String,
    score: f32,
    index: usize,
    word: String,
    start: usize,
    end: usize,
}

/// A token classifier with its tokenizer.
pub struct TokenClassificationPipeline {
    runner: EncoderRunner<AutoModelForTokenClassification>,
    /// The tokenizer marks subwords (`##`): words are known exactly. Otherwise a word starts
    /// after a space, `transformers`' fallback heuristic.
    subword_prefix: bool,
}

/// The options of one run, resolved.
pub(crate) struct Params {
    aggregation: AggregationStrategy,
    ignore_labels: Vec<String>,
}

impl TokenClassificationPipeline {
    /// Loads the tokenizer and the model from a checkpoint directory; a config without
    /// labels is an error naming it.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        require_labels(dir, "token-classification")?;
        let runner = EncoderRunner::from_dir(dir, config)?;
        let subword_prefix = runner
            .tokenizer
            .continuing_subword_prefix()
            .is_some_and(|p| !p.is_empty());
        Ok(Self {
            runner,
            subword_prefix,
        })
    }

    fn label(&self, id: usize) -> String {
        self.runner.model.config().label(id)
    }

    /// The model's labels in id order (`id2label`, `LABEL_{id}` where it names none).
    pub fn labels(&self) -> Vec<String> {
        let c = self.runner.model.config();
        (0..c.num_labels).map(|id| c.label(id)).collect()
    }

    /// Labels the tokens of every text.
    pub fn run(
        &self,
        texts: &[&str],
        options: &TokenClassificationOptions,
    ) -> Result<Vec<Vec<Entity>>> {
        driver::run(self, texts, options, self.runner.config.batch_size)
    }

    fn gather_pre_entities(
        &self,
        text: &str,
        enc: &Encoding,
        logits: &[Vec<f32>],
    ) -> Result<Vec<PreEntity>> {
        let chars: Vec<char> = text.chars().collect();
        let unk = self.runner.tokenizer.unk_token_id();
        let mut pre = Vec::new();
        for (idx, row) in logits.iter().enumerate().take(enc.ids.len()) {
            if enc.attention_mask[idx] == 0 || enc.special_tokens_mask[idx] == 1 {
                continue;
            }
            if row.is_empty() {
                return Err(Error::file(
                    self.runner.model.config().source(),
                    "token-classification: the model returned no label scores",
                ));
            }
            let id = enc.ids[idx];
            let mut word =
                self.runner.tokenizer.id_to_token(id).ok_or_else(|| {
                    Error::Invalid(format!("token id {id} is not in the vocabulary"))
                })?;
            let (start, end) = enc.offsets[idx];
            let word_ref: String = chars[start.min(chars.len())..end.min(chars.len())]
                .iter()
                .collect();
            let mut is_subword = if self.subword_prefix {
                word.chars().count() != word_ref.chars().count()
            } else {
                start > 0 && chars.get(start - 1) != Some(&' ') && chars.get(start) != Some(&' ')
            };
            if Some(id) == unk {
                word = word_ref;
                is_subword = false;
            }
            pre.push(PreEntity {
                word,
                scores: softmax(row),
                start,
                end,
                index: idx,
                is_subword,
            });
        }
        Ok(pre)
    }

    fn argmax(scores: &[f32]) -> usize {
        // First maximum, as numpy's argmax.
        let mut best = 0;
        for (i, &s) in scores.iter().enumerate() {
            if s > scores[best] {
                best = i;
            }
        }
        best
    }

    fn aggregate(&self, pre: Vec<PreEntity>, strategy: AggregationStrategy) -> Result<Vec<Entity>> {
        let labelled: Vec<Labelled> = match strategy {
            AggregationStrategy::None | AggregationStrategy::Simple => pre
                .into_iter()
                .map(|p| {
                    let i = Self::argmax(&p.scores);
                    Labelled {
                        entity: self.label(i),
                        score: p.scores[i],
                        index: p.index,
                        word: p.word,
                        start: p.start,
                        end: p.end,
                    }
                })
                .collect(),
            _ => self.aggregate_words(pre, strategy)?,
        };
        if strategy == AggregationStrategy::None {
            return Ok(labelled
                .into_iter()
                .map(|l| Entity {
                    entity: Some(l.entity),
                    entity_group: None,
                    score: l.score,
                    index: Some(l.index),
                    word: l.word,
                    start: l.start,
                    end: l.end,
                })
                .collect());
        }
        self.group_entities(labelled)
    }

    /// Gives every word one label (first / average / max of its tokens).
    fn aggregate_words(
        &self,
        pre: Vec<PreEntity>,
        strategy: AggregationStrategy,
    ) -> Result<Vec<Labelled>> {
        let mut words: Vec<Vec<PreEntity>> = Vec::new();
        for p in pre {
            match words.last_mut() {
                Some(group) if p.is_subword => group.push(p),
                _ => words.push(vec![p]),
            }
        }
        words
            .into_iter()
            .map(|group| {
                let tokens: Vec<String> = group.iter().map(|p| p.word.clone()).collect();
                let word = self.runner.tokenizer.convert_tokens_to_string(&tokens)?;
                let (label, score) = match strategy {
                    AggregationStrategy::First => {
                        let i = Self::argmax(&group[0].scores);
                        (i, group[0].scores[i])
                    }
                    AggregationStrategy::Max => {
                        // The token with the highest top score (first such token on ties).
                        let mut best = &group[0];
                        for p in &group[1..] {
                            if max_of(&p.scores) > max_of(&best.scores) {
                                best = p;
                            }
                        }
                        let i = Self::argmax(&best.scores);
                        (i, best.scores[i])
                    }
                    _ => {
                        let n = group[0].scores.len();
                        let avg: Vec<f32> = (0..n)
                            .map(|j| {
                                group.iter().map(|p| p.scores[j]).sum::<f32>() / group.len() as f32
                            })
                            .collect();
                        let i = Self::argmax(&avg);
                        (i, avg[i])
                    }
                };
                Ok(Labelled {
                    entity: self.label(label),
                    score,
                    index: group[0].index,
                    word,
                    start: group[0].start,
                    end: group[group.len() - 1].end,
                })
            })
            .collect()
    }

    /// Groups adjacent words of the same entity type; a `B-` tag starts a new group.
    fn group_entities(&self, labelled: Vec<Labelled>) -> Result<Vec<Entity>> {
        fn tag(label: &str) -> (bool, &str) {
            if let Some(t) = label.strip_prefix("B-") {
                (true, t)
            } else if let Some(t) = label.strip_prefix("I-") {
                (false, t)
            } else {
                (false, label)
            }
        }
        let mut groups: Vec<Vec<Labelled>> = Vec::new();
        for l in labelled {
            let (begins, t) = tag(&l.entity);
            match groups.last_mut() {
                Some(group)
                    if !begins && group.last().is_some_and(|last| tag(&last.entity).1 == t) =>
                {
                    group.push(l)
                }
                _ => groups.push(vec![l]),
            }
        }
        groups
            .into_iter()
            .map(|g| {
                let tokens: Vec<String> = g.iter().map(|l| l.word.clone()).collect();
                let entity = g[0]
                    .entity
                    .split_once('-')
                    .map_or(g[0].entity.as_str(), |(_, t)| t)
                    .to_string();
                Ok(Entity {
                    entity: None,
                    entity_group: Some(entity),
                    score: g.iter().map(|l| l.score).sum::<f32>() / g.len() as f32,
                    index: None,
                    word: self.runner.tokenizer.convert_tokens_to_string(&tokens)?,
                    start: g[0].start,
                    end: g[g.len() - 1].end,
                })
            })
            .collect()
    }
}

fn max_of(v: &[f32]) -> f32 {
    v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

impl PipelineTask for TokenClassificationPipeline {
    type Input<'a> = &'a str;
    type Options = TokenClassificationOptions;
    type Params = Params;
    type Row = Encoding;
    /// The text.
    type State = String;
    /// The logits of every token of the row.
    type RowOutput = Vec<Vec<f32>>;
    type Output = Vec<Entity>;

    fn input(input: &PipelineInput) -> Result<&str> {
        input.as_text(Task::TokenClassification)
    }

    fn params(&self, options: &TokenClassificationOptions) -> Result<Params> {
        Ok(Params {
            aggregation: options.aggregation,
            ignore_labels: options
                .ignore_labels
                .clone()
                .unwrap_or_else(|| vec!["O".to_string()]),
        })
    }

    fn preprocess(&self, text: &str, _: &Params) -> Result<Prepared<String, Encoding>> {
        Ok(Prepared::new(
            vec![self.runner.encode_text(text)?],
            text.to_string(),
        ))
    }

    fn forward(&self, rows: &[Encoding], _: &Params) -> Result<Vec<Vec<Vec<f32>>>> {
        let (batch, logits) = self.runner.forward(rows)?;
        batch.rows3(&logits)
    }

    fn postprocess(
        &self,
        text: String,
        rows: Vec<(Encoding, Vec<Vec<f32>>)>,
        params: &Params,
    ) -> Result<Vec<Entity>> {
        let mut out = Vec::new();
        for (enc, logits) in &rows {
            let pre = self.gather_pre_entities(&text, enc, logits)?;
            let entities = self.aggregate(pre, params.aggregation)?;
            out.extend(entities.into_iter().filter(|e| {
                let label = e.entity.as_ref().or(e.entity_group.as_ref());
                !label.is_some_and(|l| params.ignore_labels.contains(l))
            }));
        }
        Ok(out)
    }
}
