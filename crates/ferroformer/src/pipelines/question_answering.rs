//! `question-answering`: the span of the context that answers a question. Long contexts are
//! cut into overlapping windows (`doc_stride`) and the answers of all windows compete.

use std::path::Path;

use serde::Serialize;

use super::driver::{self, EncoderRunner, PipelineTask, Prepared};
use super::{softmax, PipelineConfig, PipelineInput};
use crate::error::{Error, Result};
use crate::models::tokenizer::{EncodeOptions, Encoding, TruncationStrategy};
use crate::models::AutoModelForQuestionAnswering;

/// Options of `question-answering`, with `transformers`' defaults.
#[derive(Debug, Clone)]
pub struct QuestionAnsweringOptions {
    /// Answers per question (default 1).
    pub top_k: usize,
    /// Overlap between windows of a long context (default `min(max_seq_len / 2, 128)`).
    pub doc_stride: Option<usize>,
    /// Longest answer in tokens (default 15).
    pub max_answer_len: usize,
    /// Tokens per window, question included (default `min(model_max_length, 384)`).
    pub max_seq_len: Option<usize>,
    /// Also consider "no answer" (an empty answer scored by the `[CLS]` span).
    pub handle_impossible_answer: bool,
    /// Widen answers to whole words (default true).
    pub align_to_words: bool,
}

impl Default for QuestionAnsweringOptions {
    fn default() -> Self {
        Self {
            top_k: 1,
            doc_stride: None,
            max_answer_len: 15,
            max_seq_len: None,
            handle_impossible_answer: false,
            align_to_words: true,
        }
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// Probability of the span (summed over windows that give the same text).
    pub score: f32,
    /// Start character offset into the context.
    pub start: usize,
    /// End character offset into the context.
    pub end: usize,
    /// The answer text, `context[start..end]` in characters.
    pub answer: String,
}

/// The result for one question: one answer, or a list when several are asked for and found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum QuestionAnsweringOutput {
    /// One answer.
    Single(Answer),
    /// Several answers, best first.
    Ranked(Vec<Answer>),
}

/// An extractive QA model with its tokenizer.
pub struct QuestionAnsweringPipeline {
    runner: EncoderRunner<AutoModelForQuestionAnswering>,
}

/// The options of one run, resolved.
pub(crate) struct Params {
    options: QuestionAnsweringOptions,
    /// The windows' tokenization: `max_seq_len` and `doc_stride` settled.
    encode: EncodeOptions,
}

impl QuestionAnsweringPipeline {
    /// Loads the tokenizer and the model from a checkpoint directory.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        Ok(Self {
            runner: EncoderRunner::from_dir(dir, config)?,
        })
    }

    /// Answers every `(question, context)` pair.
    pub fn run(
        &self,
        pairs: &[(&str, &str)],
        options: &QuestionAnsweringOptions,
    ) -> Result<Vec<QuestionAnsweringOutput>> {
        driver::run(self, pairs, options, self.runner.config.batch_size)
    }

    /// Scores the spans of one window and merges them into `answers` (same text, case
    /// insensitive, adds up), as `transformers` does.
    #[allow(clippy::too_many_arguments)]
    fn window_answers(
        &self,
        enc: &Encoding,
        start_logits: &[f32],
        end_logits: &[f32],
        context: &str,
        options: &QuestionAnsweringOptions,
        answers: &mut Vec<Answer>,
        min_null: &mut f32,
    ) {
        // Logits cover the window's own tokens.
        let n = enc.ids.len().min(start_logits.len()).min(end_logits.len());
        if n == 0 {
            return;
        }
        let cls = self.runner.tokenizer.cls_token_id();
        // Context tokens can be answers, and so can [CLS] (the "no answer" span).
        let desired: Vec<bool> = (0..n)
            .map(|i| {
                enc.attention_mask[i] == 1
                    && (enc.sequence_ids[i] == Some(1) || Some(enc.ids[i]) == cls)
            })
            .collect();
        let probs = |logits: &[f32]| {
            let masked: Vec<f32> = (0..n)
                .map(|i| if desired[i] { logits[i] } else { -10000.0 })
                .collect();
            softmax(&masked)
        };
        let mut start = probs(start_logits);
        let mut end = probs(end_logits);
        if options.handle_impossible_answer {
            *min_null = min_null.min(start[0] * end[0]);
        }
        start[0] = 0.0;
        end[0] = 0.0;
        // Candidate spans: start <= end < start + max_answer_len, scored start * end; the
        // best `2 k + 10` (some may collapse when widened to words).
        let pre_top_k = if options.align_to_words {
            options.top_k.saturating_mul(2).saturating_add(10)
        } else {
            options.top_k
        };
        let mut spans: Vec<(f32, usize, usize)> = Vec::new();
        for (s, &ps) in start.iter().enumerate() {
            let last = n.min(s.saturating_add(options.max_answer_len));
            for (e, &pe) in end.iter().enumerate().take(last).skip(s) {
                spans.push((ps * pe, s, e));
            }
        }
        spans.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        spans.truncate(pre_top_k);
        let chars: Vec<char> = context.chars().collect();
        for (score, s, e) in spans {
            if !(desired[s] && desired[e]) {
                continue;
            }
            let (start_index, end_index) = self.char_span(enc, s, e, options.align_to_words);
            let from = start_index.min(chars.len());
            let text: String = chars[from..end_index.clamp(from, chars.len())]
                .iter()
                .collect();
            match answers
                .iter_mut()
                .find(|a| a.answer.to_lowercase() == text.to_lowercase())
            {
                Some(a) => a.score += score,
                None => answers.push(Answer {
                    score,
                    start: start_index,
                    end: end_index,
                    answer: text,
                }),
            }
        }
    }

    /// Character span of tokens `s..=e` in the context, widened to whole words.
    fn char_span(
        &self,
        enc: &Encoding,
        s: usize,
        e: usize,
        align_to_words: bool,
    ) -> (usize, usize) {
        if align_to_words {
            let word_chars = |token: usize| -> Option<(usize, usize)> {
                let word = enc.word_ids[token]?;
                let mut span: Option<(usize, usize)> = None;
                for i in 0..enc.ids.len() {
                    if enc.sequence_ids[i] == Some(1) && enc.word_ids[i] == Some(word) {
                        let (a, b) = enc.offsets[i];
                        span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
                    }
                }
                span
            };
            if let (Some((a, _)), Some((_, b))) = (word_chars(s), word_chars(e)) {
                return (a, b);
            }
        }
        (enc.offsets[s].0, enc.offsets[e].1)
    }
}

