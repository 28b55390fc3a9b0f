//! The one loop every pipeline runs: preprocess → forward → postprocess, with batching.
//!
//! A task says how to turn one input into model rows ([`PipelineTask::preprocess`]), how to
//! run a batch of rows through its model ([`PipelineTask::forward`]) and how to turn an
//! input's row outputs into its result ([`PipelineTask::postprocess`]); [`run`] does the
//! rest once for every task: it resolves the options, streams the inputs' rows into batches
//! of `batch_size` rows, and hands each input's row outputs back to it, in input order, as
//! soon as all of them are computed. One input may give several rows (question answering's
//! windows of a long context, zero-shot's hypotheses) or none; its output is still one.
//!
//! Encoder tasks batch [`Encoding`]s through [`EncoderRunner`], which pads a batch on the
//! tokenizer's padding side, runs the model, and cuts each row's output back to its own
//! tokens: no row's answer depends on what it was batched with.

use std::collections::VecDeque;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{PipelineConfig, PipelineInput};
use crate::error::{Error, Result};
use crate::models::encoder_model::EncoderOutput;
use crate::models::tokenizer::{AutoTokenizer, EncodeOptions, Encoding, Side};
use crate::models::{
    AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification, AutoModelForTokenClassification, LoadOptions,
    PretrainedConfig,
};

/// What [`PipelineTask::preprocess`] makes of one input: the rows the model runs, and what
/// postprocess needs to know about the input besides the rows' outputs.
pub(crate) struct Prepared<S, R> {
    /// Model rows, in the order their outputs come back to postprocess.
    pub rows: Vec<R>,
    /// The input's own data for postprocess.
    pub state: S,
}

impl<S, R> Prepared<S, R> {
    /// An input that runs `rows`.
    pub fn new(rows: Vec<R>, state: S) -> Self {
        Self { rows, state }
    }
}

/// One task's three steps (`transformers`' `preprocess`, `_forward`, `postprocess`), plus
/// the check of its options (`_sanitize_parameters`). [`run`] drives them.
pub(crate) trait PipelineTask {
    /// One input, as the task's `run` takes it.
    type Input<'a>: Copy;
    /// The options of a run, as the caller gives them.
    type Options;
    /// The options checked and resolved once per run, shared by the three steps.
    type Params;
    /// One row of a model batch.
    type Row;
    /// What postprocess needs of an input besides its rows.
    type State;
    /// The model's output for one row.
    type RowOutput;
    /// The result for one input.
    type Output;

    /// The task's input in a [`PipelineInput`], or an error saying what the task takes.
    fn input(input: &PipelineInput) -> Result<Self::Input<'_>>;

    /// Checks and resolves the options; an invalid option fails here, before any input runs.
    fn params(&self, options: &Self::Options) -> Result<Self::Params>;

    /// Turns one input into model rows.
    fn preprocess(
        &self,
        input: Self::Input<'_>,
        params: &Self::Params,
    ) -> Result<Prepared<Self::State, Self::Row>>;

    /// Runs a batch of rows (from one or several inputs); one output per row, in order.
    fn forward(&self, rows: &[Self::Row], params: &Self::Params) -> Result<Vec<Self::RowOutput>>;

    /// Turns an input's rows and their outputs into its result.
    fn postprocess(
        &self,
        state: Self::State,
        rows: Vec<(Self::Row, Self::RowOutput)>,
        params: &Self::Params,
    ) -> Result<Self::Output>;
}

/// An input whose rows are not all computed yet.
struct Pending<S, R, O> {
    state: S,
    /// Rows still to run, then run with their outputs.
    waiting: usize,
    done: Vec<(R, O)>,
}

