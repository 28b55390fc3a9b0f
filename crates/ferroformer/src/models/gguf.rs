//! Decoder LLMs from GGUF files (llama.cpp's format): the architecture and sizes come from
//! the metadata, the tokenizer from [`super::gguf_tokenizer`], and the tensors map onto
//! the same [`DecoderOnlyTransformer`] every safetensors family runs on. Quantized matrices
//! stay quantized ([`Linear::quantized`], a quantized embedding table), so the model takes
//! about as much memory as the file.
//!
//! Parsing is candle's (`candle_core::quantized::gguf_file`); this module checks what it
//! read (every tensor inside the file, every size consistent) so that a bad file is
//! reported by name instead of failing later.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::gguf_tokenizer::GgufTokenizer;
use crate::arch::{
    DecoderConfig, DecoderNames, DecoderOnlyTransformer, DecoderOutput, EmbeddingNames, Embeddings,
    LayerStack, LmHead, PositionalKind, SlidingWindow, StackNames,
};
use crate::error::{Error, Result};
use crate::nn::{
    Activation, Arithmetic, AttentionConfig, AttentionNames, FeedForward, FeedForwardConfig,
    FeedForwardNames, LayerCache, LayerNames, Linear, MultiHeadAttention, Norm, NormKind,
    QuantizedMatrix, RopeLayout, TransformerLayer, WeightMatrix,
};

/// The `general.architecture` values this loader understands.
pub const SUPPORTED_GGUF_ARCHITECTURES: &[&str] =
    &["llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"];

/// An opened GGUF file: its metadata and tensor directory, checked against the file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    file: File,
    content: Content,
}

/// Bytes a tensor of `info` occupies in the file, or why its shape cannot be stored: the
/// element count is computed with checked arithmetic (a file's dimensions are 64-bit
/// numbers whose product can overflow).
fn tensor_bytes(info: &TensorInfo) -> std::result::Result<u64, String> {
    let dims = info.shape.dims();
    let dtype = info.ggml_dtype;
    let elems = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .ok_or_else(|| format!("shape {dims:?} has more elements than a 64-bit count holds"))?;
    let block = dtype.block_size() as u64;
    if elems % block != 0 {
        return Err(format!(
            "shape {dims:?} is not a whole number of {dtype:?} blocks of {block} values"
        ));
    }
    (elems / block)
        .checked_mul(dtype.type_size() as u64)
        .ok_or_else(|| format!("shape {dims:?} of {dtype:?} needs more bytes than 64 bits count"))
}

/// The longest `context_length` a GGUF file may declare: 2^24 = 16,777,216 positions, above
/// every released model's (the longest, 10M tokens). A larger value is a broken file, and
/// tables sized by it (RoPE angles, a KV cache) would not fit in memory.
pub const MAX_GGUF_CONTEXT_LENGTH: usize = 1 << 24;

/// The name of a metadata value's type, for messages.
fn value_kind(v: &Value) -> String {
    format!("{:?}", v.value_type()).to_lowercase()
}

