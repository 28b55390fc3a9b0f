//! `summarization`, `translation` (and `translation_xx_to_yy`) and `text2text-generation`:
//! an encoder-decoder model generates a text for each input text, with `transformers`
//! 4.57's semantics (the last version with these pipelines).
//!
//! The three tasks differ in the key of their answer (`summary_text`, `translation_text`,
//! `generated_text`) and in their defaults: `config.json`'s `task_specific_params` for the
//! task (T5's `prefix` such as `"summarize: "`, beams, lengths) apply over
//! `generation_config.json`, and the caller's options over both. Translation with a
//! multilingual tokenizer (mBART-50, M2M100, NLLB) needs `src_lang` and `tgt_lang`: the
//! source language shapes the input's special tokens and the target language is forced as
//! the first generated token.

use std::marker::PhantomData;
use std::path::Path;

use serde_json::{Map, Value};

use super::driver::{self, PipelineTask, Prepared};
use super::{PipelineConfig, PipelineInput, Task};
use crate::error::{Error, Result};
use crate::generation::{generate_seq2seq, right_pad, AutoModelForSeq2SeqLM, GenerationConfig};
use crate::models::tokenizer::{AutoTokenizer, EncodeOptions, TruncationStrategy};
use crate::models::LoadOptions;

/// What distinguishes the three tasks.
pub trait Seq2SeqTask {
    /// The task.
    const TASK: Task;
    /// The key of each answer (`summary_text`, ...).
    const OUTPUT_KEY: &'static str;
}

/// `summarization` → `{"summary_text": ...}`.
#[derive(Debug, Clone, Copy)]
pub struct Summarization;
/// `translation` → `{"translation_text": ...}`.
#[derive(Debug, Clone, Copy)]
pub struct Translation;
/// `text2text-generation` → `{"generated_text": ...}`.
#[derive(Debug, Clone, Copy)]
pub struct Text2Text;

impl Seq2SeqTask for Summarization {
    const TASK: Task = Task::Summarization;
    const OUTPUT_KEY: &'static str = "summary_text";
}
impl Seq2SeqTask for Translation {
    const TASK: Task = Task::Translation;
    const OUTPUT_KEY: &'static str = "translation_text";
}
impl Seq2SeqTask for Text2Text {
    const TASK: Task = Task::Text2TextGeneration;
    const OUTPUT_KEY: &'static str = "generated_text";
}

/// Options of the sequence-to-sequence tasks.
#[derive(Debug, Clone)]
pub struct Text2TextOptions {
    /// Generation options over the checkpoint's and the task's defaults, with
    /// `generation_config.json`'s keys (`max_length`, `min_length`, `max_new_tokens`,
    /// `num_beams`, `length_penalty`, `early_stopping`, `no_repeat_ngram_size`,
    /// `do_sample`, `num_return_sequences`, ...).
    pub generate_kwargs: Map<String, Value>,
    /// `transformers`' `truncation`: `Some(true)` cuts inputs to the tokenizer's
    /// `model_max_length`; `Some(false)` makes an input longer than the encoder takes an
    /// error; `None` (the default) runs inputs as they are, except that one longer than the
    /// encoder's positions keeps its first tokens (where `transformers` would fail).
    pub truncation: Option<bool>,
    /// Translation: the source language code (`en_XX`, `eng_Latn`, `en`, ...).
    pub src_lang: Option<String>,
    /// Translation: the target language code.
    pub tgt_lang: Option<String>,
}

impl Default for Text2TextOptions {
    fn default() -> Self {
        Self {
            generate_kwargs: Map::new(),
            truncation: None,
            src_lang: None,
            tgt_lang: None,
        }
    }
}

/// An encoder-decoder model with its tokenizer, running task `K`.
pub struct Seq2SeqPipeline<K> {
    model: AutoModelForSeq2SeqLM,
    tokenizer: AutoTokenizer,
    /// The task's name as given (`translation_en_to_de` selects those
    /// `task_specific_params` and languages).
    task_name: String,
    /// Text put before every input (T5's `task_specific_params[task].prefix`).
    prefix: String,
    /// The checkpoint's generation defaults with the task's parameters applied.
    defaults: GenerationConfig,
    /// Languages named by a `translation_xx_to_yy` task.
    task_langs: Option<(String, String)>,
    batch_size: usize,
    _task: PhantomData<K>,
}

/// `summarization`.
pub type SummarizationPipeline = Seq2SeqPipeline<Summarization>;
/// `translation` and `translation_xx_to_yy`.
pub type TranslationPipeline = Seq2SeqPipeline<Translation>;
/// `text2text-generation`.
pub type Text2TextGenerationPipeline = Seq2SeqPipeline<Text2Text>;

/// The tasks a checkpoint of `model_type` runs, for the error that refuses another one.
fn tasks_for(model_type: &str) -> String {
    let tasks = crate::models::inspect::tasks_of(model_type);
    if tasks.is_empty() {
        "none of the pipelines".into()
    } else {
        tasks.join(", ")
    }
}