/// The start and end logits of one window, over its own tokens.
type SpanLogits = (Vec<f32>, Vec<f32>);

impl PipelineTask for QuestionAnsweringPipeline {
    type Input<'a> = (&'a str, &'a str);
    type Options = QuestionAnsweringOptions;
    type Params = Params;
    /// One window of the context, with the whole question.
    type Row = Encoding;
    /// The context.
    type State = String;
    type RowOutput = SpanLogits;
    type Output = QuestionAnsweringOutput;

    fn input(input: &PipelineInput) -> Result<(&str, &str)> {
        match input {
            PipelineInput::Question { question, context } => Ok((question, context)),
            PipelineInput::Text { .. } => Err(Error::Invalid(
                "question-answering needs a question and a context for every input".into(),
            )),
        }
    }

    fn params(&self, options: &QuestionAnsweringOptions) -> Result<Params> {
        if options.top_k == 0 {
            return Err(Error::Invalid(
                "question-answering: top_k must be at least 1".into(),
            ));
        }
        let model_max = self.runner.model.config().max_position_embeddings;
        let max_seq_len = options.max_seq_len.unwrap_or_else(|| {
            self.runner
                .tokenizer
                .model_max_length()
                .map_or(384, |m| m.min(384))
                .min(model_max)
        });
        if max_seq_len > model_max {
            return Err(Error::Invalid(format!(
                "question-answering: max_seq_len {max_seq_len} is longer than the model's \
                 {model_max} positions"
            )));
        }
        let doc_stride = options
            .doc_stride
            .unwrap_or_else(|| (max_seq_len / 2).min(128));
        if doc_stride > max_seq_len {
            return Err(Error::Invalid(format!(
                "question-answering: doc_stride ({doc_stride}) is larger than max_seq_len \
                 ({max_seq_len})"
            )));
        }
        Ok(Params {
            options: options.clone(),
            encode: EncodeOptions {
                truncation: TruncationStrategy::OnlySecond,
                max_length: Some(max_seq_len),
                stride: doc_stride,
                return_overflowing_tokens: true,
                ..EncodeOptions::default()
            },
        })
    }

    /// One row per window of the context.
    fn preprocess(
        &self,
        (question, context): (&str, &str),
        params: &Params,
    ) -> Result<Prepared<String, Encoding>> {
        if question.trim().is_empty() {
            let shown: String = context.chars().take(40).collect();
            return Err(Error::Invalid(format!(
                "question-answering: an input has an empty question (context {shown:?}...)"
            )));
        }
        if context.trim().is_empty() {
            return Err(Error::Invalid(format!(
                "question-answering: the question {question:?} has no context"
            )));
        }
        let windows = self
            .runner
            .tokenizer
            .encode_pair(question, context, &params.encode)?;
        Ok(Prepared::new(windows, context.to_string()))
    }

    fn forward(&self, rows: &[Encoding], _: &Params) -> Result<Vec<SpanLogits>> {
        let (batch, (start, end)) = self.runner.forward(rows)?;
        Ok(batch
            .token_rows(&start)?
            .into_iter()
            .zip(batch.token_rows(&end)?)
            .collect())
    }

    /// The answers of every window compete.
    fn postprocess(
        &self,
        context: String,
        windows: Vec<(Encoding, SpanLogits)>,
        params: &Params,
    ) -> Result<QuestionAnsweringOutput> {
        let options = &params.options;
        let mut answers: Vec<Answer> = Vec::new();
        let mut min_null = 1_000_000f32;
        for (enc, (start, end)) in &windows {
            self.window_answers(
                enc,
                start,
                end,
                &context,
                options,
                &mut answers,
                &mut min_null,
            );
        }
        if options.handle_impossible_answer {
            answers.push(Answer {
                score: min_null,
                start: 0,
                end: 0,
                answer: String::new(),
            });
        }
        // Stable sort: equal scores keep the order they were found in.
        answers.sort_by(|a, b| b.score.total_cmp(&a.score));
        answers.truncate(options.top_k);
        Ok(if answers.len() == 1 {
            QuestionAnsweringOutput::Single(answers.remove(0))
        } else {
            QuestionAnsweringOutput::Ranked(answers)
        })
    }
}
