//! Training a decoder-only language model by next-token prediction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::checkpoint::{atomic_write, atomic_write_with, file_checksum};
use super::config::{Preset, TrainConfig};
use super::data::{tokenize_corpus, CorpusOptions, TokenFile, WindowSampler};
use super::log::LogWriter;
use super::optim::{clip_grad_norm, learning_rate, AdamW, AdamWConfig};
use super::tokenizer::{load_tokenizer, END_OF_TEXT};
use crate::arch::DecoderOnlyTransformer;
use crate::error::{Error, Result};
use crate::models::auto::{causal_lm_spec_from_json, load_causal_lm};
use crate::models::course::{CourseConfig, Positional};
use crate::models::{Gpt2Config, LlamaConfig};
use crate::nn::{Activation, NormKind};
use crate::weights::Weights;

/// What happened during training, for progress bars and logs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    /// The run is about to start (or resume).
    Started {
        /// First step to run.
        start_step: u64,
        /// Last step.
        max_steps: u64,
        /// Trainable parameters.
        parameters: usize,
        /// Training tokens.
        train_tokens: usize,
        /// Validation tokens.
        val_tokens: usize,
    },
    /// One optimizer step finished (sent every `log_every` steps).
    Step {
        /// Steps done.
        step: u64,
        /// Mean training loss of the step (nats per token).
        loss: f64,
        /// Learning rate used.
        lr: f64,
        /// Gradient norm before clipping.
        grad_norm: f64,
        /// Training throughput since the last report.
        tokens_per_sec: f64,
    },
    /// Validation finished.
    Eval {
        /// Steps done.
        step: u64,
        /// Validation loss (nats per token).
        val_loss: f64,
        /// `exp(val_loss)`.
        perplexity: f64,
    },
    /// A checkpoint was written.
    Saved {
        /// Steps done.
        step: u64,
        /// Run directory.
        path: PathBuf,
    },
}

/// Saved next to the checkpoint: where the run stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingState {
    /// Optimizer steps done.
    pub step: u64,
    /// The configuration of the run.
    pub config: TrainConfig,
    /// Checksums of `model.safetensors` and `optimizer.safetensors` of the same save.
    pub checksums: HashMap<String, String>,
}

/// A model being trained: the architecture, its variables, and its `config.json`.
pub struct TrainableModel {
    /// The network.
    pub model: DecoderOnlyTransformer,
    /// Its parameters by checkpoint name.
    pub vars: HashMap<String, Var>,
    /// The `config.json` that describes it (a Hugging Face config for gpt2/llama).
    pub config_json: serde_json::Value,
}

fn activation(cfg: &TrainConfig, default: Activation) -> Result<Activation> {
    match &cfg.activation {
        Some(a) => Activation::from_name(a),
        None => Ok(default),
    }
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_new",
        Activation::Silu => "silu",
    }
}

