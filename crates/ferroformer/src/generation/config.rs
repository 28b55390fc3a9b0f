//! [`GenerationConfig`]: the options of `transformers`' `GenerationConfig`, with its
//! defaults, its `generation_config.json` format and its validity checks.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// When beam search stops (`early_stopping` in `transformers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `false`: stop when the best running beam, scored at the current length, cannot beat
    /// the worst finished hypothesis (`transformers`' default heuristic).
    #[default]
    Heuristic,
    /// `true`: stop as soon as `num_beams` hypotheses are finished.
    Done,
    /// `"never"`: stop only when no better hypothesis can exist (canonical beam search).
    Never,
}

/// How to generate: `transformers`' `GenerationConfig` (the decoding options this crate
/// implements), with the same defaults.
///
/// Logits processors run in `transformers`' order: repetition penalty, no-repeat n-grams,
/// minimum length / minimum new tokens (end-of-sequence suppressed), then, when sampling,
/// temperature, top-k, top-p and min-p.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Total length (prompt + new tokens) at most; used when `max_new_tokens` is `None`.
    /// Default 20.
    pub max_length: usize,
    /// New tokens at most (takes precedence over `max_length`).
    pub max_new_tokens: Option<usize>,
    /// Total length below which end-of-sequence is suppressed. Default 0.
    pub min_length: usize,
    /// New tokens below which end-of-sequence is suppressed.
    pub min_new_tokens: Option<usize>,
    /// Sample (`true`) or pick the most likely token / beams (`false`, the default).
    pub do_sample: bool,
    /// Softmax temperature when sampling. Default 1.
    pub temperature: f64,
    /// Keep the `k` most likely tokens when sampling (0 disables). Default 50.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` when sampling
    /// (1 disables). Default 1.
    pub top_p: f64,
    /// Drop tokens less likely than `min_p` times the most likely one, when sampling.
    pub min_p: Option<f64>,
    /// Divide positive (multiply negative) scores of tokens already in the sequence by this
    /// (1 disables). Default 1.
    pub repetition_penalty: f64,
    /// Never repeat an n-gram of this size (0 disables).
    pub no_repeat_ngram_size: usize,
    /// Beams (1: no beam search). Default 1.
    pub num_beams: usize,
    /// Beam hypotheses are scored `sum_logprobs / generated_len ** length_penalty`. Default 1.
    pub length_penalty: f64,
    /// When beam search stops.
    pub early_stopping: EarlyStopping,
    /// Sequences returned per prompt (at most `num_beams` with beam search). Default 1.
    pub num_return_sequences: usize,
    /// Tokens that end a sequence.
    pub eos_token_id: Vec<u32>,
    /// Token that fills finished rows (defaults to the first end-of-sequence token).
    pub pad_token_id: Option<u32>,
    /// Beginning-of-sequence token (informational; prompts are taken as given).
    pub bos_token_id: Option<u32>,
    /// Stop a sequence once its text ends with one of these (needs a tokenizer).
    pub stop_strings: Vec<String>,
    /// Encoder-decoder models: the token the decoder starts from.
    pub decoder_start_token_id: Option<u32>,
    /// The token forced as the first generated one (mBART-50, M2M100 and NLLB force the
    /// target language this way).
    pub forced_bos_token_id: Option<u32>,
    /// The token(s) forced when the maximum length is reached.
    pub forced_eos_token_id: Vec<u32>,
    /// Token sequences never generated (a one-token sequence is banned everywhere, a longer
    /// one whenever its prefix was just generated).
    pub bad_words_ids: Vec<Vec<u32>>,
    /// Seed of the sampler: the same seed gives the same tokens.
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_length: 20,
            max_new_tokens: None,
            min_length: 0,
            min_new_tokens: None,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            min_p: None,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            num_return_sequences: 1,
            eos_token_id: Vec::new(),
            pad_token_id: None,
            bos_token_id: None,
            stop_strings: Vec::new(),
            decoder_start_token_id: None,
            forced_bos_token_id: None,
            forced_eos_token_id: Vec::new(),
            bad_words_ids: Vec::new(),
            seed: 0,
        }
    }
}

fn bad(key: &str, what: &str, v: &Value) -> Error {
    Error::config(key, format!("must be {what}, found {v}"))
}

