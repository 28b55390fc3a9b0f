//! `POST /v1/chat/completions` and `POST /v1/completions`: requests checked field by field
//! (a wrong value is a 400 naming the field), prompts built (the model's chat template, or
//! the prompt as given), one scheduler job per choice, answers whole or streamed as
//! Server-Sent Events ending with `data: [DONE]`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferroformer::generation::{ExtraSampling, GenerationConfig, JsonConstraint, SequenceSampler};
use futures_util::stream::{self, Stream};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::scheduler::{Event, Finish, Job};
use super::state::{AppState, LmEntry, ModelKind};
use super::tools;

/// The body as a JSON object, or the error saying why not (413 past the size limit).
pub fn json_body(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.args.payload_limit)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(format!(
            "the body must be a JSON object, found {}",
            type_name(&other)
        ))),
    }
}

/// JSON type names as error messages say them.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(field: &str, expected: &str, found: &Value) -> ApiError {
    ApiError::invalid(
        field,
        format!(
            "`{field}` must be {expected}, found {} `{found}`",
            type_name(found)
        ),
    )
}

/// Typed getters over the request object: absent and `null` read as `None`, a value of
/// another type is a 400 naming the field.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    /// A boolean.
    pub fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        self.get(k)
            .map(|v| v.as_bool().ok_or_else(|| wrong(k, "true or false", v)))
            .transpose()
    }

    /// A number.
    pub fn f64(&self, k: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        let x = v
            .as_f64()
            .ok_or_else(|| wrong(k, &format!("a number in [{lo}, {hi}]"), v))?;
        in_range(k, x, lo, hi).map(Some)
    }

    /// A whole number.
    pub fn u64(&self, k: &str, lo: u64, hi: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        let x = v
            .as_u64()
            .ok_or_else(|| wrong(k, &format!("a whole number in [{lo}, {hi}]"), v))?;
        in_range(k, x, lo, hi).map(Some)
    }

    /// A string.
    pub fn str(&self, k: &str) -> Result<Option<&str>, ApiError> {
        self.get(k)
            .map(|v| v.as_str().ok_or_else(|| wrong(k, "a string", v)))
            .transpose()
    }

    /// Any value.
    pub fn value(&self, k: &str) -> Option<&Value> {
        self.get(k)
    }
}

/// The sampling part of a request, shared by both endpoints.
struct Sampling {
    cfg: GenerationConfig,
    extra: ExtraSampling,
    /// `max_tokens` as asked (`None`: up to the context).
    max_tokens: Option<usize>,
    stop: Vec<String>,
    n: usize,
    stream: bool,
    include_usage: bool,
    /// Log-probabilities wanted (chat: `logprobs: true`; completions: `logprobs: k`).
    logprobs: bool,
    seeded: bool,
    /// `response_format: {"type": "json_object"}`: the output is one JSON object.
    json: bool,
}

