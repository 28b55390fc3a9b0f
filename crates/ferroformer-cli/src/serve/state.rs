//! What the handlers share: the served models (causal LMs with their schedulers, encoders
//! for embeddings), the limits, the API key and the metrics. Nothing of a request is kept
//! once it is answered, so replicas behind a load balancer need no shared state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use ferroformer::generation::{GenerationConfig, LanguageModel, TokenBytes};
use ferroformer::models::chat_template::ChatTemplate;
use ferroformer::models::tokenizer::AutoTokenizer;
use ferroformer::pipelines::{Pipeline, PipelineConfig};

use super::args::ServeArgs;
use super::error::ApiError;
use super::metrics::Metrics;
use super::scheduler::{self, Limits, SchedulerHandle};
use crate::device_arg::load_language_model;

/// A causal LM being served.
pub struct LmEntry {
    /// The model and tokenizer.
    pub lm: Arc<LanguageModel>,
    /// Its chat template, when it has one (else chat requests are refused).
    pub template: Result<ChatTemplate, String>,
    /// The server's defaults for it (its generation_config.json, then the serve flags).
    pub defaults: GenerationConfig,
    /// Its scheduler.
    pub scheduler: SchedulerHandle,
    /// Every token's bytes, for JSON output: built on the first request that asks for it,
    /// then shared by all.
    pub json_tokens: OnceLock<Arc<TokenBytes>>,
}

impl LmEntry {
    /// The longest sequence the model takes.
    pub fn context(&self) -> usize {
        self.lm.context_length()
    }

    /// The token table of JSON output (see [`LmEntry::json_tokens`]).
    pub fn json_table(&self) -> Arc<TokenBytes> {
        Arc::clone(self.json_tokens.get_or_init(|| {
            let vocab = self.lm.decoder().config().embeddings.vocab_size;
            Arc::new(TokenBytes::from_tokenizer(self.lm.tokenizer.inner(), vocab))
        }))
    }
}

/// An encoder served for embeddings (and pipelines).
pub struct EncoderEntry {
    /// The feature-extraction pipeline.
    pub pipeline: Pipeline,
    /// Its tokenizer (token counts, token-id inputs).
    pub tokenizer: AutoTokenizer,
}

/// One served model.
pub enum ModelKind {
    /// Chat, completions.
    Lm(Box<LmEntry>),
    /// Embeddings.
    Encoder(Box<EncoderEntry>),
}

/// A served model and its names.
pub struct Served {
    /// The name clients use.
    pub name: String,
    /// What `--model` said.
    pub source: String,
    /// The model.
    pub kind: ModelKind,
    /// Unix time it was loaded (`created` in /v1/models).
    pub created: u64,
}

/// Shared by every handler.
pub struct AppState {
    /// The models, in the order given.
    pub models: Vec<Served>,
    /// Required bearer key.
    pub api_key: Option<String>,
    /// The flags.
    pub args: ServeArgs,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// Pipelines loaded on first use, by (task, model source).
    pub pipelines: Mutex<HashMap<(String, String), Arc<Pipeline>>>,
}

impl AppState {
    /// The model `name` names (its alias or its `--model` string); `None` picks the first
    /// one of the wanted kind.
    pub fn model(&self, name: Option<&str>, want_lm: bool) -> Result<&Served, ApiError> {
        let found = match name {
            Some(n) => self.models.iter().find(|m| m.name == n || m.source == n),
            None => self
                .models
                .iter()
                .find(|m| matches!(m.kind, ModelKind::Lm(_)) == want_lm),
        };
        found.ok_or_else(|| {
            ApiError::unknown_model(
                name.unwrap_or(if want_lm {
                    "(a causal LM)"
                } else {
                    "(an encoder)"
                }),
                &self
                    .models
                    .iter()
                    .map(|m| m.name.clone())
                    .collect::<Vec<_>>(),
            )
        })
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.request_timeout)
    }
}

/// Loads every `--model`, starts the schedulers.
pub fn load(args: ServeArgs, metrics: Arc<Metrics>) -> anyhow::Result<AppState> {
    if !args.aliases.is_empty() && args.aliases.len() != args.models.len() {
        anyhow::bail!(
            "--alias: {} aliases for {} models; give one per --model, in the same order",
            args.aliases.len(),
            args.models.len()
        );
    }
    if args.max_concurrent_sequences == 0 {
        anyhow::bail!("--max-concurrent-sequences must be at least 1");
    }
    let api_key = match (&args.api_key, &args.api_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--api-key-file {}", f.display()))?;
            let key = text.lines().next().unwrap_or("").trim().to_string();
            if key.is_empty() {
                anyhow::bail!("--api-key-file {}: the file is empty", f.display());
            }
            Some(key)
        }
        (None, None) => None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut models = Vec::new();
    for (i, source) in args.models.iter().enumerate() {
        let name = args
            .aliases
            .get(i)
            .cloned()
            .unwrap_or_else(|| source.clone());
        if models.iter().any(|m: &Served| m.name == name) {
            anyhow::bail!("two models are named `{name}`: give them distinct --alias names");
        }
        let kind =
            load_one(source, &args, &metrics).with_context(|| format!("--model {source}"))?;
        models.push(Served {
            name,
            source: source.clone(),
            kind,
            created: now,
        });
    }
    Ok(AppState {
        models,
        api_key,
        args,
        metrics,
        pipelines: Mutex::new(HashMap::new()),
    })
}

fn load_one(source: &str, args: &ServeArgs, metrics: &Arc<Metrics>) -> anyhow::Result<ModelKind> {
    let lm_err = match load_language_model(source, &args.device) {
        Ok(lm) => return Ok(ModelKind::Lm(Box::new(lm_entry(lm, args, metrics)?))),
        Err(e) => e,
    };
    // Not a causal LM: an encoder for embeddings?
    let config = PipelineConfig {
        device: args.device.open()?,
        ..Default::default()
    };
    match ferroformer::pipelines::pipeline_with("feature-extraction", source, &config) {
        Ok(pipeline) => {
            let dir = ferroformer::models::hub::resolve(source)?;
            let tokenizer = AutoTokenizer::from_dir(&dir)?;
            Ok(ModelKind::Encoder(Box::new(EncoderEntry {
                pipeline,
                tokenizer,
            })))
        }
        Err(enc_err) => {
            anyhow::bail!("neither a causal LM ({lm_err:#}) nor an encoder ({enc_err})")
        }
    }
}

fn lm_entry(
    lm: LanguageModel,
    args: &ServeArgs,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<LmEntry> {
    let template = lm.chat_template().map_err(|e| e.to_string());
    let mut defaults = args.generation.config(lm.model.generation_config())?;
    // Stop at the end of the assistant's turn too, as `chat` does.
    if let Ok(t) = &template {
        for marker in t.end_of_turn_markers() {
            if let Some(id) = lm.tokenizer.inner().token_to_id(marker) {
                if !defaults.eos_token_id.contains(&id) {
                    defaults.eos_token_id.push(id);
                }
            }
        }
    }
    let lm = Arc::new(lm);
    let scheduler = scheduler::start(
        Arc::clone(&lm),
        Limits {
            max_running: args.max_concurrent_sequences,
            max_queue: args.max_queue,
            kv_budget: args.kv_cache_mb * 1024 * 1024,
            step_delay: std::time::Duration::from_millis(args.step_delay_ms),
        },
        Arc::clone(metrics),
    )?;
    Ok(LmEntry {
        lm,
        template,
        defaults,
        scheduler,
        json_tokens: OnceLock::new(),
    })
}