impl GgufFile {
    /// Reads the header, metadata and tensor directory of `path`, and checks that every
    /// tensor lies inside the file (a file cut short is reported here, by name).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path).map_err(|e| Error::file(&path, e))?;
        let len = file.metadata().map_err(|e| Error::file(&path, e))?.len();
        // Buffered: the metadata is read in thousands of small pieces (one per token).
        let content = Content::read(&mut std::io::BufReader::new(&mut file)).map_err(|e| {
            Error::file(
                &path,
                format!("not a readable GGUF file ({e}); is it cut short or not a GGUF file?"),
            )
        })?;
        for (name, info) in &content.tensor_infos {
            let size = tensor_bytes(info)
                .map_err(|e| Error::file(&path, format!("tensor `{name}`: {e}")))?;
            let start = content.tensor_data_offset.saturating_add(info.offset);
            let end = start.saturating_add(size);
            if end > len {
                return Err(Error::file(
                    &path,
                    format!(
                        "the file is cut short: tensor `{name}` needs bytes {start}..{end} \
                         but the file has {len} bytes"
                    ),
                ));
            }
        }
        Ok(Self {
            path,
            file,
            content,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every metadata entry.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A metadata entry.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn err(&self, key: &str, what: impl std::fmt::Display) -> Error {
        Error::file(&self.path, format!("metadata `{key}`: {what}"))
    }

    fn required(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| self.err(key, "missing"))
    }

    /// An unsigned integer entry (any integer type that holds a value ≥ 0).
    pub fn usize_value(&self, key: &str) -> Result<usize> {
        let v = self.required(key)?;
        let n: Option<i128> = match v {
            Value::U8(x) => Some(*x as i128),
            Value::I8(x) => Some(*x as i128),
            Value::U16(x) => Some(*x as i128),
            Value::I16(x) => Some(*x as i128),
            Value::U32(x) => Some(*x as i128),
            Value::I32(x) => Some(*x as i128),
            Value::U64(x) => Some(*x as i128),
            Value::I64(x) => Some(*x as i128),
            _ => None,
        };
        match n {
            Some(n) if n >= 0 && n <= usize::MAX as i128 => Ok(n as usize),
            Some(n) => Err(self.err(key, format!("expected a count, found {n}"))),
            None => Err(self.err(key, format!("expected an integer, found {}", value_kind(v)))),
        }
    }

    /// An unsigned integer entry, or `default` when absent.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            Some(_) => self.usize_value(key),
            None => Ok(default),
        }
    }

    /// A number entry (float or integer).
    pub fn f64_value(&self, key: &str) -> Result<f64> {
        let v = self.required(key)?;
        match v {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            _ => self.usize_value(key).map(|n| n as f64),
        }
    }

    /// A number entry, or `default` when absent.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            Some(_) => self.f64_value(key),
            None => Ok(default),
        }
    }

    /// A string entry.
    pub fn str_value(&self, key: &str) -> Result<&str> {
        match self.required(key)? {
            Value::String(s) => Ok(s),
            v => Err(self.err(key, format!("expected a string, found {}", value_kind(v)))),
        }
    }

    /// A boolean entry, or `default` when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(key, format!("expected a bool, found {}", value_kind(v)))),
        }
    }

    /// An array entry.
    pub fn array(&self, key: &str) -> Result<&[Value]> {
        match self.required(key)? {
            Value::Array(a) => Ok(a),
            v => Err(self.err(key, format!("expected an array, found {}", value_kind(v)))),
        }
    }

    /// An array of strings.
    pub fn string_array(&self, key: &str) -> Result<Vec<&str>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                v => Err(self.err(
                    key,
                    format!("element {i}: expected a string, found {}", value_kind(v)),
                )),
            })
            .collect()
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.str_value("general.architecture")
    }

    /// Whether the file holds tensor `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Names of every tensor, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        names.sort();
        names
    }

    /// Shape (`(out, in)` order for matrices, as PyTorch writes them) and block format of
    /// tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Result<(Vec<usize>, GgmlDType)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::file(&self.path, format!("missing tensor `{name}`")))?;
        Ok((info.shape.dims().to_vec(), info.ggml_dtype))
    }

    /// Reads tensor `name` (kept in its block format), checking its shape.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let (dims, _) = self.tensor_info(name)?;
        if dims != shape {
            return Err(Error::TensorShape {
                name: name.to_string(),
                source_desc: self.path.display().to_string(),
                expected: shape.to_vec(),
                found: dims,
            });
        }
        let mut reader = &self.file;
        self.content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| Error::file(&self.path, format!("tensor `{name}`: {e}")))
    }

    /// Reads tensor `name` as a dense f32 tensor (norm weights, biases).
    pub fn dense_tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.tensor(name, shape)?.dequantize(&Device::Cpu)?)
    }

    /// Reads matrix `name` of shape `(out, in)`: float tensors as dense, block formats
    /// kept quantized.
    pub fn matrix(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<WeightMatrix> {
        let t = self.tensor(name, &[out_dim, in_dim])?;
        Ok(match t.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                WeightMatrix::Dense(t.dequantize(&Device::Cpu)?)
            }
            _ => WeightMatrix::Quantized(QuantizedMatrix::new(t)?),
        })
    }

    /// A linear layer `in -> out` from `{prefix}.weight` (and `{prefix}.bias` if present).
    pub fn linear(&self, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let weight = self.matrix(&format!("{prefix}.weight"), out_dim, in_dim)?;
        let bias_name = format!("{prefix}.bias");
        let bias = if self.has_tensor(&bias_name) {
            Some(self.dense_tensor(&bias_name, &[out_dim])?)
        } else {
            None
        };
        Linear::from_matrix(weight, bias)
    }
}

/// What a GGUF file says about its model.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufConfig {
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// The decoder these values describe (`max_positions` is the training context length).
    pub decoder: DecoderConfig,
    /// Factor on the queries after the rotation (Gemma 3: llama.cpp's `f_attention_scale`,
    /// with 1 inside the softmax); `None` scales the scores by `1/sqrt(head_dim)` instead.
    pub query_scale: Option<f64>,
}

impl GgufConfig {
    /// Reads the configuration from the metadata of `file`.
    pub fn from_file(file: &GgufFile) -> Result<Self> {
        let arch = file.architecture()?.to_string();
        let (decoder, query_scale) = match arch.as_str() {
            "llama" | "qwen2" | "qwen3" | "gemma2" | "gemma3" | "phi3" => {
                decoder_config(file, &arch)?
            }
            other => {
                return Err(Error::file(
                    file.path(),
                    format!(
                        "general.architecture `{other}` is not supported; supported: {}",
                        SUPPORTED_GGUF_ARCHITECTURES.join(", ")
                    ),
                ))
            }
        };
        let name = match file.get("general.name") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(Self {
            architecture: arch,
            name,
            decoder,
            query_scale,
        })
    }
}