/// The `config.json` a run with `cfg` and a vocabulary of `vocab_size` produces.
pub fn model_config_json(cfg: &TrainConfig, vocab_size: usize) -> Result<serde_json::Value> {
    let family_only = |key: &str, set: bool| -> Result<()> {
        if set {
            return Err(Error::config(
                key,
                format!(
                    "the {:?} preset fixes this; use --preset course to change it",
                    cfg.preset
                ),
            ));
        }
        Ok(())
    };
    let to_json = |v: &dyn erased::Ser| v.to_json();
    Ok(match cfg.preset {
        Preset::Gpt2 => {
            family_only("positional", cfg.positional.is_some())?;
            family_only("norm_first", cfg.norm_first.is_some())?;
            family_only("kv_heads", cfg.kv_heads.is_some_and(|k| k != cfg.heads))?;
            let c = Gpt2Config {
                vocab_size,
                n_positions: cfg.context_length,
                n_embd: cfg.d_model,
                n_layer: cfg.layers,
                n_head: cfg.heads,
                n_inner: cfg.d_ff,
                activation_function: activation_name(activation(cfg, Activation::GeluTanh)?).into(),
                layer_norm_epsilon: 1e-5,
                resid_pdrop: cfg.dropout,
                embd_pdrop: cfg.dropout,
                attn_pdrop: cfg.dropout,
                scale_attn_weights: true,
                tie_word_embeddings: cfg.tie_embeddings.unwrap_or(true),
            };
            let mut j = to_json(&c)?;
            j["model_type"] = "gpt2".into();
            j["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
            j
        }
        Preset::Llama => {
            family_only("positional", cfg.positional.is_some())?;
            family_only("norm_first", cfg.norm_first.is_some())?;
            let d_ff = cfg
                .d_ff
                .unwrap_or_else(|| (8 * cfg.d_model / 3).div_ceil(8) * 8);
            let c = LlamaConfig {
                vocab_size,
                hidden_size: cfg.d_model,
                intermediate_size: d_ff,
                num_hidden_layers: cfg.layers,
                num_attention_heads: cfg.heads,
                num_key_value_heads: Some(cfg.kv_heads.unwrap_or(cfg.heads)),
                head_dim: Some(cfg.d_model / cfg.heads),
                max_position_embeddings: cfg.context_length,
                rms_norm_eps: 1e-6,
                rope_theta: 10000.0,
                hidden_act: activation_name(activation(cfg, Activation::Silu)?).into(),
                attention_bias: false,
                tie_word_embeddings: cfg.tie_embeddings.unwrap_or(false),
                attention_dropout: cfg.dropout,
                rope_scaling: None,
                original_max_position_embeddings: None,
                model_type: Some("llama".into()),
            };
            let mut j = to_json(&c)?;
            j["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
            j
        }
        Preset::Course => {
            let positional = match cfg.positional.as_deref() {
                None | Some("sinusoidal") => Positional::Sinusoidal,
                Some("learned") => Positional::Learned,
                Some("rotary") => Positional::Rotary,
                Some(other) => {
                    return Err(Error::config(
                        "positional",
                        format!("unknown `{other}`; expected sinusoidal, learned or rotary"),
                    ))
                }
            };
            let c = CourseConfig {
                model_type: "ferroformer".into(),
                vocab_size,
                d_model: cfg.d_model,
                num_layers: cfg.layers,
                num_heads: cfg.heads,
                num_kv_heads: cfg.kv_heads.unwrap_or(cfg.heads),
                d_ff: cfg.d_ff.unwrap_or(4 * cfg.d_model),
                max_seq_len: cfg.context_length,
                dropout: cfg.dropout,
                positional,
                norm_first: cfg.norm_first.unwrap_or(false),
                norm: NormKind::LayerNorm,
                activation: activation(cfg, Activation::Relu)?,
                gated_ffn: false,
                bias: true,
                tie_word_embeddings: cfg.tie_embeddings.unwrap_or(false),
                rope_theta: 10000.0,
            };
            let mut j = to_json(&c)?;
            j["architectures"] = serde_json::json!(["FerroformerDecoder"]);
            j
        }
    })
}

mod erased {
    use crate::error::{Error, Result};
    /// Serialize through a trait object (the three family configs differ in type).
    pub trait Ser {
        fn to_json(&self) -> Result<serde_json::Value>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> Result<serde_json::Value> {
            serde_json::to_value(self).map_err(|e| Error::Invalid(e.to_string()))
        }
    }
}

/// Standard normal samples (Box–Muller) from a seeded generator, scaled by `std`.
pub(crate) fn normals(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let t = 2.0 * std::f64::consts::PI * u2;
        out.push((r * t.cos()) as f32);
        if out.len() < n {
            out.push((r * t.sin()) as f32);
        }
    }
    out
}

/// GPT-2's initialization, seeded: matrices N(0, 0.02) (output projections of each
/// residual branch scaled by 1/sqrt(2 × layers)), biases 0, norm weights 1. Variables are
/// visited in name order so the same seed gives the same model.
fn init_weights(vars: &HashMap<String, Var>, seed: u64, layers: usize) -> Result<()> {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let residual_out = ["c_proj", "o_proj", "down_proj", "out_proj", "linear2"];
    for name in names {
        let var = &vars[name];
        let t = var.as_tensor();
        let value = if t.rank() >= 2 {
            let is_residual_out =
                residual_out.iter().any(|k| name.contains(k)) && !name.contains("mlp.c_fc");
            let std = if is_residual_out {
                0.02 / (2.0 * layers as f64).sqrt()
            } else {
                0.02
            };
            Tensor::from_vec(
                normals(&mut rng, t.elem_count(), std),
                t.shape(),
                t.device(),
            )?
        } else if name.ends_with("bias") {
            t.zeros_like()?
        } else {
            t.ones_like()?
        };
        var.set(&value)?;
    }
    Ok(())
}

/// Builds the model a `config.json` describes, with fresh seeded parameters.
pub fn build_trainable(
    config_json: &serde_json::Value,
    seed: u64,
    layers: usize,
    device: &Device,
) -> Result<TrainableModel> {
    let spec = causal_lm_spec_from_json(config_json, Path::new("config.json"))?;
    let varmap = VarMap::new();
    let model = load_causal_lm(&Weights::from_varmap(&varmap, DType::F32, device), &spec)?;
    let vars: HashMap<String, Var> = super::checkpoint::varmap_vars(&varmap)?;
    init_weights(&vars, seed, layers)?;
    Ok(TrainableModel {
        model,
        vars,
        config_json: config_json.clone(),
    })
}

impl TrainableModel {
    /// Number of scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.vars.values().map(|v| v.as_tensor().elem_count()).sum()
    }

    /// The parameters by name (for saving).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        super::checkpoint::var_tensors(&self.vars)
    }

    /// Overwrites every parameter from a safetensors file of the same model.
    pub fn load_parameters(&self, path: &Path) -> Result<()> {
        super::checkpoint::load_vars(&self.vars, path)
    }
}