/// Runs `inputs` through `task` with at most `batch_size` rows per forward pass and returns
/// one output per input, in order.
pub(crate) fn run<T: PipelineTask>(
    task: &T,
    inputs: &[T::Input<'_>],
    options: &T::Options,
    batch_size: usize,
) -> Result<Vec<T::Output>> {
    let params = task.params(options)?;
    let batch_size = batch_size.max(1);
    let mut outputs = Vec::with_capacity(inputs.len());
    let mut pending: VecDeque<Pending<T::State, T::Row, T::RowOutput>> = VecDeque::new();
    let mut batch: Vec<T::Row> = Vec::with_capacity(batch_size);
    for &input in inputs {
        let prepared = task.preprocess(input, &params)?;
        pending.push_back(Pending {
            state: prepared.state,
            waiting: prepared.rows.len(),
            done: Vec::with_capacity(prepared.rows.len()),
        });
        for row in prepared.rows {
            batch.push(row);
            if batch.len() == batch_size {
                forward_batch(task, &mut batch, &mut pending, &params)?;
            }
        }
        finish_ready(task, &mut pending, &mut outputs, &params)?;
    }
    if !batch.is_empty() {
        forward_batch(task, &mut batch, &mut pending, &params)?;
    }
    finish_ready(task, &mut pending, &mut outputs, &params)?;
    if !pending.is_empty() {
        return Err(Error::Invalid(format!(
            "pipeline: {} inputs were left without output",
            pending.len()
        )));
    }
    Ok(outputs)
}

/// Runs the waiting rows and gives each output to its input (inputs wait in order, and so
/// do their rows).
fn forward_batch<T: PipelineTask>(
    task: &T,
    batch: &mut Vec<T::Row>,
    pending: &mut VecDeque<Pending<T::State, T::Row, T::RowOutput>>,
    params: &T::Params,
) -> Result<()> {
    let row_outputs = task.forward(batch, params)?;
    if row_outputs.len() != batch.len() {
        return Err(Error::Invalid(format!(
            "pipeline: the model returned {} outputs for a batch of {} rows",
            row_outputs.len(),
            batch.len()
        )));
    }
    let mut owners = pending.iter_mut().filter(|p| p.waiting > 0);
    let mut owner = owners.next();
    for pair in batch.drain(..).zip(row_outputs) {
        let Some(p) = owner.as_mut() else {
            return Err(Error::Invalid("pipeline: a row without an input".into()));
        };
        p.done.push(pair);
        p.waiting -= 1;
        if p.waiting == 0 {
            owner = owners.next();
        }
    }
    Ok(())
}

/// Postprocesses the inputs at the front whose rows are all computed.
fn finish_ready<T: PipelineTask>(
    task: &T,
    pending: &mut VecDeque<Pending<T::State, T::Row, T::RowOutput>>,
    outputs: &mut Vec<T::Output>,
    params: &T::Params,
) -> Result<()> {
    while pending.front().is_some_and(|p| p.waiting == 0) {
        if let Some(p) = pending.pop_front() {
            outputs.push(task.postprocess(p.state, p.done, params)?);
        }
    }
    Ok(())
}

/// A model with a task head that an encoder pipeline runs: every `AutoModel…` class.
pub(crate) trait TaskModel: Sized {
    /// What one forward pass returns.
    type Output;
    /// Loads the checkpoint directory.
    fn load(dir: &Path, options: &LoadOptions) -> Result<Self>;
    /// Its configuration.
    fn config(&self) -> &PretrainedConfig;
    /// One forward pass over a padded batch.
    fn run(&self, ids: &Tensor, mask: &Tensor, types: Option<&Tensor>) -> Result<Self::Output>;
}

macro_rules! task_model {
    ($ty:ty, $out:ty) => {
        impl TaskModel for $ty {
            type Output = $out;
            fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
                <$ty>::from_dir(dir, options)
            }
            fn config(&self) -> &PretrainedConfig {
                <$ty>::config(self)
            }
            fn run(&self, ids: &Tensor, mask: &Tensor, types: Option<&Tensor>) -> Result<$out> {
                self.forward(ids, Some(mask), types)
            }
        }
    };
}
task_model!(AutoModel, EncoderOutput);
task_model!(AutoModelForSequenceClassification, Tensor);
task_model!(AutoModelForTokenClassification, Tensor);
task_model!(AutoModelForQuestionAnswering, (Tensor, Tensor));
task_model!(AutoModelForMaskedLM, Tensor);

/// Rows padded into one batch: the tensors the model takes, and where each row's own
/// tokens sit in them.
pub(crate) struct PaddedBatch {
    /// `(rows, longest)` attention mask, 1 on real tokens.
    pub mask: Tensor,
    /// Per row: the first position and the number of its own tokens.
    spans: Vec<(usize, usize)>,
}

impl PaddedBatch {
    /// Each row of a `(rows, n)` tensor.
    pub fn rows2(&self, t: &Tensor) -> Result<Vec<Vec<f32>>> {
        let rows = t.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        self.check_rows(rows.len())?;
        Ok(rows)
    }

    /// Each row of a `(rows, seq)` tensor, cut to the row's own tokens (position `i` is
    /// token `i` of the row's encoding).
    pub fn token_rows(&self, t: &Tensor) -> Result<Vec<Vec<f32>>> {
        let rows = t.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        self.cut(rows)
    }

    /// Each row of a `(rows, seq, n)` tensor, cut to the row's own tokens.
    pub fn rows3(&self, t: &Tensor) -> Result<Vec<Vec<Vec<f32>>>> {
        let rows = t.to_dtype(DType::F32)?.to_vec3::<f32>()?;
        self.cut(rows)
    }

