//! The router, the middleware (request metrics, CORS, API key) and the endpoints besides
//! generation: models, tokenize / detokenize, health, metrics, embeddings, pipelines.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use ferroformer::generation::{ExtraSampling, SequenceSampler};
use ferroformer::models::tokenizer::EncodeOptions;
use ferroformer::pipelines::{
    generated_text, prepare_prompt, text_generation_config, AggregationStrategy,
    ClassificationFunction, Pipeline, PipelineConfig, PipelineInput, Pooling, Task, TaskOptions,
    TextGenerationOptions, TopK,
};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::openai::{self, json_body, type_name, Fields};
use super::scheduler::{Event, Job};
use super::state::{AppState, LmEntry, ModelKind};

/// Every route, with the middleware.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/pipeline/{task}", post(pipeline))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.args.payload_limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), cors))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count))
        .with_state(state)
}

/// The endpoint label of a path (unknown paths share one, so the label set stays small).
fn endpoint(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/completions" => "/v1/completions",
        "/v1/embeddings" => "/v1/embeddings",
        "/v1/models" => "/v1/models",
        "/tokenize" => "/tokenize",
        "/detokenize" => "/detokenize",
        "/health" => "/health",
        "/metrics" => "/metrics",
        p if p.starts_with("/v1/models/") => "/v1/models/{model}",
        p if p.starts_with("/pipeline/") => "/pipeline/{task}",
        _ => "other",
    }
}

async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let e = endpoint(req.uri().path());
    let r = next.run(req).await;
    state.metrics.request(e, r.status().as_u16());
    r
}

async fn cors(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(origin) = state.args.cors_origin.clone() else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS;
    let mut r = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    r
}

/// Compares in time independent of where the strings differ.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    let mut diff = (given.len() != key.len()) as u8;
    for (i, k) in key.iter().enumerate() {
        diff |= k ^ given.get(i).copied().unwrap_or(!k);
    }
    diff == 0
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = &state.api_key else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_key(given.trim().as_bytes(), key.as_bytes()) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {} {}; see /v1/chat/completions, /v1/completions, /v1/embeddings, \
         /v1/models, /tokenize, /detokenize, /health, /metrics, /pipeline/{{task}}",
        req.method(),
        req.uri().path()
    ))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

fn model_card(state: &AppState, i: usize) -> Value {
    let m = &state.models[i];
    let mut card = json!({
        "id": m.name,
        "object": "model",
        "created": m.created,
        "owned_by": "ferroformer",
        "root": m.source,
    });
    match &m.kind {
        ModelKind::Lm(lm) => {
            card["max_model_len"] = json!(lm.context());
            card["capabilities"] = json!([
                "completions",
                if lm.template.is_ok() {
                    "chat"
                } else {
                    "no-chat-template"
                }
            ]);
        }
        ModelKind::Encoder(_) => card["capabilities"] = json!(["embeddings"]),
    }
    card
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = (0..state.models.len())
        .map(|i| model_card(&state, i))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn model(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let served = state.model(Some(&name), true)?;
    let i = state
        .models
        .iter()
        .position(|m| std::ptr::eq(m, served))
        .unwrap_or(0);
    Ok(Json(model_card(&state, i)))
}

async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&state, body)?;
    let f = Fields(&body);
    let served = state.model(f.str("model")?, true)?;
    let add_special = f.bool("add_special_tokens")?.unwrap_or(true);
    let Some(text) = f.str("prompt")? else {
        return Err(ApiError::invalid(
            "prompt",
            "`prompt` (the text to tokenize) is required",
        ));
    };
    let (ids, max_len) = match &served.kind {
        ModelKind::Lm(lm) => (lm.lm.tokenizer.encode(text, add_special), lm.context()),
        ModelKind::Encoder(e) => {
            let opts = EncodeOptions {
                add_special_tokens: add_special,
                ..EncodeOptions::default()
            };
            (
                e.tokenizer
                    .encode(text, &opts)
                    .map(|v| v.into_iter().next().map(|e| e.ids).unwrap_or_default()),
                0,
            )
        }
    };
    let ids = ids.map_err(|e| ApiError::invalid("prompt", format!("cannot tokenize: {e}")))?;
    Ok(Json(
        json!({"tokens": ids, "count": ids.len(), "max_model_len": max_len}),
    ))
}