impl<K: Seq2SeqTask> Seq2SeqPipeline<K> {
    /// Loads the tokenizer and the model from a checkpoint directory, for the task's
    /// canonical name.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        Self::for_task(dir, K::TASK.name(), config)
    }

    /// Loads the pipeline for the task named `task_name` (`translation_en_to_de` picks its
    /// `task_specific_params` and languages; plain `translation` on a model whose config
    /// has `translation_*` parameters picks the first of them, as `transformers` does).
    pub fn for_task(dir: &Path, task_name: &str, config: &PipelineConfig) -> Result<Self> {
        let raw: Value = crate::models::read_config(dir)?;
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        if !crate::models::is_seq2seq_model_type(model_type) {
            return Err(Error::file(
                dir.join("config.json"),
                format!(
                    "{} needs an encoder-decoder model ({}), and model_type `{model_type}` is \
                     not one; it runs {}",
                    K::TASK.name(),
                    crate::models::SUPPORTED_SEQ2SEQ_MODEL_TYPES.join(", "),
                    tasks_for(model_type)
                ),
            ));
        }
        let options = LoadOptions {
            dtype: config.dtype,
            device: config.device.clone(),
            ..LoadOptions::default()
        };
        let model = AutoModelForSeq2SeqLM::from_dir(dir, &options)?;
        let tokenizer = AutoTokenizer::from_dir(dir)?;
        let params = model.config().get("task_specific_params").cloned();
        let mut task_name = task_name.to_string();
        if task_name == "translation" {
            if let Some(Value::Object(p)) = &params {
                if let Some(k) = p.keys().find(|k| k.starts_with("translation")) {
                    task_name = k.clone();
                }
            }
        }
        // `transformers` 4.57 starts these pipelines from their own defaults (4 beams, 256
        // new tokens), fills in the model's non-default values where the pipeline's are at
        // the global default (so the pipeline's beams win), drops the 256 new tokens when
        // the model sets its own `max_length`, then applies the task's parameters.
        let mut defaults = model.generation_config().clone();
        defaults.num_beams = 4;
        defaults.max_new_tokens =
            (defaults.max_length == GenerationConfig::default().max_length).then_some(256);
        let mut prefix = model
            .config()
            .get("prefix")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(Value::Object(task_params)) = params.as_ref().and_then(|p| p.get(&task_name)) {
            let mut task_params = task_params.clone();
            if let Some(p) = task_params.remove("prefix") {
                prefix = p.as_str().unwrap_or_default().to_string();
            }
            defaults.update(&Value::Object(task_params))?;
        }
        if defaults.pad_token_id.is_none() {
            defaults.pad_token_id = tokenizer.pad_token_id();
        }
        let task_langs = parse_translation_task(&task_name);
        Ok(Self {
            model,
            tokenizer,
            task_name,
            prefix,
            defaults,
            task_langs,
            batch_size: config.batch_size,
            _task: PhantomData,
        })
    }

    /// Loads `model` (a directory or hub id) for `task_name`.
    pub fn from_pretrained(model: &str, task_name: &str, config: &PipelineConfig) -> Result<Self> {
        let dir = crate::models::hub::resolve(model)?;
        Self::for_task(&dir, task_name, config)
    }

    /// The task's name as resolved (`translation_en_to_de` for T5's plain `translation`).
    pub fn task_name(&self) -> &str {
        &self.task_name
    }

    /// The model.
    pub fn model(&self) -> &AutoModelForSeq2SeqLM {
        &self.model
    }

    /// The language codes the tokenizer knows (multilingual models; empty otherwise).
    pub fn lang_codes(&self) -> Vec<String> {
        self.tokenizer.lang_codes()
    }

    /// The generation options for `options`: the checkpoint's defaults, the task's, then
    /// the caller's.
    pub fn generation_config(&self, options: &Text2TextOptions) -> Result<GenerationConfig> {
        let mut cfg = self.defaults.clone();
        cfg.update(&Value::Object(options.generate_kwargs.clone()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Generates for every input; one list per input with `num_return_sequences` answers.
    pub fn run(&self, inputs: &[&str], options: &Text2TextOptions) -> Result<Vec<Vec<Value>>> {
        driver::run(self, inputs, options, self.batch_size)
    }
}

/// `translation_en_to_de` → `("en", "de")`.
fn parse_translation_task(task: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = task.split('_').collect();
    match parts.as_slice() {
        ["translation", src, "to", tgt] => Some((src.to_string(), tgt.to_string())),
        _ => None,
    }
}

/// The options of one run, resolved.
pub(crate) struct Params {
    generation: GenerationConfig,
    /// The tokenizer with the source language's special tokens (multilingual translation).
    source_tokenizer: Option<AutoTokenizer>,
    truncation: Option<bool>,
}

impl<K: Seq2SeqTask> PipelineTask for Seq2SeqPipeline<K> {
    type Input<'a> = &'a str;
    type Options = Text2TextOptions;
    type Params = Params;
    /// The input's token ids.
    type Row = Vec<u32>;
    /// Nothing besides the rows.
    type State = ();
    /// The generated sequences (decoder start token included).
    type RowOutput = Vec<Vec<u32>>;
    type Output = Vec<Value>;

    fn input(input: &PipelineInput) -> Result<&str> {
        input.as_text(K::TASK)
    }

    fn params(&self, options: &Text2TextOptions) -> Result<Params> {
        let mut generation = self.generation_config(options)?;
        let mut source_tokenizer = None;
        if K::TASK == Task::Translation && !self.tokenizer.lang_codes().is_empty() {
            let (task_src, task_tgt) = match &self.task_langs {
                Some((s, t)) => (Some(s.clone()), Some(t.clone())),
                None => (None, None),
            };
            let (Some(src), Some(tgt)) = (
                options.src_lang.clone().or(task_src),
                options.tgt_lang.clone().or(task_tgt),
            ) else {
                return Err(Error::Invalid(format!(
                    "translation with this multilingual model needs a source and a target \
                     language (--src-lang, --tgt-lang); valid codes: {}",
                    self.tokenizer.lang_codes().join(", ")
                )));
            };
            source_tokenizer = Some(self.tokenizer.with_src_lang(&src)?);
            generation.forced_bos_token_id = Some(self.tokenizer.lang_code_id(&tgt)?);
        } else if (options.src_lang.is_some() || options.tgt_lang.is_some())
            && K::TASK != Task::Translation
        {
            return Err(Error::Invalid(format!(
                "{} takes no source or target language",
                K::TASK.name()
            )));
        }
        Ok(Params {
            generation,
            source_tokenizer,
            truncation: options.truncation,
        })
    }

    /// The prefix and the text, tokenized with the model's special tokens; inputs longer
    /// than the encoder keep their first tokens (the closing special token kept).
    fn preprocess(&self, text: &str, params: &Params) -> Result<Prepared<(), Vec<u32>>> {
        let tok = params.source_tokenizer.as_ref().unwrap_or(&self.tokenizer);
        let max_src = self.model.model().config().encoder_embeddings.max_positions;
        let (truncation, limit) = match params.truncation {
            Some(true) => (
                TruncationStrategy::LongestFirst,
                tok.model_max_length().unwrap_or(max_src).min(max_src),
            ),
            None if max_src < usize::MAX => (TruncationStrategy::LongestFirst, max_src),
            _ => (TruncationStrategy::None, max_src),
        };
        let opts = EncodeOptions {
            truncation,
            max_length: (truncation != TruncationStrategy::None).then_some(limit),
            ..EncodeOptions::default()
        };
        let full = format!("{}{text}", self.prefix);
        let enc = tok.encode(&full, &opts)?;
        let ids = enc.into_iter().next().map(|e| e.ids).unwrap_or_default();
        if ids.is_empty() {
            return Err(Error::Invalid(format!(
                "{} needs an input of at least one token",
                K::TASK.name()
            )));
        }
        if ids.len() > max_src {
            return Err(Error::Invalid(format!(
                "the input has {} tokens but the encoder takes at most {max_src}: shorten it \
                 or turn truncation on",
                ids.len()
            )));
        }
        Ok(Prepared::new(vec![ids], ()))
    }

    /// All rows of the batch decode together (right-padded, masked): each gives what it
    /// gives alone.
    fn forward(&self, rows: &[Vec<u32>], params: &Params) -> Result<Vec<Vec<Vec<u32>>>> {
        let pad = self
            .tokenizer
            .pad_token_id()
            .or(params.generation.pad_token_id)
            .unwrap_or(0);
        let (ids, mask) = right_pad(rows, pad);
        let out = generate_seq2seq(self.model.model(), &ids, Some(&mask), &params.generation)?;
        let n = out.sequences.len() / rows.len().max(1);
        let mut seqs = out.sequences.into_iter();
        Ok((0..rows.len())
            .map(|_| seqs.by_ref().take(n).collect())
            .collect())
    }

    /// Each sequence decoded without special tokens, as `transformers` does.
    fn postprocess(
        &self,
        _: (),
        rows: Vec<(Vec<u32>, Vec<Vec<u32>>)>,
        _: &Params,
    ) -> Result<Vec<Value>> {
        let decoder = self.tokenizer.target_tokenizer().unwrap_or(&self.tokenizer);
        let mut answers = Vec::new();
        for (_, sequences) in rows {
            for seq in sequences {
                let text = decoder.decode(&seq, true)?;
                let mut m = Map::new();
                m.insert(K::OUTPUT_KEY.to_string(), Value::String(text));
                answers.push(Value::Object(m));
            }
        }
        Ok(answers)
    }
}