fn sampling(state: &AppState, lm: &LmEntry, f: &Fields, chat: bool) -> Result<Sampling, ApiError> {
    let mut cfg = lm.defaults.clone();
    cfg.num_beams = 1;
    cfg.num_return_sequences = 1;
    cfg.stop_strings.clear();
    let cap = state.args.max_tokens_cap as u64;
    let max_tokens = match f.u64("max_completion_tokens", 1, u64::MAX)? {
        Some(m) => Some(("max_completion_tokens", m)),
        None => f.u64("max_tokens", 1, u64::MAX)?.map(|m| ("max_tokens", m)),
    };
    if let Some((field, m)) = max_tokens {
        if m > cap {
            return Err(ApiError::invalid(
                field,
                format!("`{field}` is {m}, more than the server's cap of {cap} (--max-tokens-cap)"),
            ));
        }
    }
    if let Some(t) = f.f64("temperature", 0.0, 2.0)? {
        if t == 0.0 {
            cfg.do_sample = false;
        } else {
            cfg.do_sample = true;
            cfg.temperature = t;
        }
    }
    if let Some(p) = f.f64("top_p", 0.0, 1.0)? {
        if p == 0.0 {
            return Err(ApiError::invalid("top_p", "`top_p` must be > 0, found 0"));
        }
        cfg.top_p = p;
    }
    let seed = f.u64("seed", 0, u64::MAX).or_else(|_| {
        // Negative seeds are allowed by OpenAI: any integer.
        match f.value("seed").and_then(|v| v.as_i64()) {
            Some(s) => Ok(Some(s as u64)),
            None => Err(wrong(
                "seed",
                "an integer",
                f.value("seed").unwrap_or(&Value::Null),
            )),
        }
    })?;
    let seeded = seed.is_some();
    cfg.seed = seed.unwrap_or_else(rand::random);
    let mut extra = ExtraSampling {
        presence_penalty: f.f64("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        frequency_penalty: f.f64("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        ..Default::default()
    };
    if let Some(bias) = f.value("logit_bias") {
        let Value::Object(m) = bias else {
            return Err(wrong("logit_bias", "an object {token id: bias}", bias));
        };
        let vocab = lm.lm.decoder().config().embeddings.vocab_size;
        for (k, v) in m {
            let id: u32 = k
                .parse()
                .ok()
                .filter(|&i: &u32| (i as usize) < vocab)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("`logit_bias` keys must be token ids below {vocab}, found `{k}`"),
                    )
                })?;
            let b = v.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| {
                ApiError::invalid(
                    "logit_bias",
                    format!("`logit_bias` values must be numbers in [-100, 100], found `{v}` for token {k}"),
                )
            })?;
            extra.logit_bias.insert(id, b as f32);
        }
    }
    let logprobs = if chat {
        let on = f.bool("logprobs")?.unwrap_or(false);
        let top = f.u64("top_logprobs", 0, 20)?;
        if top.is_some() && !on {
            return Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            ));
        }
        extra.top_logprobs = top.unwrap_or(0) as usize;
        on
    } else {
        match f.u64("logprobs", 0, 5)? {
            Some(k) => {
                extra.top_logprobs = k as usize;
                true
            }
            None => false,
        }
    };
    extra.logprobs = logprobs;
    let stop = match f.value("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let v: Option<Vec<String>> =
                items.iter().map(|i| i.as_str().map(String::from)).collect();
            match v {
                Some(v) if v.len() <= 4 => v,
                _ => {
                    return Err(ApiError::invalid(
                        "stop",
                        "`stop` must be a string or a list of at most 4 strings",
                    ))
                }
            }
        }
        Some(other) => return Err(wrong("stop", "a string or a list of strings", other)),
    };
    if stop.iter().any(|s| s.is_empty()) {
        return Err(ApiError::invalid(
            "stop",
            "`stop` strings must not be empty",
        ));
    }
    let n = f.u64("n", 1, 16)?.unwrap_or(1) as usize;
    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.value("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields(o).bool("include_usage")?.unwrap_or(false),
        Some(other) => return Err(wrong("stream_options", "an object", other)),
    };
    let json = match f.value("response_format") {
        None => false,
        Some(rf) => match rf.get("type").and_then(|t| t.as_str()) {
            Some("text") => false,
            Some("json_object") => {
                if cfg.eos_token_id.is_empty() {
                    return Err(ApiError::invalid(
                        "response_format",
                        "`response_format` `json_object` needs an end-of-sequence token to end \
                         the object with, and this model has none",
                    ));
                }
                true
            }
            Some("json_schema") => {
                return Err(ApiError::invalid(
                    "response_format",
                    "`response_format` `json_schema` (output following a JSON schema) is not \
                     supported by this server; use `json_object` (any JSON object) or `text`",
                ))
            }
            _ => {
                return Err(ApiError::invalid(
                    "response_format",
                    format!(
                        "`response_format` must be {{\"type\": \"text\"}} or \
                         {{\"type\": \"json_object\"}}, found `{rf}`"
                    ),
                ))
            }
        },
    };
    cfg.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid sampling options: {e}")))?;
    Ok(Sampling {
        cfg,
        extra,
        max_tokens: max_tokens.map(|(_, m)| m as usize),
        stop,
        n,
        stream,
        include_usage,
        logprobs,
        seeded,
        json,
    })
}

/// One generated choice as it grows: the text decoded so far, held back where it might
/// still turn into a stop string or where a character is incomplete.
struct ChoiceText {
    lm: Arc<ferroformer::generation::LanguageModel>,
    ids: Vec<u32>,
    text: String,
    emitted: usize,
    stop: Vec<String>,
}