fn as_usize(key: &str, v: &Value) -> Result<usize> {
    v.as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| bad(key, "a non-negative integer", v))
}

fn as_f64(key: &str, v: &Value) -> Result<f64> {
    v.as_f64().ok_or_else(|| bad(key, "a number", v))
}

fn as_bool(key: &str, v: &Value) -> Result<bool> {
    v.as_bool().ok_or_else(|| bad(key, "true or false", v))
}

fn as_token(key: &str, v: &Value) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad(key, "a token id", v))
}

/// One id or a list of ids (`eos_token_id` may be either).
fn as_tokens(key: &str, v: &Value) -> Result<Vec<u32>> {
    match v {
        Value::Array(items) => items.iter().map(|i| as_token(key, i)).collect(),
        other => Ok(vec![as_token(key, other)?]),
    }
}

impl GenerationConfig {
    /// Greedy decoding of `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens: Some(max_new_tokens),
            ..Self::default()
        }
    }

    /// The defaults for a GGUF model: greedy, stopping at its end-of-sequence and
    /// end-of-turn tokens, with its BOS.
    pub fn from_gguf_tokenizer(tokenizer: &crate::models::GgufTokenizer) -> Self {
        Self {
            eos_token_id: tokenizer.stop_token_ids(),
            bos_token_id: tokenizer.bos_token_id(),
            ..Self::default()
        }
    }

    /// Reads a model directory's `generation_config.json`; without one, the defaults plus
    /// the special tokens of `config.json` (as `transformers` derives it from the model
    /// config).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let gen = dir.join("generation_config.json");
        let path = if gen.is_file() {
            gen
        } else {
            dir.join("config.json")
        };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, e))?;
        Self::from_json(&value).map_err(|e| Error::file(&path, e))
    }

    /// Interprets a parsed `generation_config.json`. Unknown keys are ignored (the file holds
    /// options of decoding methods this crate does not implement); `null` means the default.
    pub fn from_json(value: &Value) -> Result<Self> {
        let mut c = Self::default();
        c.update(value)?;
        Ok(c)
    }

    /// Overrides the options named in `value` (a JSON object with `generation_config.json`
    /// keys), keeping the others: `transformers`' `GenerationConfig.update(**kwargs)`, as
    /// `generate(..., max_new_tokens=...)` applies its keyword arguments over the model's
    /// defaults.
    pub fn update(&mut self, value: &Value) -> Result<()> {
        let obj = value.as_object().ok_or_else(|| {
            Error::Invalid(format!(
                "a generation config must be a JSON object, found {value}"
            ))
        })?;
        let c = self;
        for (key, v) in obj {
            if v.is_null() {
                continue;
            }
            let k = key.as_str();
            match k {
                "max_length" => c.max_length = as_usize(k, v)?,
                "max_new_tokens" => c.max_new_tokens = Some(as_usize(k, v)?),
                "min_length" => c.min_length = as_usize(k, v)?,
                "min_new_tokens" => c.min_new_tokens = Some(as_usize(k, v)?),
                "do_sample" => c.do_sample = as_bool(k, v)?,
                "temperature" => c.temperature = as_f64(k, v)?,
                "top_k" => c.top_k = as_usize(k, v)?,
                "top_p" => c.top_p = as_f64(k, v)?,
                "min_p" => c.min_p = Some(as_f64(k, v)?),
                "repetition_penalty" => c.repetition_penalty = as_f64(k, v)?,
                "no_repeat_ngram_size" => c.no_repeat_ngram_size = as_usize(k, v)?,
                "num_beams" => c.num_beams = as_usize(k, v)?,
                "length_penalty" => c.length_penalty = as_f64(k, v)?,
                "early_stopping" => {
                    c.early_stopping = match v {
                        Value::Bool(true) => EarlyStopping::Done,
                        Value::Bool(false) => EarlyStopping::Heuristic,
                        Value::String(s) if s == "never" => EarlyStopping::Never,
                        other => return Err(bad(k, "true, false or \"never\"", other)),
                    }
                }
                "num_return_sequences" => c.num_return_sequences = as_usize(k, v)?,
                "eos_token_id" => c.eos_token_id = as_tokens(k, v)?,
                "pad_token_id" => c.pad_token_id = Some(as_token(k, v)?),
                "bos_token_id" => c.bos_token_id = Some(as_token(k, v)?),
                "decoder_start_token_id" => c.decoder_start_token_id = Some(as_token(k, v)?),
                "forced_bos_token_id" => c.forced_bos_token_id = Some(as_token(k, v)?),
                "forced_eos_token_id" => c.forced_eos_token_id = as_tokens(k, v)?,
                "bad_words_ids" => {
                    c.bad_words_ids = match v {
                        Value::Array(items) => items
                            .iter()
                            .map(|seq| match seq {
                                Value::Array(ids) if !ids.is_empty() => {
                                    ids.iter().map(|i| as_token(k, i)).collect()
                                }
                                other => {
                                    Err(bad(k, "a list of non-empty lists of token ids", other))
                                }
                            })
                            .collect::<Result<_>>()?,
                        other => return Err(bad(k, "a list of lists of token ids", other)),
                    }
                }
                "stop_strings" => {
                    c.stop_strings = match v {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(items) => items
                            .iter()
                            .map(|i| {
                                i.as_str()
                                    .map(str::to_string)
                                    .ok_or_else(|| bad(k, "a string or a list of strings", i))
                            })
                            .collect::<Result<_>>()?,
                        other => return Err(bad(k, "a string or a list of strings", other)),
                    }
                }
                "seed" => c.seed = v.as_u64().ok_or_else(|| bad(k, "an integer", v))?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Total length the output may reach for a prompt of `prompt_len` tokens.
    pub fn max_total_length(&self, prompt_len: usize) -> usize {
        match self.max_new_tokens {
            Some(n) => prompt_len + n,
            None => self.max_length,
        }
    }

    /// The token that fills finished rows: `pad_token_id`, else the first end-of-sequence
    /// token (what `transformers` falls back to).
    pub fn effective_pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
            .or_else(|| self.eos_token_id.first().copied())
    }

    /// Rejects the option values `transformers` rejects (in `GenerationConfig.validate` and
    /// in the logits processors' constructors); each error names the option.
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == Some(0) {
            return Err(Error::config("max_new_tokens", "must be greater than 0"));
        }
        if self.num_beams == 0 {
            return Err(Error::config("num_beams", "must be at least 1"));
        }
        if self.num_return_sequences == 0 {
            return Err(Error::config("num_return_sequences", "must be at least 1"));
        }
        if !self.do_sample {
            if self.num_beams == 1 && self.num_return_sequences != 1 {
                return Err(Error::config(
                    "num_return_sequences",
                    format!(
                        "greedy decoding without beam search returns one sequence per prompt, \
                         found {} (set do_sample or num_beams)",
                        self.num_return_sequences
                    ),
                ));
            }
            if self.num_return_sequences > self.num_beams {
                return Err(Error::config(
                    "num_return_sequences",
                    format!(
                        "must be at most num_beams ({}), found {}",
                        self.num_beams, self.num_return_sequences
                    ),
                ));
            }
        }
        if self.do_sample && self.num_beams > 1 {
            return Err(Error::config(
                "num_beams",
                "beam sampling (do_sample with num_beams > 1) is not supported",
            ));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::config(
                "temperature",
                format!("must be a non-negative number, found {}", self.temperature),
            ));
        }
        if self.do_sample && self.temperature == 0.0 {
            return Err(Error::config(
                "temperature",
                "must be strictly positive when sampling (for greedy decoding set do_sample \
                 to false)",
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::config(
                "top_p",
                format!("must be in (0, 1], found {}", self.top_p),
            ));
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::config(
                    "min_p",
                    format!("must be in [0, 1], found {p}"),
                ));
            }
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::config(
                "repetition_penalty",
                format!(
                    "must be a strictly positive number, found {}",
                    self.repetition_penalty
                ),
            ));
        }
        if !self.length_penalty.is_finite() {
            return Err(Error::config(
                "length_penalty",
                format!("must be a finite number, found {}", self.length_penalty),
            ));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return Err(Error::config(
                "stop_strings",
                "a stop string must not be empty",
            ));
        }
        Ok(())
    }
}