/// Llama-style metadata (`{arch}.block_count`, ...) to a decoder config, with what differs
/// per architecture (`llama` — Llama 2/3 and Mistral, whose converter writes it as `llama`
/// —, `qwen2`, `qwen3`, `gemma2`, `gemma3`, `phi3`), and the query scale (see
/// [`GgufConfig`]). Qwen2's q/k/v biases, Qwen3's per-head q/k norms and Phi-3's fused
/// q/k/v and gate/up projections are found by their tensors (`blk.0.attn_q.bias`,
/// `blk.0.attn_q_norm.weight`, `blk.0.attn_qkv.weight`, no `blk.0.ffn_gate.weight`) when the
/// blocks are loaded.
///
/// Sliding windows follow llama.cpp, the reference for a GGUF file: Gemma 2/3 have them;
/// `llama` (Mistral) and `phi3` files are run without one even when the metadata names a
/// window (llama.cpp's `llama` graph never masks by it, and it disables Phi-3's).
fn decoder_config(file: &GgufFile, arch: &str) -> Result<(DecoderConfig, Option<f64>)> {
    let gemma3 = arch == "gemma3";
    let gemma = gemma3 || arch == "gemma2";
    let key = |k: &str| format!("{arch}.{k}");
    let d_model = file.usize_value(&key("embedding_length"))?;
    let heads = file.usize_value(&key("attention.head_count"))?;
    let kv_heads = file.usize_or(&key("attention.head_count_kv"), heads)?;
    let layers = file.usize_value(&key("block_count"))?;
    let d_ff = file.usize_value(&key("feed_forward_length"))?;
    let context = file.usize_value(&key("context_length"))?;
    let eps = file.f64_value(&key("attention.layer_norm_rms_epsilon"))?;
    let base = file.f64_or(&key("rope.freq_base"), 10_000.0)?;
    // The head width is `embedding_length / head_count` unless the file says otherwise
    // (Gemma 3: 256 with 640 / 4 = 160).
    let explicit_head_dim = file.get(&key("attention.key_length")).is_some();
    if heads == 0 || (!explicit_head_dim && d_model % heads != 0) {
        return Err(file.err(
            &key("attention.head_count"),
            format!("{heads} heads do not divide embedding_length {d_model}"),
        ));
    }
    let head_dim = file.usize_or(&key("attention.key_length"), d_model / heads)?;
    let value_dim = file.usize_or(&key("attention.value_length"), head_dim)?;
    if value_dim != head_dim {
        return Err(file.err(
            &key("attention.value_length"),
            format!(
                "{value_dim}, but key_length is {head_dim}; different widths are not supported"
            ),
        ));
    }
    let rope_dims = file.usize_or(&key("rope.dimension_count"), head_dim)?;
    if rope_dims == 0 || rope_dims > head_dim || rope_dims % 2 != 0 {
        return Err(file.err(
            &key("rope.dimension_count"),
            format!(
                "{rope_dims} rotated dimensions per head; expected an even number in 2..={head_dim}"
            ),
        ));
    }
    // Phi-3's 128k models (`longrope`): both factor tensors or neither (they are read
    // with the weights, in `load_llama`).
    match (
        file.has_tensor("rope_factors_long.weight"),
        file.has_tensor("rope_factors_short.weight"),
    ) {
        (true, false) | (false, true) => {
            let (has, lacks) = if file.has_tensor("rope_factors_long.weight") {
                ("rope_factors_long.weight", "rope_factors_short.weight")
            } else {
                ("rope_factors_short.weight", "rope_factors_long.weight")
            };
            return Err(Error::file(
                file.path(),
                format!("tensor `{has}` without `{lacks}`: LongRoPE (Phi-3 `longrope`) needs both"),
            ));
        }
        _ => {}
    }
    if let Some(Value::String(kind)) = file.get(&key("rope.scaling.type")) {
        if kind != "none" {
            return Err(file.err(
                &key("rope.scaling.type"),
                format!(
                    "RoPE scaling `{kind}` is not supported; supported: none (Llama 3's scaling \
                     comes as the `rope_freqs` tensor)"
                ),
            ));
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(file.err(
            &key("attention.layer_norm_rms_epsilon"),
            format!("expected a finite number >= 0, found {eps}"),
        ));
    }
    if !(base.is_finite() && base > 0.0) {
        return Err(file.err(
            &key("rope.freq_base"),
            format!("expected a finite number > 0, found {base}"),
        ));
    }
    let vocab = check_llama_sizes(
        file,
        arch,
        &LlamaSizes {
            d_model,
            heads,
            kv_heads,
            head_dim,
            layers,
            d_ff,
            context,
        },
    )?;
    let attention = AttentionConfig {
        d_model,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        qkv_bias: file.has_tensor("blk.0.attn_q.bias"),
        out_bias: file.has_tensor("blk.0.attn_output.bias"),
        // Gemma and Phi-3 scale the queries instead (below).
        scale: (gemma || arch == "phi3").then_some(1.0),
        dropout: 0.0,
        softcap: None,
        // Partial rotary (Phi-3's `partial_rotary_factor`): llama.cpp's `n_rot`.
        rotary_dim: (rope_dims != head_dim).then_some(rope_dims),
    };
    attention
        .validate()
        .map_err(|e| Error::file(file.path(), e))?;
    let mut ffn = FeedForwardConfig::swiglu(d_model, d_ff);
    let positional = if gemma {
        // GELU-tanh gate (`LLM_FFN_GELU` with a parallel gate); llama.cpp rotates Gemma's
        // heads NEOX-style, pairs (x[i], x[i + d/2]), since its converter leaves Gemma's q
        // and k rows as they are.
        ffn.activation = Activation::GeluTanh;
        PositionalKind::Rotary {
            base,
            layout: RopeLayout::HalfSplit,
            scaling: None,
        }
    } else if matches!(arch, "qwen2" | "qwen3" | "phi3") {
        // `LLAMA_ROPE_TYPE_NEOX`: the converter leaves Qwen's and Phi-3's q and k rows as
        // `transformers` has them, pairs (x[i], x[i + d/2]).
        PositionalKind::Rotary {
            base,
            layout: RopeLayout::HalfSplit,
            scaling: None,
        }
    } else {
        // llama.cpp's converter permutes the q and k rows of every head so that the
        // rotated pairs are adjacent, (x[2i], x[2i+1]) — GGML's "normal" RoPE — where
        // `transformers` pairs x[i] with x[i + d/2].
        PositionalKind::Rotary {
            base,
            layout: RopeLayout::Interleaved,
            scaling: None,
        }
    };
    let mut cfg = super::llama::llama_decoder(
        super::llama::LlamaShape {
            vocab_size: vocab,
            max_positions: context,
            num_layers: layers,
            rms_norm_eps: eps,
            tie_word_embeddings: !file.has_tensor("output.weight"),
        },
        attention,
        ffn,
        positional,
    );
    let mut query_scale = None;
    if gemma {
        // llama.cpp's defaults when the keys are absent: 50 and 30 for Gemma 2; Gemma 3
        // has no score cap (llama.cpp ignores the key) and a final cap only when the file
        // gives one.
        let attn_cap = if gemma3 {
            0.0
        } else {
            file.f64_or(&key("attn_logit_softcapping"), 50.0)?
        };
        let final_cap = file.f64_or(
            &key("final_logit_softcapping"),
            if gemma3 { 0.0 } else { 30.0 },
        )?;
        for (k, cap) in [
            ("attn_logit_softcapping", attn_cap),
            ("final_logit_softcapping", final_cap),
        ] {
            if !(cap.is_finite() && cap >= 0.0) {
                return Err(file.err(&key(k), format!("{cap}; expected a finite number >= 0")));
            }
        }
        cfg.stack.layer.self_attention.softcap = (attn_cap > 0.0).then_some(attn_cap);
        cfg.final_logit_softcap = (final_cap > 0.0).then_some(final_cap);
        // `ggml_scale(inpL, sqrtf(n_embd))`: the f32 square root, exact in f64.
        cfg.embeddings.scale = Some((d_model as f32).sqrt() as f64);
        // llama.cpp's `f_attention_scale`: 1/sqrt(head_dim), except for the 27B models
        // (Gemma 2: 46 layers, Gemma 3: 62), which use 1/sqrt(embedding_length / head_count).
        let big = if gemma3 { 62 } else { 46 };
        let width = if layers == big {
            d_model / heads
        } else {
            head_dim
        };
        query_scale = Some((1.0f32 / (width as f32).sqrt()) as f64);
        cfg.stack.sliding_window = if gemma3 {
            gemma_sliding_window(file, arch, layers, (0, 6), Some(10_000.0))?
        } else {
            gemma_sliding_window(file, arch, layers, (4096, 2), None)?
        };
    } else if arch == "phi3" {
        // `ggml_scale(Qcur, 1/sqrtf(n_embd_head))`, then 1 inside the softmax.
        query_scale = Some((1.0f32 / (head_dim as f32).sqrt()) as f64);
    }
    // llama.cpp's arithmetic in every op, so that the logits are llama.cpp's own (see
    // `nn::ops`): the reference for a GGUF file is the program it was made for. The one
    // place a GGUF model's arithmetic is chosen.
    cfg.arithmetic = Arithmetic::Ggml;
    Ok((cfg, query_scale))
}

/// Gemma's local layers, as llama.cpp reads them: `{arch}.attention.sliding_window` keys
/// (absent: `defaults.0` — Gemma 3 0, Gemma 2 4096; 0: every layer global), every layer but
/// each `defaults.1`-th local (Gemma 3: 6, Gemma 2: 2; or the
/// `{arch}.attention.sliding_window_pattern` the file gives: a period, or one flag per
/// layer), RoPE base `{arch}.rope.freq_base_swa` on local layers (absent: `local_base`,
/// Gemma 3 10 000; `None`: the global base, as Gemma 2).
fn gemma_sliding_window(
    file: &GgufFile,
    arch: &str,
    layers: usize,
    defaults: (usize, usize),
    local_base: Option<f64>,
) -> Result<Option<SlidingWindow>> {
    let key = |k: &str| format!("{arch}.{k}");
    let window = file.usize_or(&key("attention.sliding_window"), defaults.0)?;
    if window == 0 {
        return Ok(None);
    }
    let pattern_key = key("attention.sliding_window_pattern");
    let mut sw = match file.get(&pattern_key) {
        Some(Value::Array(flags)) => {
            let flags = flags
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Bool(b) => Ok(*b),
                    v => Err(file.err(
                        &pattern_key,
                        format!("element {i}: expected a bool, found {}", value_kind(v)),
                    )),
                })
                .collect::<Result<Vec<bool>>>()?;
            if flags.len() != layers {
                return Err(file.err(
                    &pattern_key,
                    format!("{} flags for {layers} blocks", flags.len()),
                ));
            }
            SlidingWindow {
                window,
                layers: flags,
                local_rope_base: None,
            }
        }
        Some(_) => SlidingWindow::every_but_nth(window, layers, file.usize_value(&pattern_key)?),
        None => SlidingWindow::every_but_nth(window, layers, defaults.1),
    };
    let local_base = match (file.get(&key("rope.freq_base_swa")), local_base) {
        (None, None) => return Ok(Some(sw)),
        (_, default) => file.f64_or(&key("rope.freq_base_swa"), default.unwrap_or(10_000.0))?,
    };
    if !(local_base.is_finite() && local_base > 0.0) {
        return Err(file.err(
            &key("rope.freq_base_swa"),
            format!("expected a finite number > 0, found {local_base}"),
        ));
    }
    sw.local_rope_base = Some(local_base);
    Ok(Some(sw))
}