impl ChoiceText {
    /// Adds a token; returns the new final text and whether a stop string ended the choice.
    fn push(&mut self, id: u32) -> (String, bool) {
        self.ids.push(id);
        let Ok(text) = self.lm.tokenizer.decode(&self.ids, true) else {
            return (String::new(), false);
        };
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted {
            return (String::new(), false);
        }
        self.text = text;
        let from = self
            .emitted
            .saturating_sub(self.stop.iter().map(|s| s.len()).max().unwrap_or(0));
        let from = (0..=from)
            .rev()
            .find(|&i| self.text.is_char_boundary(i))
            .unwrap_or(0);
        let hit = self
            .stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|p| p + from))
            .min();
        if let Some(p) = hit {
            let p = p.max(self.emitted);
            let piece = self.text[self.emitted..p].to_string();
            self.text.truncate(p);
            self.emitted = p;
            return (piece, true);
        }
        // Hold back the longest end of the text that begins a stop string.
        let mut safe = self.text.len();
        for s in &self.stop {
            for k in (1..s.len()).rev() {
                if s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    safe = safe.min(self.text.len() - k);
                    break;
                }
            }
        }
        if safe <= self.emitted || !self.text.is_char_boundary(safe) {
            return (String::new(), false);
        }
        let piece = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (piece, false)
    }

    /// The text held back, at the end.
    fn rest(&mut self) -> String {
        let piece = self.text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = self.text.len();
        piece
    }
}

/// A token with its log-probability, for the answer.
#[derive(Debug, Clone)]
struct Logprob {
    token: String,
    logprob: f32,
    top: Vec<(String, f32)>,
}

/// What a choice's task reports to the request.
enum Update {
    Delta {
        text: String,
        logprobs: Vec<Logprob>,
        /// Tokens this update adds (1 per token; 0 for text held back until the end).
        tokens: usize,
    },
    Done(&'static str),
    Error(String),
}

/// Counts and timings of one request.
struct Clock {
    start: Instant,
}

/// Starts the job of one choice and the task that turns its tokens into text updates.
#[allow(clippy::too_many_arguments)]
fn spawn_choice(
    state: &Arc<AppState>,
    lm: &LmEntry,
    prompt: &[u32],
    s: &Sampling,
    max_new: usize,
    index: usize,
    out: mpsc::UnboundedSender<(usize, Update)>,
    clock: Arc<Clock>,
) -> Result<(), ApiError> {
    let mut cfg = s.cfg.clone();
    cfg.seed = cfg.seed.wrapping_add(index as u64);
    cfg.max_new_tokens = Some(max_new);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ended = Arc::new(AtomicBool::new(false));
    let mut sampler = SequenceSampler::new(cfg.clone(), s.extra.clone(), prompt.len());
    if s.json {
        let constraint = JsonConstraint::new(lm.json_table(), &cfg.eos_token_id)
            .map_err(|e| ApiError::invalid("response_format", e.to_string()))?;
        sampler = sampler.with_json(constraint);
    }
    lm.scheduler.submit(Job {
        prompt: prompt.to_vec(),
        sampler,
        max_new,
        eos: cfg.eos_token_id.clone(),
        events: tx,
        ended_by_request: Arc::clone(&ended),
    })?;
    let mut text = ChoiceText {
        lm: Arc::clone(&lm.lm),
        ids: Vec::new(),
        text: String::new(),
        emitted: 0,
        // A stop string must not cut a JSON object short: the object ends the output (its
        // end-of-sequence token is the only one allowed once it is complete).
        stop: if s.json { Vec::new() } else { s.stop.clone() },
    };
    let want_logprobs = s.logprobs;
    let metrics = Arc::clone(&state.metrics);
    let lm_arc = Arc::clone(&lm.lm);
    tokio::spawn(async move {
        let mut last: Option<Instant> = None;
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = out.closed() => return,
            };
            match ev {
                Some(Event::Token(t)) => {
                    let now = Instant::now();
                    match last {
                        None => metrics.ttft.observe((now - clock.start).as_secs_f64()),
                        Some(l) => metrics.inter_token.observe((now - l).as_secs_f64()),
                    }
                    last = Some(now);
                    let (piece, stopped) = text.push(t.token);
                    let logprobs = if want_logprobs {
                        let name =
                            |id: u32| lm_arc.tokenizer.decode(&[id], false).unwrap_or_default();
                        vec![Logprob {
                            token: name(t.token),
                            logprob: t.logprob,
                            top: t.top.iter().map(|a| (name(a.token), a.logprob)).collect(),
                        }]
                    } else {
                        Vec::new()
                    };
                    let _ = out.send((
                        index,
                        Update::Delta {
                            text: piece,
                            logprobs,
                            tokens: 1,
                        },
                    ));
                    if stopped {
                        ended.store(true, Relaxed);
                        metrics.e2e.observe(clock.start.elapsed().as_secs_f64());
                        let _ = out.send((index, Update::Done("stop")));
                        return;
                    }
                }
                Some(Event::Finished(f)) => {
                    let rest = text.rest();
                    if !rest.is_empty() {
                        let _ = out.send((
                            index,
                            Update::Delta {
                                text: rest,
                                logprobs: Vec::new(),
                                tokens: 0,
                            },
                        ));
                    }
                    metrics.e2e.observe(clock.start.elapsed().as_secs_f64());
                    let reason = match f {
                        Finish::Stop => "stop",
                        Finish::Length => "length",
                    };
                    let _ = out.send((index, Update::Done(reason)));
                    return;
                }
                Some(Event::Failed(m)) => {
                    let _ = out.send((index, Update::Error(m)));
                    return;
                }
                None => {
                    let _ = out.send((index, Update::Error("the model's worker stopped".into())));
                    return;
                }
            }
        }
    });
    Ok(())
}