    /// Cuts each row's positions to its own tokens.
    fn cut<T>(&self, rows: Vec<Vec<T>>) -> Result<Vec<Vec<T>>> {
        self.check_rows(rows.len())?;
        rows.into_iter()
            .zip(&self.spans)
            .map(|(mut row, &(start, len))| {
                if start + len > row.len() {
                    return Err(Error::Invalid(format!(
                        "pipeline: the model returned {} positions for a row of {} tokens",
                        row.len(),
                        start + len
                    )));
                }
                row.truncate(start + len);
                row.drain(..start);
                Ok(row)
            })
            .collect()
    }

    fn check_rows(&self, n: usize) -> Result<()> {
        if n != self.spans.len() {
            return Err(Error::Invalid(format!(
                "pipeline: the model returned {n} rows for a batch of {}",
                self.spans.len()
            )));
        }
        Ok(())
    }
}

/// The part every encoder pipeline shares: the tokenizer, the model with its head, and
/// running encoded rows through them in padded batches.
pub(crate) struct EncoderRunner<M> {
    pub tokenizer: AutoTokenizer,
    pub model: M,
    pub config: PipelineConfig,
    /// The longest input: the smaller of the tokenizer's `model_max_length` and the model's
    /// position table.
    pub max_len: usize,
}

impl<M: TaskModel> EncoderRunner<M> {
    /// Loads the tokenizer and the model. Pipelines read only the real tokens of a padded
    /// batch, so the model skips computing the padding.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        let tokenizer = AutoTokenizer::from_dir(dir)?;
        let options = LoadOptions {
            dtype: config.dtype,
            device: config.device.clone(),
            skip_padding_outputs: true,
        };
        let model = M::load(dir, &options)?;
        let model_max = model.config().max_position_embeddings;
        let max_len = tokenizer
            .model_max_length()
            .map_or(model_max, |t| t.min(model_max));
        Ok(Self {
            tokenizer,
            model,
            config: config.clone(),
            max_len,
        })
    }

    /// Encodes one text with special tokens and truncation to `max_len` (`transformers`
    /// would fail on longer inputs; cutting them is what a user of the CLI expects).
    pub fn encode_text(&self, text: &str) -> Result<Encoding> {
        let opts = EncodeOptions {
            truncation: crate::models::tokenizer::TruncationStrategy::LongestFirst,
            max_length: Some(self.max_len),
            ..EncodeOptions::default()
        };
        self.tokenizer
            .encode(text, &opts)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid(format!("the tokenizer returned nothing for {text:?}")))
    }

    /// Pads `rows` to the longest on the tokenizer's padding side and runs them; token type
    /// ids are passed to the models that have them.
    pub fn forward(&self, rows: &[Encoding]) -> Result<(PaddedBatch, M::Output)> {
        let (ids, mask, types, batch) = pad(
            rows,
            self.tokenizer.pad_token_id(),
            self.tokenizer.padding_side(),
            &self.config.device,
        )?;
        let types = self.model.config().uses_token_types().then_some(types);
        let out = self.model.run(&ids, &mask, types.as_ref())?;
        Ok((batch, out))
    }
}

/// Pads `rows` to the longest (padding ids `pad_id`, type 0, mask 0), as the tokenizer's
/// `padding="longest"` does: `(input_ids, attention_mask, token_type_ids)` and the batch.
fn pad(
    rows: &[Encoding],
    pad_id: Option<u32>,
    side: Side,
    device: &Device,
) -> Result<(Tensor, Tensor, Tensor, PaddedBatch)> {
    let longest = rows.iter().map(Encoding::len).max().unwrap_or(0);
    let pad_id = match pad_id {
        Some(id) => id,
        None if rows.iter().all(|r| r.len() == longest) => 0,
        None => {
            return Err(Error::Invalid(
                "inputs of different lengths must be padded, but the tokenizer has no \
                 padding token; run them with batch size 1"
                    .into(),
            ))
        }
    };
    let n = rows.len();
    let mut ids = Vec::with_capacity(n * longest);
    let mut mask = Vec::with_capacity(n * longest);
    let mut types = Vec::with_capacity(n * longest);
    let mut spans = Vec::with_capacity(n);
    for row in rows {
        let padding = longest - row.len();
        let fill = |out: &mut Vec<u32>, real: &[u32], pad: u32| {
            let pad = std::iter::repeat_n(pad, padding);
            match side {
                Side::Left => {
                    out.extend(pad);
                    out.extend_from_slice(real);
                }
                Side::Right => {
                    out.extend_from_slice(real);
                    out.extend(pad);
                }
            }
        };
        fill(&mut ids, &row.ids, pad_id);
        fill(&mut mask, &row.attention_mask, 0);
        fill(&mut types, &row.type_ids, 0);
        let start = match side {
            Side::Left => padding,
            Side::Right => 0,
        };
        spans.push((start, row.len()));
    }
    let ids = Tensor::from_vec(ids, (n, longest), device)?;
    let mask = Tensor::from_vec(mask, (n, longest), device)?;
    let types = Tensor::from_vec(types, (n, longest), device)?;
    Ok((ids, mask.clone(), types, PaddedBatch { mask, spans }))
}