/// The sizes a Llama GGUF file's metadata declares, before they are trusted.
struct LlamaSizes {
    d_model: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    layers: usize,
    d_ff: usize,
    context: usize,
}

/// Checks the sizes in the metadata against each other and against the tensors the file
/// holds, before anything is allocated from them: every product is checked, the block
/// count cannot exceed the blocks stored, and each size must equal the shape of the first
/// tensor it describes (so that an absurd value, which no stored tensor can match, is
/// reported by its key). Returns the vocabulary size (`{arch}.vocab_size`, else the rows
/// of `token_embd.weight`).
fn check_llama_sizes(file: &GgufFile, arch: &str, s: &LlamaSizes) -> Result<usize> {
    let key = |k: &str| format!("{arch}.{k}");
    if s.context == 0 || s.context > MAX_GGUF_CONTEXT_LENGTH {
        return Err(file.err(
            &key("context_length"),
            format!(
                "{} positions; expected 1 to {MAX_GGUF_CONTEXT_LENGTH}",
                s.context
            ),
        ));
    }

    let (embd, _) = file.tensor_info("token_embd.weight")?;
    let &[rows, cols] = embd.as_slice() else {
        return Err(Error::file(
            file.path(),
            format!(
                "tensor `token_embd.weight` has shape {embd:?}; expected 2 dimensions \
                 (vocabulary, `{}`)",
                key("embedding_length")
            ),
        ));
    };
    if cols != s.d_model {
        return Err(file.err(
            &key("embedding_length"),
            format!(
                "{}, but tensor `token_embd.weight` has shape {embd:?}",
                s.d_model
            ),
        ));
    }
    let vocab = match file.get(&key("vocab_size")) {
        Some(_) => file.usize_value(&key("vocab_size"))?,
        None => rows,
    };
    if vocab != rows || vocab == 0 {
        return Err(file.err(
            &key("vocab_size"),
            format!("{vocab}, but tensor `token_embd.weight` has shape {embd:?}"),
        ));
    }

    // The distinct block indices of the `blk.N.*` tensors: the block count cannot exceed
    // their number, and every block below it must be there.
    let stored: std::collections::HashSet<usize> = file
        .content
        .tensor_infos
        .keys()
        .filter_map(|name| name.strip_prefix("blk.")?.split('.').next()?.parse().ok())
        .collect();
    if s.layers > stored.len() {
        return Err(file.err(
            &key("block_count"),
            format!(
                "{} blocks, but the file holds tensors of {} (`blk.N.*`)",
                s.layers,
                stored.len()
            ),
        ));
    }
    if let Some(missing) = (0..s.layers).find(|i| !stored.contains(i)) {
        return Err(file.err(
            &key("block_count"),
            format!(
                "{} blocks, but the file holds no tensor of block {missing} (`blk.{missing}.*`)",
                s.layers
            ),
        ));
    }

    let q_dim = s.heads.checked_mul(s.head_dim).ok_or_else(|| {
        file.err(
            &key("attention.head_count"),
            format!("{} heads of {} values overflow", s.heads, s.head_dim),
        )
    })?;
    let kv_dim = s.kv_heads.checked_mul(s.head_dim).ok_or_else(|| {
        file.err(
            &key("attention.head_count_kv"),
            format!("{} heads of {} values overflow", s.kv_heads, s.head_dim),
        )
    })?;
    if s.layers > 0 {
        let head_dim = format!(
            "head dim {} (`{}`, else embedding_length / head_count)",
            s.head_dim,
            key("attention.key_length")
        );
        let heads_keys = format!(
            "`{}` {} and `{}` {} × {head_dim}",
            key("attention.head_count"),
            s.heads,
            key("attention.head_count_kv"),
            s.kv_heads
        );
        let ff_key = format!("`{}` {}", key("feed_forward_length"), s.d_ff);
        let mut checks = Vec::new();
        // Phi-3 stores q, k and v in one tensor, and the gate and up projections in one.
        if file.has_tensor("blk.0.attn_qkv.weight") {
            checks.push((
                "blk.0.attn_qkv.weight",
                [q_dim + 2 * kv_dim, s.d_model],
                heads_keys,
            ));
        } else {
            checks.push((
                "blk.0.attn_q.weight",
                [q_dim, s.d_model],
                format!("`{}` {} × {head_dim}", key("attention.head_count"), s.heads),
            ));
            checks.push((
                "blk.0.attn_k.weight",
                [kv_dim, s.d_model],
                format!(
                    "`{}` {} × {head_dim}",
                    key("attention.head_count_kv"),
                    s.kv_heads
                ),
            ));
        }
        if file.has_tensor("blk.0.ffn_gate.weight") {
            checks.push(("blk.0.ffn_gate.weight", [s.d_ff, s.d_model], ff_key));
        } else {
            checks.push(("blk.0.ffn_up.weight", [2 * s.d_ff, s.d_model], ff_key));
        }
        for (tensor, want, keys) in checks {
            let (dims, _) = file.tensor_info(tensor)?;
            if dims != want {
                return Err(Error::file(
                    file.path(),
                    format!(
                        "metadata {keys} and `{}` {} give tensor `{tensor}` the shape \
                         {want:?}, but it has {dims:?}",
                        key("embedding_length"),
                        s.d_model
                    ),
                ));
            }
        }
    }
    Ok(vocab)
}