/// A prompt ready to run: its tokens and the new tokens it may have.
fn fit(
    state: &AppState,
    lm: &LmEntry,
    prompt: &[u32],
    s: &Sampling,
    field: &str,
) -> Result<usize, ApiError> {
    let context = lm.context();
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` is empty: there is nothing to continue"),
        ));
    }
    if prompt.len() >= context {
        return Err(ApiError::invalid(
            field,
            format!(
                "the prompt is {} tokens, and the model's context is {context} tokens: leave room for at least one new token",
                prompt.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let room = context - prompt.len();
    let max_new = match s.max_tokens {
        Some(m) if m > room => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "the prompt ({} tokens) and max_tokens ({m}) exceed the model's context of {context} tokens",
                    prompt.len()
                ),
            )
            .with_code("context_length_exceeded"))
        }
        Some(m) => m,
        None => lm
            .defaults
            .max_new_tokens
            .unwrap_or(crate::generation_args::DEFAULT_MAX_NEW_TOKENS)
            .min(room)
            .min(state.args.max_tokens_cap),
    };
    let bytes = (prompt.len() + max_new) * lm.scheduler.bytes_per_position;
    if bytes > lm.scheduler.kv_budget {
        return Err(ApiError::invalid(
            field,
            format!(
                "the prompt and max_tokens need {:.1} MiB of KV cache, more than the server's budget of {} MiB (--kv-cache-mb)",
                bytes as f64 / 1048576.0,
                lm.scheduler.kv_budget / 1048576
            ),
        ));
    }
    Ok(max_new)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// A message's content as text: a string, or the text parts of a list.
fn content_text(i: usize, content: &Value) -> Result<Value, ApiError> {
    let field = format!("messages[{i}].content");
    match content {
        Value::Null | Value::String(_) => Ok(content.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(|t| t.as_str()), p.get("text").and_then(|t| t.as_str())) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(kind), _) => {
                        return Err(ApiError::invalid(
                            &field,
                            format!("`{field}[{j}]` is a `{kind}` part; this server's models take text parts only"),
                        ))
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            &field,
                            format!("`{field}[{j}]` must be {{\"type\": \"text\", \"text\": ...}}"),
                        ))
                    }
                }
            }
            Ok(Value::String(text))
        }
        other => Err(wrong(&field, "a string or a list of content parts", other)),
    }
}

/// The model entry a request names.
fn lm_of<'a>(state: &'a AppState, f: &Fields) -> Result<(&'a str, &'a LmEntry), ApiError> {
    let name = f.str("model")?;
    let served = state.model(name, true)?;
    match &served.kind {
        ModelKind::Lm(lm) => Ok((&served.name, lm)),
        ModelKind::Encoder(_) => Err(ApiError::invalid(
            "model",
            format!(
                "`{}` is an encoder: it serves /v1/embeddings, not text generation",
                served.name
            ),
        )),
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let body = json_body(&state, body)?;
    let f = Fields(&body);
    let (model, lm) = lm_of(&state, &f)?;
    let template = lm.template.as_ref().map_err(|e| {
        ApiError::invalid(
            "model",
            format!("`{model}` has no chat template, so it cannot chat (use /v1/completions): {e}"),
        )
    })?;
    let Some(Value::Array(messages)) = f.value("messages") else {
        return Err(match f.value("messages") {
            None => ApiError::invalid(
                "messages",
                "`messages` is required: a list of {\"role\", \"content\"} objects",
            ),
            Some(v) => wrong("messages", "a list of {\"role\", \"content\"} objects", v),
        });
    };
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` is empty"));
    }
    let mut msgs = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(o) = m else {
            return Err(wrong(&format!("messages[{i}]"), "an object", m));
        };
        if !o.get("role").is_some_and(|r| r.is_string()) {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!("`messages[{i}].role` must be a string (system, user, assistant, tool)"),
            ));
        }
        let mut o = o.clone();
        if let Some(c) = o.get("content") {
            let c = content_text(i, c)?;
            o.insert("content".into(), c);
        }
        msgs.push(Value::Object(o));
    }
    let s = sampling(&state, lm, &f, true)?;
    // Tools reach the template as `transformers`' apply_chat_template passes them.
    let mut kwargs = Map::new();
    let tool_choice = f.value("tool_choice").cloned();
    let tools = match f.value("tools") {
        None => None,
        Some(Value::Array(t)) if tool_choice.as_ref().and_then(|c| c.as_str()) == Some("none") => {
            let _ = t;
            None
        }
        Some(Value::Array(t)) => Some(t.clone()),
        Some(other) => return Err(wrong("tools", "a list of tool definitions", other)),
    };
    if let Some(t) = &tools {
        kwargs.insert("tools".into(), Value::Array(t.clone()));
    }
    if let Some(d) = f.value("documents") {
        kwargs.insert("documents".into(), d.clone());
    }
    let text = template
        .render_json(&Value::Array(msgs), true, &kwargs)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let prompt = lm.lm.tokenizer.encode(&text, false).map_err(|e| {
        ApiError::invalid("messages", format!("cannot tokenize the conversation: {e}"))
    })?;
    let max_new = fit(&state, lm, &prompt, &s, "messages")?;
    let ctx = Ctx {
        id: request_id("chatcmpl"),
        model: model.to_string(),
        created: now_secs(),
        prompt_tokens: prompt.len(),
        chat: true,
        echo: None,
        tools: tools.is_some(),
    };
    run(state.clone(), lm, vec![prompt], s, max_new, ctx, start).await
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let body = json_body(&state, body)?;
    let f = Fields(&body);
    let (model, lm) = lm_of(&state, &f)?;
    if f.value("suffix").is_some_and(|s| s.as_str() != Some("")) {
        return Err(ApiError::invalid(
            "suffix",
            "`suffix` (fill-in-the-middle) is not supported: send the text before the gap as `prompt`",
        ));
    }
    if f.value("best_of")
        .and_then(|v| v.as_u64())
        .is_some_and(|b| b > 1)
    {
        return Err(ApiError::invalid(
            "best_of",
            "`best_of` above 1 is not supported; use `n`",
        ));
    }
    let prompts: Vec<Vec<u32>> = match f.value("prompt") {
        None => return Err(ApiError::invalid("prompt", "`prompt` is required")),
        Some(p) => prompt_list(lm, p)?,
    };
    let echo = f.bool("echo")?.unwrap_or(false);
    let s = sampling(&state, lm, &f, false)?;
    let mut max_new = usize::MAX;
    for p in &prompts {
        max_new = max_new.min(fit(&state, lm, p, &s, "prompt")?);
    }
    let echo = if echo {
        Some(
            prompts
                .iter()
                .map(|p| lm.lm.tokenizer.decode(p, true).unwrap_or_default())
                .collect(),
        )
    } else {
        None
    };
    let ctx = Ctx {
        id: request_id("cmpl"),
        model: model.to_string(),
        created: now_secs(),
        prompt_tokens: prompts.iter().map(|p| p.len()).sum(),
        chat: false,
        echo,
        tools: false,
    };
    run(state.clone(), lm, prompts, s, max_new, ctx, start).await
}

