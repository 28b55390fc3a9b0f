//! The generation options shared by `generate`, `chat` and `pipeline text-generation`.

use anyhow::Context;
use ferroformer::generation::{GenerationConfig, Truncation};

/// Generation flags (`transformers`' `generate` keyword arguments): each overrides the model's
/// `generation_config.json` default. (`--top-k` is declared by each command: `pipeline`
/// shares it with other tasks.)
#[derive(clap::Args, Debug, Clone, Default)]
#[command(
    next_help_heading = "Generation options (defaults from the model's generation_config.json)"
)]
pub struct GenerationArgs {
    /// New tokens at most.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// New tokens at least (end of sequence suppressed before).
    #[arg(long)]
    pub min_new_tokens: Option<usize>,
    /// Sample (true) or search (false: greedy, or beam search with --num-beams).
    #[arg(long, action = clap::ArgAction::Set)]
    pub do_sample: Option<bool>,
    /// Sampling temperature (> 0).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold, in (0, 1].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Drop tokens below min_p times the top probability (sampling).
    #[arg(long)]
    pub min_p: Option<f64>,
    /// Penalty (> 1 discourages) for tokens already present.
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    /// Never repeat an n-gram of this size.
    #[arg(long)]
    pub no_repeat_ngram_size: Option<usize>,
    /// Beam search with this many beams.
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Beam search length penalty.
    #[arg(long)]
    pub length_penalty: Option<f64>,
    /// Sequences per prompt.
    #[arg(long)]
    pub num_return_sequences: Option<usize>,
    /// Stop when the text ends with one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub stop_strings: Option<Vec<String>>,
    /// Sampling seed (same seed, same text).
    #[arg(long)]
    pub seed: Option<u64>,
    /// A prompt longer than the model's context is an error; `left` keeps its last tokens
    /// instead, leaving room for the new tokens (at least half the context stays prompt).
    #[arg(long, value_name = "left", value_parser = ["left", "none"])]
    pub truncate: Option<String>,
}

impl GenerationArgs {
    /// The options given, as `generation_config.json` keys (`top_k` added when given).
    pub fn kwargs(&self, top_k: Option<usize>) -> serde_json::Map<String, serde_json::Value> {
        let mut kw = serde_json::Map::new();
        let mut set = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                kw.insert(k.to_string(), v);
            }
        };
        set("max_new_tokens", self.max_new_tokens.map(Into::into));
        set("min_new_tokens", self.min_new_tokens.map(Into::into));
        set("do_sample", self.do_sample.map(Into::into));
        set("temperature", self.temperature.map(Into::into));
        set("top_k", top_k.map(Into::into));
        set("top_p", self.top_p.map(Into::into));
        set("min_p", self.min_p.map(Into::into));
        set(
            "repetition_penalty",
            self.repetition_penalty.map(Into::into),
        );
        set(
            "no_repeat_ngram_size",
            self.no_repeat_ngram_size.map(Into::into),
        );
        set("num_beams", self.num_beams.map(Into::into));
        set("length_penalty", self.length_penalty.map(Into::into));
        set(
            "num_return_sequences",
            self.num_return_sequences.map(Into::into),
        );
        set("stop_strings", self.stop_strings.clone().map(Into::into));
        set("seed", self.seed.map(Into::into));
        kw
    }

    /// `--truncate`.
    pub fn truncation(&self) -> anyhow::Result<Truncation> {
        Ok(match &self.truncate {
            Some(t) => t.parse()?,
            None => Truncation::Error,
        })
    }
}

/// `generate` and `chat`: the shared generation flags plus `--top-k` and `--greedy`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StreamingArgs {
    #[command(flatten)]
    pub options: GenerationArgs,
    /// Keep the k most likely tokens when sampling (0 keeps all).
    #[arg(
        long,
        help_heading = "Generation options (defaults from the model's generation_config.json)"
    )]
    pub top_k: Option<usize>,
    /// Greedy decoding (the same as --do-sample false).
    #[arg(
        long,
        conflicts_with = "do_sample",
        help_heading = "Generation options (defaults from the model's generation_config.json)"
    )]
    pub greedy: bool,
}

/// New tokens when neither `--max-new-tokens` nor `generation_config.json` says (the library
/// default, `transformers`' `max_length` of 20 tokens in all, is too short for an answer).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;

impl StreamingArgs {
    /// The model's defaults with these flags applied, checked.
    pub fn config(&self, defaults: &GenerationConfig) -> anyhow::Result<GenerationConfig> {
        let mut cfg = defaults.clone();
        let mut kw = self.options.kwargs(self.top_k);
        if self.greedy {
            kw.insert("do_sample".into(), false.into());
        }
        cfg.update(&serde_json::Value::Object(kw))
            .context("invalid generation option")?;
        if cfg.max_new_tokens.is_none() {
            cfg.max_new_tokens = Some(DEFAULT_MAX_NEW_TOKENS);
        }
        cfg.validate().context("invalid generation option")?;
        if !cfg.do_sample {
            let o = &self.options;
            let ignored: Vec<&str> = [
                ("--temperature", o.temperature.is_some()),
                ("--top-k", self.top_k.is_some()),
                ("--top-p", o.top_p.is_some()),
                ("--min-p", o.min_p.is_some()),
            ]
            .iter()
            .filter(|(_, given)| *given)
            .map(|(name, _)| *name)
            .collect();
            if !ignored.is_empty() {
                eprintln!(
                    "note: {} only apply when sampling (--do-sample true); decoding is {}",
                    ignored.join(", "),
                    if cfg.num_beams > 1 {
                        "beam search"
                    } else {
                        "greedy"
                    }
                );
            }
        }
        Ok(cfg)
    }
}