/// Builds the decoder of a Llama-style GGUF file onto the shared blocks.
///
/// GGUF names: `token_embd`, `blk.N.attn_{norm,q,k,v,output}`, `blk.N.ffn_{norm,gate,up,down}`,
/// `output_norm`, and `output` (absent when the head is tied to the embeddings); Gemma 3 adds
/// `blk.N.attn_{q,k}_norm` (per-head RMS norms) and `blk.N.{post_attention,post_ffw}_norm`
/// (norms of each sublayer's output). Gemma's norm weights are stored with the `+ 1` of
/// `Gemma3RMSNorm` already added (llama.cpp's converter, `conversion/gemma.py` `norm_shift`),
/// so every norm multiplies by its weight as it is, as llama.cpp does.
fn load_llama(
    file: &GgufFile,
    cfg: &DecoderConfig,
    query_scale: Option<f64>,
) -> Result<DecoderOnlyTransformer> {
    let layer_cfg = &cfg.stack.layer;
    let attn = &layer_cfg.self_attention;
    let d = attn.d_model;
    let q_dim = attn.num_heads * attn.head_dim;
    let kv_dim = attn.num_kv_heads * attn.head_dim;
    let d_ff = layer_cfg.feed_forward.d_ff;
    let eps = layer_cfg.norm.eps;
    let norm_of = |name: &str, width: usize| -> Result<Norm> {
        Ok(Norm::new(
            NormKind::RmsNorm,
            file.dense_tensor(name, &[width])?,
            None,
            eps,
        ))
    };
    let norm = |name: &str| norm_of(name, d);
    let qk_norms = file.has_tensor("blk.0.attn_q_norm.weight");
    let post_norms = file.has_tensor("blk.0.post_attention_norm.weight");
    let ctx = |name: String| move |e: Error| Error::file(file.path(), format!("{name}: {e}"));
    // Bounded by the tensors the file holds: `num_layers` may come from a caller's config.
    let mut layers = Vec::with_capacity(cfg.stack.num_layers.min(file.content.tensor_infos.len()));
    for i in 0..cfg.stack.num_layers {
        let p = format!("blk.{i}");
        let qkv = if file.has_tensor(&format!("{p}.attn_qkv.weight")) {
            file.linear(&format!("{p}.attn_qkv"), d, q_dim + 2 * kv_dim)?
        } else {
            Linear::fuse(&[
                file.linear(&format!("{p}.attn_q"), d, q_dim)?,
                file.linear(&format!("{p}.attn_k"), d, kv_dim)?,
                file.linear(&format!("{p}.attn_v"), d, kv_dim)?,
            ])
            .map_err(ctx(format!("{p}.attn_q/k/v")))?
        };
        let out = file.linear(&format!("{p}.attn_output"), q_dim, d)?;
        let mut attention =
            MultiHeadAttention::from_parts(attn, qkv, out).map_err(ctx(format!("{p}.attn")))?;
        if qk_norms {
            attention = attention.with_qk_norms(
                norm_of(&format!("{p}.attn_q_norm.weight"), attn.head_dim)?,
                norm_of(&format!("{p}.attn_k_norm.weight"), attn.head_dim)?,
            )?;
        }
        if let Some(s) = query_scale {
            attention = attention.with_query_scale(s);
        }
        let up = if file.has_tensor(&format!("{p}.ffn_gate.weight")) {
            Linear::fuse(&[
                file.linear(&format!("{p}.ffn_gate"), d, d_ff)?,
                file.linear(&format!("{p}.ffn_up"), d, d_ff)?,
            ])
            .map_err(ctx(format!("{p}.ffn_gate/up")))?
        } else {
            // Phi-3: gate and up stacked in `ffn_up`, gate first (`ggml_swiglu`'s halves).
            file.linear(&format!("{p}.ffn_up"), d, 2 * d_ff)?
        };
        let down = file.linear(&format!("{p}.ffn_down"), d_ff, d)?;
        let ffn = FeedForward::from_parts(&layer_cfg.feed_forward, up, down)
            .map_err(ctx(format!("{p}.ffn")))?;
        let mut layer = TransformerLayer::from_parts(
            layer_cfg,
            attention,
            norm(&format!("{p}.attn_norm.weight"))?,
            ffn,
            norm(&format!("{p}.ffn_norm.weight"))?,
        )?;
        if post_norms {
            layer = layer.with_post_norms(
                norm(&format!("{p}.post_attention_norm.weight"))?,
                norm(&format!("{p}.post_ffw_norm.weight"))?,
            )?;
        }
        layers.push(layer);
    }
    let stack = LayerStack::from_parts(layers, Some(norm("output_norm.weight")?));
    let vocab = cfg.embeddings.vocab_size;
    let table = file.matrix("token_embd.weight", vocab, d)?;
    let lm_head = if cfg.tie_word_embeddings {
        // The same quantized table (shared, not copied) serves lookups and the head.
        LmHead::tied(&table)?
    } else {
        LmHead::new(file.linear("output", d, vocab)?)
    };
    let mut embeddings = Embeddings::from_table(
        table,
        &cfg.embeddings,
        attn.rotary_width(),
        DType::F32,
        &Device::Cpu,
    )?;
    // Llama 3.x's `rope_scaling` (`rope_type: llama3`): the converter stores one divisor per
    // rotated pair, which llama.cpp applies to every layer's angles (`rope_freqs`).
    if file.has_tensor("rope_freqs.weight") {
        let factors = file
            .dense_tensor("rope_freqs.weight", &[attn.rotary_width() / 2])?
            .to_vec1::<f32>()?;
        embeddings = embeddings
            .with_rope_freq_factors(factors)
            .map_err(ctx("rope_freqs.weight".into()))?;
    }
    // Phi-3's `longrope`: the converter stores the short and long divisors, the original
    // context and `sqrt(1 + ln(scale) / ln(original))` as the factor on cos and sin.
    if file.has_tensor("rope_factors_long.weight") {
        let half = attn.rotary_width() / 2;
        let read = |name: &str| -> Result<Vec<f32>> {
            Ok(file.dense_tensor(name, &[half])?.to_vec1::<f32>()?)
        };
        let short = read("rope_factors_short.weight")?;
        let long = read("rope_factors_long.weight")?;
        let arch = file.architecture()?;
        let original_key = format!("{arch}.rope.scaling.original_context_length");
        let original = file.usize_or(&original_key, cfg.embeddings.max_positions)?;
        let factor_key = format!("{arch}.rope.scaling.attn_factor");
        let attention_factor = file.f64_or(&factor_key, 1.0)? as f32;
        embeddings = embeddings
            .with_longrope_factors(short, long, original, attention_factor)
            .map_err(|e| Error::file(file.path(), format!("rope_factors_long.weight: {e}")))?;
    }
    DecoderOnlyTransformer::from_parts(cfg, embeddings, stack, lm_head)
}