/// `prompt`: a string, a list of strings, a list of token ids, or a list of such lists.
fn prompt_list(lm: &LmEntry, p: &Value) -> Result<Vec<Vec<u32>>, ApiError> {
    let vocab = lm.lm.decoder().config().embeddings.vocab_size;
    let encode = |t: &str| {
        lm.lm
            .tokenizer
            .encode(t, true)
            .map_err(|e| ApiError::invalid("prompt", format!("cannot tokenize the prompt: {e}")))
    };
    let ids = |items: &[Value]| -> Result<Vec<u32>, ApiError> {
        items
            .iter()
            .map(|x| {
                x.as_u64()
                    .filter(|&i| (i as usize) < vocab)
                    .map(|i| i as u32)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "prompt",
                            format!("token ids must be whole numbers below {vocab}, found `{x}`"),
                        )
                    })
            })
            .collect()
    };
    match p {
        Value::String(s) => Ok(vec![encode(s)?]),
        Value::Array(items) if items.is_empty() => {
            Err(ApiError::invalid("prompt", "`prompt` is empty"))
        }
        Value::Array(items) if items.iter().all(|i| i.is_string()) => items
            .iter()
            .map(|i| encode(i.as_str().unwrap_or("")))
            .collect(),
        Value::Array(items) if items.iter().all(|i| i.is_number()) => Ok(vec![ids(items)?]),
        Value::Array(items) if items.iter().all(|i| i.is_array()) => items
            .iter()
            .map(|i| ids(i.as_array().map(|v| v.as_slice()).unwrap_or(&[])))
            .collect(),
        other => Err(wrong(
            "prompt",
            "a string, a list of strings, a list of token ids or a list of such lists",
            other,
        )),
    }
}