/// Checks a classifier's config before its weights load: a head needs at least one label.
pub(crate) fn require_labels(dir: &Path, task: &str) -> Result<PretrainedConfig> {
    let config = PretrainedConfig::from_dir(dir)?;
    if config.num_labels == 0 {
        return Err(Error::file(
            config.source(),
            format!(
                "`num_labels` is 0 (and `id2label` is empty): {task} needs a classifier with \
                 at least one label"
            ),
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task whose input `n` gives `n` rows (numbers), whose forward doubles each row, and
    /// whose postprocess lists the outputs: the driver must give each input its own rows
    /// back, in order, whatever the batch size.
    struct Rows;

    impl PipelineTask for Rows {
        type Input<'a> = usize;
        type Options = ();
        type Params = ();
        type Row = usize;
        type State = usize;
        type RowOutput = usize;
        type Output = (usize, Vec<usize>);

        fn input(_: &PipelineInput) -> Result<usize> {
            Ok(1)
        }
        fn params(&self, _: &()) -> Result<()> {
            Ok(())
        }
        fn preprocess(&self, n: usize, _: &()) -> Result<Prepared<usize, usize>> {
            Ok(Prepared::new((0..n).map(|i| n * 100 + i).collect(), n))
        }
        fn forward(&self, rows: &[usize], _: &()) -> Result<Vec<usize>> {
            Ok(rows.iter().map(|r| r * 2).collect())
        }
        fn postprocess(&self, n: usize, rows: Vec<(usize, usize)>, _: &()) -> Result<Self::Output> {
            assert!(rows.iter().all(|&(r, o)| o == r * 2));
            Ok((n, rows.into_iter().map(|(r, _)| r).collect()))
        }
    }

    #[test]
    fn every_input_gets_its_rows_back_in_order() {
        let inputs = [3, 0, 1, 5, 0, 2];
        let expected: Vec<(usize, Vec<usize>)> = inputs
            .iter()
            .map(|&n| (n, (0..n).map(|i| n * 100 + i).collect()))
            .collect();
        for batch_size in [0, 1, 2, 3, 4, 7, 100] {
            let out = run(&Rows, &inputs, &(), batch_size).unwrap();
            assert_eq!(out, expected, "batch size {batch_size}");
        }
        assert!(run(&Rows, &[], &(), 4).unwrap().is_empty());
    }

    #[test]
    fn padding_follows_the_side_and_rows_come_back_cut() {
        let row = |ids: &[u32]| Encoding {
            ids: ids.to_vec(),
            type_ids: vec![0; ids.len()],
            attention_mask: vec![1; ids.len()],
            ..Encoding::default()
        };
        let rows = [row(&[5, 6, 7]), row(&[8])];
        for side in [Side::Left, Side::Right] {
            let (ids, mask, _, batch) = pad(&rows, Some(0), side, &Device::Cpu).unwrap();
            let ids = ids.to_vec2::<u32>().unwrap();
            let mask = mask.to_vec2::<u32>().unwrap();
            let expected_ids = match side {
                Side::Left => vec![vec![5, 6, 7], vec![0, 0, 8]],
                Side::Right => vec![vec![5, 6, 7], vec![8, 0, 0]],
            };
            assert_eq!(ids, expected_ids);
            assert_eq!(
                mask,
                expected_ids
                    .iter()
                    .map(|r| r.iter().map(|&i| u32::from(i != 0)).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            );
            // The "model output" is the ids themselves: each row gets its own tokens back.
            let flat: Vec<f32> = expected_ids.iter().flatten().map(|&i| i as f32).collect();
            let out = Tensor::from_vec(flat, (2, 3, 1), &Device::Cpu).unwrap();
            let cut = batch.rows3(&out).unwrap();
            assert_eq!(
                cut,
                vec![vec![vec![5.0], vec![6.0], vec![7.0]], vec![vec![8.0]]]
            );
        }
        let err = pad(&rows, None, Side::Right, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("padding token"), "{err}");
    }
}