/// GGUF's tensor names for a Llama-style decoder as a [`DecoderNames`] map, so that
/// dequantized GGUF tensors can also be loaded through a [`crate::Weights`] store (the
/// quantized path in this module does not need it).
pub fn gguf_names(cfg: &DecoderConfig) -> DecoderNames {
    DecoderNames {
        embeddings: EmbeddingNames {
            word: "token_embd.weight".into(),
            position: None,
            token_type: None,
            norm: None,
        },
        stack: StackNames {
            layer_prefix: "blk".into(),
            layer: LayerNames {
                self_attention: AttentionNames::separate(
                    "attn_q",
                    "attn_k",
                    "attn_v",
                    "attn_output",
                    &cfg.stack.layer.self_attention,
                ),
                self_attention_norm: "attn_norm".into(),
                cross_attention: None,
                cross_attention_norm: None,
                feed_forward: FeedForwardNames::gated("ffn_gate", "ffn_up", "ffn_down", false),
                feed_forward_norm: "ffn_norm".into(),
                qk_norms: None,
                post_norms: None,
            },
            final_norm: Some("output_norm".into()),
        },
        lm_head: "output".into(),
    }
}

/// A decoder LLM loaded from a GGUF file, with the tokenizer its metadata describes.
#[derive(Debug, Clone)]
pub struct GgufModel {
    config: GgufConfig,
    decoder: DecoderOnlyTransformer,
    tokenizer: GgufTokenizer,
}