/// Mean cross-entropy (nats per token) of next-token predictions for a batch.
pub fn lm_loss(
    model: &DecoderOnlyTransformer,
    inputs: &Tensor,
    labels: &Tensor,
    train: bool,
) -> Result<Tensor> {
    let pass = crate::nn::Pass {
        train,
        need_weights: false,
    };
    let logits = model.forward(inputs, None, None, pass)?.logits;
    let (b, s, v) = logits.dims3()?;
    crate::nn::loss::cross_entropy(&logits.reshape((b * s, v))?, &labels.reshape(b * s)?)
}

fn batch_tensors(
    inputs: Vec<u32>,
    labels: Vec<u32>,
    batch: usize,
    ctx: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    Ok((
        Tensor::from_vec(inputs, (batch, ctx), device)?,
        Tensor::from_vec(labels, (batch, ctx), device)?,
    ))
}

/// Mean validation loss over the fixed validation windows.
pub fn evaluate(
    model: &DecoderOnlyTransformer,
    val: &TokenFile,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<f64> {
    let sampler = WindowSampler::new(val.len(), cfg.context_length, cfg.seed)?;
    let batches = sampler.sequential_batches(val.tokens(), cfg.batch_size, cfg.eval_windows);
    let (mut total, mut count) = (0f64, 0usize);
    for (inputs, labels) in batches {
        let rows = inputs.len() / cfg.context_length;
        let (x, y) = batch_tensors(inputs, labels, rows, cfg.context_length, device)?;
        let loss = lm_loss(model, &x, &y, false)?.to_scalar::<f32>()? as f64;
        total += loss * rows as f64;
        count += rows;
    }
    if count == 0 {
        return Err(Error::Invalid(
            "validation set has no complete window".into(),
        ));
    }
    Ok(total / count as f64)
}

/// Paths inside a run directory.
pub struct RunPaths {
    /// The run directory.
    pub dir: PathBuf,
}

impl RunPaths {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn save_checkpoint(
    paths: &RunPaths,
    model: &TrainableModel,
    opt: &AdamW,
    cfg: &TrainConfig,
    step: u64,
    tokenizer_json: &str,
    eos: Option<u32>,
) -> Result<()> {
    let save_tensors = |name: &str, tensors: HashMap<String, Tensor>| -> Result<()> {
        atomic_write_with(&paths.file(name), |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(|e| Error::file(tmp, e))
        })
    };
    let json = |v: &serde_json::Value| {
        serde_json::to_vec_pretty(v).map_err(|e| Error::Invalid(e.to_string()))
    };
    atomic_write(&paths.file("config.json"), &json(&model.config_json)?)?;
    atomic_write(&paths.file("tokenizer.json"), tokenizer_json.as_bytes())?;
    atomic_write(
        &paths.file("generation_config.json"),
        &json(
            &serde_json::json!({ "eos_token_id": eos, "bos_token_id": eos, "do_sample": true, "top_k": 50 }),
        )?,
    )?;
    save_tensors("model.safetensors", model.tensors())?;
    save_tensors("optimizer.safetensors", opt.state_tensors())?;
    let mut checksums = HashMap::new();
    for f in ["model.safetensors", "optimizer.safetensors"] {
        checksums.insert(f.to_string(), file_checksum(&paths.file(f))?);
    }
    let state = TrainingState {
        step,
        config: cfg.clone(),
        checksums,
    };
    // Written last: a checkpoint counts only once its state file names its files' checksums.
    atomic_write(
        &paths.file("training_state.json"),
        &serde_json::to_vec_pretty(&state).map_err(|e| Error::Invalid(e.to_string()))?,
    )
}

/// Trains (or resumes) a language model as `cfg` says, on the CPU. `stop` ends the run
/// early with a checkpoint (Ctrl-C); `on_event` receives progress.
pub fn train_lm(
    cfg: &TrainConfig,
    resume: bool,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<PathBuf> {
    train_lm_on(cfg, resume, stop, on_event, &Device::Cpu)
}

/// [`train_lm`] on `device`. Off the CPU the model runs on candle's composed operations
/// (the fused training kernels are CPU code); checkpoints are written the same way.
pub fn train_lm_on(
    cfg: &TrainConfig,
    resume: bool,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&TrainEvent),
    device: &Device,
) -> Result<PathBuf> {
    cfg.validate()?;
    let device = device.clone();
    let paths = RunPaths {
        dir: cfg.out.clone(),
    };
    let state_path = paths.file("training_state.json");
    let previous: Option<TrainingState> = if resume {
        let text = std::fs::read_to_string(&state_path).map_err(|e| {
            Error::file(
                &state_path,
                format!("cannot resume: {e} (no checkpoint in this run directory)"),
            )
        })?;
        Some(serde_json::from_str(&text).map_err(|e| Error::file(&state_path, e))?)
    } else {
        if state_path.exists() {
            return Err(Error::file(
                &cfg.out,
                "already holds a training run; pass --resume to continue it or choose another --out (nothing was overwritten)",
            ));
        }
        None
    };

    let tokenizer_path = cfg
        .tokenizer
        .clone()
        .ok_or_else(|| Error::config("tokenizer", "missing"))?;
    let tokenizer = load_tokenizer(&tokenizer_path)?;
    let tokenizer_json =
        std::fs::read_to_string(&tokenizer_path).map_err(|e| Error::file(&tokenizer_path, e))?;
    let vocab = tokenizer.get_vocab_size(true);
    let eos = tokenizer.token_to_id(END_OF_TEXT);
    let config_json = model_config_json(cfg, vocab)?;

    if let Some(prev) = &previous {
        let old = model_config_json(&prev.config, vocab)?;
        if old != config_json {
            return Err(Error::file(
                &state_path,
                "the checkpoint was trained with a different model configuration than the one given; \
                 resume with the same model settings (nothing was overwritten)",
            ));
        }
        for (file, sum) in &prev.checksums {
            let now = file_checksum(&paths.file(file))?;
            if &now != sum {
                return Err(Error::file(
                    paths.file(file),
                    "does not belong to the checkpoint in training_state.json (an interrupted save?)",
                ));
            }
        }
    }

    let opts = CorpusOptions {
        text_field: cfg.text_field.clone(),
        lossy: cfg.lossy,
        end_of_text: eos,
        val_fraction: cfg.val_fraction,
        val_files: cfg.val_files.clone(),
    };
    let split = tokenize_corpus(&cfg.data, &tokenizer, &opts, &paths.file("data-cache"))?;
    let sampler = WindowSampler::new(split.train.len(), cfg.context_length, cfg.seed)?;

    let model = build_trainable(&config_json, cfg.seed, cfg.layers, &device)?;
    let mut opt = AdamW::new(
        &model.vars,
        AdamWConfig {
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: 1e-8,
            weight_decay: cfg.weight_decay,
        },
    )?;
    let mut step = 0;
    if let Some(prev) = &previous {
        model.load_parameters(&paths.file("model.safetensors"))?;
        opt.load_state(&paths.file("optimizer.safetensors"), prev.step, &device)?;
        step = prev.step;
    }
    on_event(&TrainEvent::Started {
        start_step: step,
        max_steps: cfg.max_steps,
        parameters: model.parameter_count(),
        train_tokens: split.train.len(),
        val_tokens: split.val.len(),
    });

    let log_path = paths.file("log.jsonl");
    let mut log = LogWriter::open(&log_path, step)?;
    let min_lr = cfg.min_lr.unwrap_or(cfg.lr / 10.0);
    let started = Instant::now();
    let mut window_start = Instant::now();
    let mut window_tokens = 0usize;
    let tokens_per_step = cfg.batch_size * cfg.context_length * cfg.grad_accum;
    let mut last_saved = step;
    while step < cfg.max_steps {
        // Dropout masks depend only on (seed, step): a resumed run draws the same ones.
        crate::nn::dropout::seed(cfg.seed.wrapping_mul(0x9E3779B97F4A7C15) ^ step);
        let mut grads: HashMap<String, Tensor> = HashMap::new();
        let mut loss_sum = 0f64;
        for micro in 0..cfg.grad_accum {
            let index = step * cfg.grad_accum as u64 + micro as u64;
            let (inputs, labels) = sampler.batch(split.train.tokens(), index, cfg.batch_size);
            let (x, y) =
                batch_tensors(inputs, labels, cfg.batch_size, cfg.context_length, &device)?;
            let loss = lm_loss(&model.model, &x, &y, true)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let scaled = (loss / cfg.grad_accum as f64)?;
            let store = scaled.backward()?;
            for (name, var) in &model.vars {
                if let Some(g) = store.get(var.as_tensor()) {
                    let acc = match grads.remove(name) {
                        Some(prev) => (prev + g)?,
                        None => g.clone(),
                    };
                    grads.insert(name.clone(), acc);
                }
            }
        }
        let grad_norm = clip_grad_norm(&mut grads, cfg.clip)?;
        let lr = learning_rate(step, cfg.lr, min_lr, cfg.warmup_steps, cfg.max_steps);
        opt.step(&grads, lr)?;
        step += 1;
        window_tokens += tokens_per_step;
        let loss = loss_sum / cfg.grad_accum as f64;
        if !loss.is_finite() {
            return Err(Error::Invalid(format!(
                "training diverged at step {step}: loss is {loss}; lower --lr or raise --warmup-steps"
            )));
        }
        log.train(step, loss, lr)?;
        if step % cfg.log_every.max(1) == 0 || step == cfg.max_steps {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            on_event(&TrainEvent::Step {
                step,
                loss,
                lr,
                grad_norm,
                tokens_per_sec: window_tokens as f64 / secs,
            });
            window_start = Instant::now();
            window_tokens = 0;
        }
        let out_of_time = cfg
            .max_minutes
            .is_some_and(|m| started.elapsed().as_secs_f64() >= m * 60.0);
        let stopping = stop.load(Ordering::SeqCst) || out_of_time || step == cfg.max_steps;
        if step % cfg.eval_every.max(1) == 0 || stopping {
            let val_loss = evaluate(&model.model, &split.val, cfg, &device)?;
            log.append(serde_json::json!({
                "step": step, "val_loss": val_loss, "perplexity": val_loss.exp()
            }))?;
            on_event(&TrainEvent::Eval {
                step,
                val_loss,
                perplexity: val_loss.exp(),
            });
            log.plot(&paths.file("loss.png"), "loss", "val_loss")?;
        }
        if step % cfg.save_every.max(1) == 0 || stopping {
            save_checkpoint(&paths, &model, &opt, cfg, step, &tokenizer_json, eos)?;
            last_saved = step;
            on_event(&TrainEvent::Saved {
                step,
                path: paths.dir.clone(),
            });
        }
        if stopping {
            break;
        }
    }
    if last_saved != step {
        save_checkpoint(&paths, &model, &opt, cfg, step, &tokenizer_json, eos)?;
    }
    Ok(paths.dir)
}