/// What the answer needs to know about the request.
struct Ctx {
    id: String,
    model: String,
    created: u64,
    prompt_tokens: usize,
    chat: bool,
    /// Completions with `echo`: each prompt's text.
    echo: Option<Vec<String>>,
    /// Tools were offered: tool calls are parsed out of the answer.
    tools: bool,
}

/// One choice's answer so far.
#[derive(Default)]
struct Acc {
    text: String,
    logprobs: Vec<Logprob>,
    tokens: usize,
    finish: Option<&'static str>,
}

async fn run(
    state: Arc<AppState>,
    lm: &LmEntry,
    prompts: Vec<Vec<u32>>,
    s: Sampling,
    max_new: usize,
    ctx: Ctx,
    start: Instant,
) -> Result<Response, ApiError> {
    let _ = s.seeded;
    let clock = Arc::new(Clock { start });
    let (tx, rx) = mpsc::unbounded_channel();
    let n = s.n;
    for (p, prompt) in prompts.iter().enumerate() {
        for i in 0..n {
            spawn_choice(
                &state,
                lm,
                prompt,
                &s,
                max_new,
                p * n + i,
                tx.clone(),
                Arc::clone(&clock),
            )?;
        }
    }
    drop(tx);
    let choices = prompts.len() * n;
    let deadline = tokio::time::Instant::now() + state.timeout();
    if s.stream {
        return Ok(stream_answer(state, rx, ctx, s, choices, deadline).into_response());
    }
    let accs = collect(rx, choices, deadline, state.args.request_timeout).await?;
    Ok(Json(whole_answer(&ctx, &s, accs)).into_response())
}

async fn collect(
    mut rx: mpsc::UnboundedReceiver<(usize, Update)>,
    choices: usize,
    deadline: tokio::time::Instant,
    timeout: u64,
) -> Result<Vec<Acc>, ApiError> {
    let mut accs: Vec<Acc> = (0..choices).map(|_| Acc::default()).collect();
    loop {
        let next = tokio::time::timeout_at(deadline, rx.recv()).await;
        match next {
            Err(_) => return Err(ApiError::timeout(timeout)),
            Ok(None) => break,
            Ok(Some((i, u))) => match u {
                Update::Delta {
                    text,
                    logprobs,
                    tokens,
                } => {
                    let a = &mut accs[i];
                    a.text.push_str(&text);
                    a.tokens += tokens;
                    a.logprobs.extend(logprobs);
                }
                Update::Done(r) => accs[i].finish = Some(r),
                Update::Error(m) => {
                    return Err(ApiError::internal(format!("generation failed: {m}")))
                }
            },
        }
    }
    Ok(accs)
}