impl GgufModel {
    /// Loads the model and tokenizer of the GGUF file at `path` (on the CPU).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = GgufConfig::from_file(&file)?;
        let tokenizer = GgufTokenizer::from_gguf(&file)?;
        let decoder = load_decoder(&file, &config)?;
        Ok(Self {
            config,
            decoder,
            tokenizer,
        })
    }

    /// What the metadata says.
    pub fn config(&self) -> &GgufConfig {
        &self.config
    }

    /// The decoder (for [`crate::generation::generate_stream`] and
    /// [`crate::generation::generate_ids`]).
    pub fn decoder(&self) -> &DecoderOnlyTransformer {
        &self.decoder
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// LongRoPE files (Phi-3 128k): chooses the short or long factors by the context size
    /// per sequence as llama.cpp does (`n_ctx_seq`: llama.cpp rounds `n_ctx` up to a
    /// multiple of 256 first): long when it exceeds `rope.scaling.original_context_length`.
    /// Without it each forward pass chooses by its largest position, as `transformers` does
    /// (see [`crate::nn::RopeScaling::LongRope`]). No effect on other files.
    pub fn with_context_size(mut self, n_ctx: usize) -> Self {
        self.decoder.set_longrope_context(Some(n_ctx));
        self
    }

    /// Fresh KV caches.
    pub fn new_caches(&self) -> Vec<LayerCache> {
        self.decoder.new_caches()
    }

    /// Logits for `input_ids` `(batch, seq)` (see [`DecoderOnlyTransformer::forward`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        caches: Option<&mut [LayerCache]>,
    ) -> Result<DecoderOutput> {
        self.decoder.forward(
            input_ids,
            attention_mask,
            caches,
            crate::nn::Pass::INFERENCE,
        )
    }
}

