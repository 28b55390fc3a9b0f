//! One entry point per operation: [`linear`], [`norm`], [`rope`], [`glu`] (and
//! [`activation`]), [`attention`] (and [`softmax_last_dim`]), [`cross_entropy`].
//!
//! Blocks call these and nothing else; each op decides how it runs in one `match` on
//! [`path`] (what its operands are: f32 on the CPU or not, tracked by autograd or not) and on
//! the [`Mode`] of the forward pass (whose arithmetic, training or inference, attention
//! weights wanted). The kernels in [`super::kernels`] never decide when they run.
//!
//! The two arithmetics:
//!
//! - [`Arithmetic::Reference`] is f32 throughout, as PyTorch computes it: what
//!   `transformers` checkpoints are tested against (1e-4).
//! - [`Arithmetic::Ggml`] is llama.cpp's CPU arithmetic, bit for bit, for GGUF models. A
//!   quantized model is chaotic in one place: every activation entering a quantized product
//!   is rounded to 8 bits per block, so a difference in the last bit of an activation can
//!   flip a rounding, and an implementation that is only *accurate* picks another top-1 token
//!   than llama.cpp wherever the two best logits are close (about one position in twenty on
//!   English text with SmolLM2 Q4_1). Under `Ggml`, RMSNorm sums the squares in f64; RoPE
//!   builds its angles by repeated multiplication by `base^(-2/d)` and rotates with the
//!   multiply-adds GCC contracts; keys and values are rounded to f16 as llama.cpp's cache
//!   stores them (kept in f32, so attention reads them without a conversion per step);
//!   queries and probabilities are rounded to f16 for the two attention products, which
//!   accumulate in 16 f32 lanes and reduce in `_mm512_reduce_add_ps`'s tree; softmax and
//!   SiLU use ggml's vectorized `expf`. The quantized products themselves are in
//!   [`super::kernels::qmatmul`]. The reference is ggml as built for AVX-512.

mod attention;
mod glu;
mod linear;
mod norm;
mod rope;

pub(crate) use attention::{attention, kv_element_bytes, kv_values, to_heads, AttentionCall, Qkv};
pub use attention::{soft_cap, softmax_last_dim};
pub use glu::activation;
pub(crate) use glu::glu;
pub(crate) use linear::linear;
pub(crate) use norm::{norm, NormParams};
pub(crate) use rope::{rope, rope_angles};

use candle_core::{DType, Tensor};

use crate::error::Result;

/// Whose floating-point arithmetic a model reproduces. Chosen once per model (its config);
/// every op of a forward pass gets it through the [`Mode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arithmetic {
    /// f32 throughout, as PyTorch computes it: what `transformers` checkpoints are tested
    /// against (1e-4).
    #[default]
    Reference,
    /// llama.cpp's CPU arithmetic, bit for bit: f16 keys and values, its `expf`
    /// approximation, its summation orders (see the module documentation). GGUF models use
    /// it so that their logits equal llama.cpp's.
    Ggml,
}

/// What a forward pass is for: the choice a caller of an `arch` model makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Training: dropout is active.
    pub train: bool,
    /// Also return the attention weights of every layer.
    pub need_weights: bool,
}

impl Pass {
    /// Inference, no attention weights.
    pub const INFERENCE: Pass = Pass {
        train: false,
        need_weights: false,
    };
    /// Training (dropout on), no attention weights.
    pub const TRAIN: Pass = Pass {
        train: true,
        need_weights: false,
    };

    /// The same pass, also returning attention weights.
    pub fn with_weights(self) -> Self {
        Self {
            need_weights: true,
            ..self
        }
    }
}

/// How every op of one forward pass runs: the [`Pass`] plus the model's [`Arithmetic`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    /// Whose arithmetic.
    pub arithmetic: Arithmetic,
    /// Training: dropout is active.
    pub train: bool,
    /// Return attention weights.
    pub need_weights: bool,
}

impl Mode {
    /// Inference with the reference arithmetic.
    pub const INFERENCE: Mode = Mode {
        arithmetic: Arithmetic::Reference,
        train: false,
        need_weights: false,
    };

    /// A pass of a model computing with `arithmetic`.
    pub fn new(pass: Pass, arithmetic: Arithmetic) -> Self {
        Self {
            arithmetic,
            train: pass.train,
            need_weights: pass.need_weights,
        }
    }

    /// Training mode with the reference arithmetic.
    pub fn train() -> Self {
        Self::new(Pass::TRAIN, Arithmetic::Reference)
    }

    /// The same mode, also returning attention weights.
    pub fn with_weights(self) -> Self {
        Self {
            need_weights: true,
            ..self
        }
    }
}

/// Which implementation an op's operands allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// Every operand is an f32 CPU tensor outside any autograd graph: our inference kernels.
    Kernel,
    /// f32 CPU operands, some tracked by autograd: our differentiable CPU ops.
    Autograd,
    /// Other devices or dtypes: candle's ops — its fused kernels when nothing is `tracked`,
    /// the composed (differentiable) form otherwise.
    Candle {
        /// Whether a gradient flows through some operand.
        tracked: bool,
    },
}

/// The one place that looks at operands to choose an implementation.
pub(crate) fn path(operands: &[&Tensor]) -> Path {
    let tracked = operands.iter().any(|t| t.track_op());
    let cpu_f32 = operands
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    match (cpu_f32, tracked) {
        (true, false) => Path::Kernel,
        (true, true) => Path::Autograd,
        (false, tracked) => Path::Candle { tracked },
    }
}

/// Mean cross-entropy of `logits` `(rows, classes)` against class ids `labels` `(rows,)`,
/// differentiable in the logits: one pass each way on f32 CPU logits, candle's composed
/// log-softmax elsewhere.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let rows = logits
        .dims2()
        .map_err(|_| crate::Error::shape("cross-entropy logits", "(rows, classes)", logits.dims()))?
        .0;
    if labels.dims() != [rows] {
        return Err(crate::Error::shape(
            "cross-entropy labels",
            format!("({rows},), one class id per row of logits"),
            labels.dims(),
        ));
    }
    match path(&[logits]) {
        Path::Kernel | Path::Autograd => Ok(super::kernels::loss::cross_entropy(logits, labels)?),
        Path::Candle { .. } => Ok(candle_nn::loss::cross_entropy(logits, labels)?),
    }
}