fn chat_logprobs(l: &[Logprob]) -> Value {
    let entry = |t: &str, lp: f32| json!({"token": t, "logprob": lp, "bytes": t.as_bytes()});
    json!({"content": l.iter().map(|x| {
        let mut e = entry(&x.token, x.logprob);
        e["top_logprobs"] = Value::Array(x.top.iter().map(|(t, lp)| entry(t, *lp)).collect());
        e
    }).collect::<Vec<_>>()})
}

fn completion_logprobs(l: &[Logprob], offset: usize) -> Value {
    let mut at = offset;
    let mut offsets = Vec::new();
    for x in l {
        offsets.push(at);
        at += x.token.len();
    }
    json!({
        "tokens": l.iter().map(|x| x.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": l.iter().map(|x| x.logprob).collect::<Vec<_>>(),
        "top_logprobs": l.iter().map(|x| x.top.iter().map(|(t, lp)| (t.clone(), json!(lp))).collect::<Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

fn whole_answer(ctx: &Ctx, s: &Sampling, accs: Vec<Acc>) -> Value {
    let completion_tokens: usize = accs.iter().map(|a| a.tokens).sum();
    let choices: Vec<Value> = accs
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let finish = a.finish.unwrap_or("stop");
            if ctx.chat {
                let mut message = json!({"role": "assistant", "content": a.text});
                let mut finish = finish;
                if ctx.tools {
                    if let Some((content, calls)) = tools::parse(&a.text) {
                        message["content"] = content.map(Value::String).unwrap_or(Value::Null);
                        message["tool_calls"] = Value::Array(calls);
                        finish = "tool_calls";
                    }
                }
                json!({
                    "index": i,
                    "message": message,
                    "logprobs": if s.logprobs { chat_logprobs(&a.logprobs) } else { Value::Null },
                    "finish_reason": finish,
                })
            } else {
                let prefix = ctx
                    .echo
                    .as_ref()
                    .map(|e| e[i / s.n].clone())
                    .unwrap_or_default();
                json!({
                    "index": i,
                    "text": format!("{prefix}{}", a.text),
                    "logprobs": if s.logprobs { completion_logprobs(&a.logprobs, prefix.len()) } else { Value::Null },
                    "finish_reason": finish,
                })
            }
        })
        .collect();
    json!({
        "id": ctx.id,
        "object": if ctx.chat { "chat.completion" } else { "text_completion" },
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": Value::Null,
        "choices": choices,
        "usage": {
            "prompt_tokens": ctx.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": ctx.prompt_tokens + completion_tokens,
        },
    })
}

/// The streamed answer: one chunk per update, `data: [DONE]` at the end. When the client
/// leaves, axum drops this stream, the choice tasks see their channel closed and drop their
/// jobs' receivers, and the scheduler cancels the sequences at its next step.
fn stream_answer(
    _state: Arc<AppState>,
    rx: mpsc::UnboundedReceiver<(usize, Update)>,
    ctx: Ctx,
    s: Sampling,
    choices: usize,
    deadline: tokio::time::Instant,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    struct St {
        rx: mpsc::UnboundedReceiver<(usize, Update)>,
        ctx: Ctx,
        s: Sampling,
        started: Vec<bool>,
        tokens: usize,
        /// Tool calls: the whole text is kept and sent at the end.
        held: HashMap<usize, String>,
        queue: std::collections::VecDeque<Value>,
        finished: bool,
        deadline: tokio::time::Instant,
    }
    let st = St {
        rx,
        ctx,
        s,
        started: vec![false; choices],
        tokens: 0,
        held: HashMap::new(),
        queue: Default::default(),
        finished: false,
        deadline,
    };
    let events = stream::unfold(st, |mut st| async move {
        loop {
            if let Some(v) = st.queue.pop_front() {
                let ev = match v {
                    Value::Null => SseEvent::default().data("[DONE]"),
                    v => SseEvent::default().data(v.to_string()),
                };
                return Some((Ok(ev), st));
            }
            if st.finished {
                return None;
            }
            let next = tokio::time::timeout_at(st.deadline, st.rx.recv()).await;
            let chunk = |st: &St, i: usize, body: Value| {
                let mut c = json!({
                    "id": st.ctx.id,
                    "object": if st.ctx.chat { "chat.completion.chunk" } else { "text_completion" },
                    "created": st.ctx.created,
                    "model": st.ctx.model,
                    "system_fingerprint": Value::Null,
                    "choices": [body],
                });
                c["choices"][0]["index"] = json!(i);
                c
            };
            match next {
                Err(_) | Ok(None) => {
                    if next.is_err() {
                        let e = ApiError::timeout(0);
                        st.queue.push_back(json!({"error": {"message": "the request ran past the server's --request-timeout", "type": "server_error", "param": null, "code": e.code}}));
                    }
                    if st.s.include_usage {
                        let mut u = chunk(&st, 0, Value::Null);
                        u["choices"] = json!([]);
                        u["usage"] = json!({
                            "prompt_tokens": st.ctx.prompt_tokens,
                            "completion_tokens": st.tokens,
                            "total_tokens": st.ctx.prompt_tokens + st.tokens,
                        });
                        st.queue.push_back(u);
                    }
                    st.queue.push_back(Value::Null);
                    st.finished = true;
                }
                Ok(Some((i, u))) => match u {
                    Update::Delta {
                        text,
                        logprobs,
                        tokens,
                    } => {
                        st.tokens += tokens;
                        if st.ctx.tools {
                            st.held.entry(i).or_default().push_str(&text);
                            continue;
                        }
                        let mut body = if st.ctx.chat {
                            let mut delta = json!({"content": text});
                            if !st.started[i] {
                                delta["role"] = json!("assistant");
                                st.started[i] = true;
                            }
                            json!({"delta": delta, "logprobs": if st.s.logprobs { chat_logprobs(&logprobs) } else { Value::Null }, "finish_reason": null})
                        } else {
                            let mut text = text;
                            if !st.started[i] {
                                st.started[i] = true;
                                if let Some(e) = &st.ctx.echo {
                                    text = format!("{}{text}", e[i / st.s.n]);
                                }
                            }
                            json!({"text": text, "logprobs": if st.s.logprobs { completion_logprobs(&logprobs, 0) } else { Value::Null }, "finish_reason": null})
                        };
                        body["index"] = json!(i);
                        let c = chunk(&st, i, body);
                        st.queue.push_back(c);
                    }
                    Update::Done(reason) => {
                        let mut reason = reason;
                        if st.ctx.tools {
                            let text = st.held.remove(&i).unwrap_or_default();
                            let mut delta = json!({"role": "assistant", "content": text});
                            if let Some((content, calls)) = tools::parse(&text) {
                                delta["content"] =
                                    content.map(Value::String).unwrap_or(Value::Null);
                                delta["tool_calls"] = Value::Array(
                                    calls
                                        .into_iter()
                                        .enumerate()
                                        .map(|(k, mut c)| {
                                            c["index"] = json!(k);
                                            c
                                        })
                                        .collect(),
                                );
                                reason = "tool_calls";
                            }
                            let c = chunk(
                                &st,
                                i,
                                json!({"delta": delta, "logprobs": null, "finish_reason": null}),
                            );
                            st.queue.push_back(c);
                        }
                        let body = if st.ctx.chat {
                            json!({"delta": {}, "logprobs": null, "finish_reason": reason})
                        } else {
                            json!({"text": "", "logprobs": null, "finish_reason": reason})
                        };
                        let c = chunk(&st, i, body);
                        st.queue.push_back(c);
                    }
                    Update::Error(m) => {
                        st.queue.push_back(json!({"error": {"message": format!("generation failed: {m}"), "type": "server_error", "param": null, "code": null}}));
                        st.queue.push_back(Value::Null);
                        st.finished = true;
                    }
                },
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// `x` when it lies in `[lo, hi]`, else an error naming the field and the range.
fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    k: &str,
    x: T,
    lo: T,
    hi: T,
) -> Result<T, ApiError> {
    if !(lo..=hi).contains(&x) {
        return Err(ApiError::invalid(
            k,
            format!("`{k}` must be in [{lo}, {hi}], found {x}"),
        ));
    }
    Ok(x)
}