/// The GGUF file `model` names, if it names one: a `.gguf` path, or a directory (or cached
/// hub id) that holds one GGUF file and no `config.json`. `None` for a checkpoint in
/// `transformers`' layout.
pub fn gguf_file(model: &str) -> Result<Option<PathBuf>> {
    let path = Path::new(model);
    if is_gguf_path(path) && !path.is_dir() {
        return Ok(Some(path.to_path_buf()));
    }
    let dir = super::hub::resolve(model)?;
    // A checkpoint directory, or a path to one of its files: not GGUF.
    if !dir.is_dir() || dir.join("config.json").is_file() {
        return Ok(None);
    }
    find_gguf(&dir)
}

/// Builds the decoder of an opened GGUF file.
pub fn load_decoder(file: &GgufFile, config: &GgufConfig) -> Result<DecoderOnlyTransformer> {
    match config.architecture.as_str() {
        "llama" | "qwen2" | "qwen3" | "gemma2" | "gemma3" | "phi3" => {
            load_llama(file, &config.decoder, config.query_scale)
        }
        other => Err(Error::file(
            file.path(),
            format!(
                "general.architecture `{other}` is not supported; supported: {}",
                SUPPORTED_GGUF_ARCHITECTURES.join(", ")
            ),
        )),
    }
}

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The GGUF file a model directory holds (a hub snapshot of a GGUF repository): the one
/// `.gguf` file, `None` when there is none, an error naming them when there are several.
pub fn find_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_gguf_path(p))
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(Error::file(
            dir,
            format!(
                "holds several GGUF files; name one: {}",
                found
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