async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&state, body)?;
    let f = Fields(&body);
    let served = state.model(f.str("model")?, true)?;
    let ids: Vec<u32> = match f.value("tokens") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "tokens",
                            format!("`tokens` must be token ids, found `{x}`"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::invalid(
                "tokens",
                format!(
                    "`tokens` must be a list of token ids, found {}",
                    type_name(other)
                ),
            ))
        }
        None => return Err(ApiError::invalid("tokens", "`tokens` is required")),
    };
    let text = match &served.kind {
        ModelKind::Lm(lm) => {
            let vocab = lm.lm.decoder().config().embeddings.vocab_size;
            if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
                return Err(ApiError::invalid(
                    "tokens",
                    format!("token id {bad} is past the vocabulary ({vocab} tokens)"),
                ));
            }
            lm.lm.tokenizer.decode(&ids, false)
        }
        ModelKind::Encoder(e) => e.tokenizer.decode(&ids, false),
    };
    let text = text.map_err(|e| ApiError::invalid("tokens", format!("cannot decode: {e}")))?;
    Ok(Json(json!({"prompt": text})))
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&state, body)?;
    let f = Fields(&body);
    let served = state.model(f.str("model")?, false)?;
    let name = served.name.clone();
    let ModelKind::Encoder(enc) = &served.kind else {
        return Err(ApiError::invalid(
            "model",
            format!("`{name}` is a causal LM; /v1/embeddings needs an encoder model (serve one with another --model)"),
        ));
    };
    if f.value("dimensions").is_some() {
        return Err(ApiError::invalid(
            "dimensions",
            "`dimensions` is not supported: this model's embeddings have one size (leave it out)",
        ));
    }
    let base64 = match f.str("encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("`encoding_format` must be float or base64, found `{other}`"),
            ))
        }
    };
    let decode = |ids: &[Value]| -> Result<String, ApiError> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "input",
                            format!("token ids must be whole numbers, found `{x}`"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        enc.tokenizer
            .decode(&ids, true)
            .map_err(|e| ApiError::invalid("input", format!("cannot decode the token ids: {e}")))
    };
    let texts: Vec<String> = match f.value("input") {
        None => return Err(ApiError::invalid("input", "`input` is required")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid("input", "`input` is empty"))
        }
        Some(Value::Array(items)) if items.iter().all(|i| i.is_string()) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("").to_string())
            .collect(),
        Some(Value::Array(items)) if items.iter().all(|i| i.is_number()) => vec![decode(items)?],
        Some(Value::Array(items)) if items.iter().all(|i| i.is_array()) => items
            .iter()
            .map(|i| decode(i.as_array().map(|v| v.as_slice()).unwrap_or(&[])))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::invalid(
                "input",
                format!(
                    "`input` must be a string, a list of strings, or token ids, found {}",
                    type_name(other)
                ),
            ))
        }
    };
    if texts.iter().any(|t| t.is_empty()) {
        return Err(ApiError::invalid("input", "`input` holds an empty string"));
    }
    let st = Arc::clone(&state);
    let key = name.clone();
    let run = tokio::task::spawn_blocking(move || -> Result<(Vec<Value>, usize), String> {
        let Ok(served) = st.model(Some(&key), false) else {
            return Err("the model went away".into());
        };
        let ModelKind::Encoder(enc) = &served.kind else {
            return Err("not an encoder".into());
        };
        let inputs: Vec<PipelineInput> = texts.iter().map(PipelineInput::text).collect();
        let mut options = TaskOptions::default();
        options.feature_extraction.pooling = Some(Pooling::Auto);
        let out = enc
            .pipeline
            .run(&inputs, &options)
            .map_err(|e| e.to_string())?;
        let tokens = texts
            .iter()
            .map(|t| {
                enc.tokenizer
                    .encode(t, &EncodeOptions::default())
                    .map(|v| v.first().map(|e| e.ids.len()).unwrap_or(0))
                    .unwrap_or(0)
            })
            .sum();
        Ok((out, tokens))
    });
    let (vectors, tokens) = run
        .await
        .map_err(|e| ApiError::internal(format!("the embedding task failed: {e}")))?
        .map_err(|e| ApiError::invalid("input", e))?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let floats: Vec<f32> = v
                    .as_array()
                    .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect())
                    .unwrap_or_default();
                let bytes: Vec<u8> = floats.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                v
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// `parameters` of the inference API as the task's options (the CLI's flags by their
/// `transformers` names).
fn task_options(task: Task, p: &Map<String, Value>) -> Result<TaskOptions, ApiError> {
    let f = Fields(p);
    let bad = |e: ferroformer::Error| ApiError::invalid("parameters", e.to_string());
    let strings = |k: &str| -> Result<Option<Vec<String>>, ApiError> {
        match f.value(k) {
            None => Ok(None),
            Some(Value::String(s)) => {
                Ok(Some(s.split(',').map(|x| x.trim().to_string()).collect()))
            }
            Some(Value::Array(a)) if a.iter().all(|x| x.is_string()) => Ok(Some(
                a.iter()
                    .map(|x| x.as_str().unwrap_or("").to_string())
                    .collect(),
            )),
            Some(other) => Err(ApiError::invalid(
                &format!("parameters.{k}"),
                format!(
                    "`{k}` must be a string or a list of strings, found {}",
                    type_name(other)
                ),
            )),
        }
    };
    let mut o = TaskOptions::default();
    match task {
        Task::TextClassification => {
            o.text_classification.top_k = match f.value("top_k") {
                None => TopK::Best,
                Some(Value::Null) => TopK::All,
                Some(_) => TopK::K(f.u64("top_k", 1, 100_000)?.unwrap_or(1) as usize),
            };
            if let Some(func) = f.str("function_to_apply")? {
                o.text_classification.function_to_apply =
                    Some(ClassificationFunction::from_name(func).map_err(bad)?);
            }
        }
        Task::TokenClassification => {
            if let Some(a) = f.str("aggregation_strategy")? {
                o.token_classification.aggregation =
                    AggregationStrategy::from_name(a).map_err(bad)?;
            }
            o.token_classification.ignore_labels = strings("ignore_labels")?;
        }
        Task::QuestionAnswering => {
            let q = &mut o.question_answering;
            q.top_k = f.u64("top_k", 1, 1000)?.map_or(q.top_k, |v| v as usize);
            q.doc_stride = f.u64("doc_stride", 1, 1_000_000)?.map(|v| v as usize);
            q.max_answer_len = f
                .u64("max_answer_len", 1, 1_000_000)?
                .map_or(q.max_answer_len, |v| v as usize);
            q.max_seq_len = f.u64("max_seq_len", 1, 1_000_000)?.map(|v| v as usize);
            q.handle_impossible_answer = f.bool("handle_impossible_answer")?.unwrap_or(false);
        }
        Task::FillMask => {
            o.fill_mask.top_k = f
                .u64("top_k", 1, 100_000)?
                .map_or(o.fill_mask.top_k, |v| v as usize);
            o.fill_mask.targets = strings("targets")?;
        }
        Task::FeatureExtraction => {
            o.feature_extraction.pooling = f
                .str("pooling")?
                .map(Pooling::from_name)
                .transpose()
                .map_err(bad)?;
            o.feature_extraction.normalize = f.bool("normalize")?;
        }
        Task::ZeroShotClassification => {
            let labels = strings("candidate_labels")?.unwrap_or_default();
            if labels.is_empty() {
                return Err(ApiError::invalid(
                    "parameters.candidate_labels",
                    "zero-shot-classification needs `parameters.candidate_labels`",
                ));
            }
            o.zero_shot.candidate_labels = labels;
            if let Some(t) = f.str("hypothesis_template")? {
                o.zero_shot.hypothesis_template = t.to_string();
            }
            o.zero_shot.multi_label = f.bool("multi_label")?.unwrap_or(false);
        }
        Task::TextGeneration => {
            let g = &mut o.text_generation;
            g.return_full_text = f.bool("return_full_text")?.unwrap_or(true);
            for (k, v) in p {
                if k != "return_full_text" {
                    g.generate_kwargs.insert(k.clone(), v.clone());
                }
            }
        }
        Task::Summarization | Task::Translation | Task::Text2TextGeneration => {
            let s = match task {
                Task::Summarization => &mut o.summarization,
                Task::Translation => &mut o.translation,
                _ => &mut o.text2text_generation,
            };
            s.truncation = f.bool("truncation")?;
            s.src_lang = f.str("src_lang")?.map(str::to_string);
            s.tgt_lang = f.str("tgt_lang")?.map(str::to_string);
            for (k, v) in p {
                if !matches!(k.as_str(), "truncation" | "src_lang" | "tgt_lang") {
                    s.generate_kwargs.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Ok(o)
}

/// `inputs` of the inference API: a text, a `{question, context}`, or a list of either.
fn pipeline_inputs(v: Option<&Value>) -> Result<Vec<PipelineInput>, ApiError> {
    let one = |x: &Value| -> Result<PipelineInput, ApiError> {
        match x {
            Value::String(s) => Ok(PipelineInput::text(s.clone())),
            Value::Object(_) => serde_json::from_value(x.clone()).map_err(|_| {
                ApiError::invalid(
                    "inputs",
                    "an object input must be {\"question\": ..., \"context\": ...}",
                )
            }),
            other => Err(ApiError::invalid(
                "inputs",
                format!(
                    "`inputs` items must be strings or {{question, context}} objects, found {}",
                    type_name(other)
                ),
            )),
        }
    };
    match v {
        None => Err(ApiError::invalid("inputs", "`inputs` is required")),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(ApiError::invalid("inputs", "`inputs` is empty"))
        }
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(x) => Ok(vec![one(x)?]),
    }
}

async fn pipeline(
    State(state): State<Arc<AppState>>,
    Path(task): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let task = Task::from_name(&task).map_err(|e| ApiError::not_found(e.to_string()))?;
    let body = json_body(&state, body)?;
    let f = Fields(&body);
    let inputs = pipeline_inputs(f.value("inputs"))?;
    let options = match f.value("parameters") {
        None => task_options(task, &Map::new())?,
        Some(Value::Object(p)) => task_options(task, p)?,
        Some(other) => {
            return Err(ApiError::invalid(
                "parameters",
                format!("`parameters` must be an object, found {}", type_name(other)),
            ))
        }
    };
    let served = match f.str("model")? {
        Some(n) => state.model(Some(n), true)?,
        None => state
            .models
            .iter()
            .find(|m| matches!(m.kind, ModelKind::Lm(_)) == (task == Task::TextGeneration))
            .or(state.models.first())
            .ok_or_else(|| ApiError::unknown_model("(any)", &[]))?,
    };
    if let (Task::TextGeneration, ModelKind::Lm(entry)) = (task, &served.kind) {
        if let Some(out) =
            scheduled_text_generation(&state, entry, &inputs, &options.text_generation).await?
        {
            return Ok(Json(Value::Array(out)));
        }
    }
    let source = served.source.clone();
    let st = Arc::clone(&state);
    let out = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, ApiError> {
        let key = (task.name().to_string(), source.clone());
        let cached = st
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let pipe: Arc<Pipeline> = match cached {
            Some(p) => p,
            None => {
                let config = PipelineConfig {
                    device: st
                        .args
                        .device
                        .open()
                        .map_err(|e| ApiError::internal(e.to_string()))?,
                    ..Default::default()
                };
                let p = ferroformer::pipelines::pipeline_with(task.name(), &source, &config)
                    .map_err(|e| {
                        ApiError::invalid(
                            "model",
                            format!("`{source}` cannot run {}: {e}", task.name()),
                        )
                    })?;
                let p = Arc::new(p);
                st.pipelines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, Arc::clone(&p));
                p
            }
        };
        pipe.run(&inputs, &options)
            .map_err(|e| ApiError::invalid("inputs", e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the pipeline task failed: {e}")))??;
    Ok(Json(Value::Array(out)))
}

/// `text-generation` on a served causal LM through its scheduler, so that it decodes in the
/// same batch as chat and completion requests, under the same KV-cache budget and queue, and
/// with no second copy of the model: the prompts are prepared and the answers written by the
/// pipeline's own functions, so the answer is the pipeline's (greedy: token for token).
/// `None` when the options need what the scheduler does not do (beam search, several
/// sequences per prompt, stop strings, a forced last token): those run in the pipeline.
async fn scheduled_text_generation(
    state: &AppState,
    entry: &LmEntry,
    inputs: &[PipelineInput],
    options: &TextGenerationOptions,
) -> Result<Option<Vec<Value>>, ApiError> {
    let lm = &entry.lm;
    let bad = |field: &str, e: ferroformer::Error| ApiError::invalid(field, e.to_string());
    let cfg = text_generation_config(lm, options).map_err(|e| bad("parameters", e))?;
    if cfg.num_beams > 1
        || cfg.num_return_sequences > 1
        || !cfg.stop_strings.is_empty()
        || !cfg.forced_eos_token_id.is_empty()
    {
        return Ok(None);
    }
    let mut prepared = Vec::with_capacity(inputs.len());
    for input in inputs {
        let prompt = input
            .as_text(Task::TextGeneration)
            .map_err(|e| bad("inputs", e))?
            .to_string();
        let (ids, g) =
            prepare_prompt(lm, &prompt, &cfg, options.truncation).map_err(|e| bad("inputs", e))?;
        // No room asked or left: the pipeline decides what that means.
        let Some(max_new) = g.max_new_tokens.filter(|&m| m > 0) else {
            return Ok(None);
        };
        let cap = state.args.max_tokens_cap;
        if max_new > cap {
            return Err(ApiError::invalid(
                "parameters.max_new_tokens",
                format!("{max_new} new tokens is more than the server's cap of {cap} (--max-tokens-cap)"),
            ));
        }
        let bytes = (ids.len() + max_new) * entry.scheduler.bytes_per_position;
        if bytes > entry.scheduler.kv_budget {
            return Err(ApiError::invalid(
                "inputs",
                format!(
                    "a prompt of {} tokens and {max_new} new tokens need {} MiB of KV cache, \
                     more than the budget of {} MiB (--kv-cache-mb)",
                    ids.len(),
                    bytes.div_ceil(1 << 20),
                    entry.scheduler.kv_budget >> 20
                ),
            ));
        }
        prepared.push((prompt, ids, g, max_new));
    }
    // Every prompt is queued before any is awaited, so they decode together.
    let mut waiting = Vec::with_capacity(prepared.len());
    for (prompt, ids, g, max_new) in prepared {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        entry.scheduler.submit(Job {
            sampler: SequenceSampler::new(g.clone(), ExtraSampling::default(), ids.len()),
            prompt: ids.clone(),
            max_new,
            eos: g.eos_token_id.clone(),
            events: tx,
            ended_by_request: Arc::new(AtomicBool::new(false)),
        })?;
        waiting.push((prompt, ids, rx));
    }
    let deadline = tokio::time::Instant::now() + state.timeout();
    let mut out = Vec::with_capacity(waiting.len());
    for (prompt, ids, mut rx) in waiting {
        let mut tokens = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => return Err(ApiError::timeout(state.args.request_timeout)),
                Ok(Some(Event::Token(t))) => tokens.push(t.token),
                Ok(Some(Event::Finished(_))) => break,
                Ok(Some(Event::Failed(m))) => {
                    return Err(ApiError::internal(format!("generation failed: {m}")))
                }
                Ok(None) => return Err(ApiError::internal("the model's worker stopped")),
            }
        }
        let text = generated_text(lm, &prompt, &ids, &tokens, options.return_full_text)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        out.push(json!([text]));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(same_key(b"secret", b"secret"));
        assert!(!same_key(b"secreT", b"secret"));
        assert!(!same_key(b"secret1", b"secret"));
        assert!(!same_key(b"secre", b"secret"));
        assert!(!same_key(b"", b"secret"));
    }
}
