//! Affine projections and the names their parameters are stored under.

use candle_core::{DType, Module, Tensor};

use super::ops;
use candle_nn::Init;

use super::quantized::QuantizedMatrix;
use crate::error::Result;
use crate::weights::Weights;

/// Where a linear layer's parameters live in a checkpoint.
///
/// Most checkpoints store `{prefix}.weight` as `(out, in)` and `{prefix}.bias`; PyTorch's
/// `nn.MultiheadAttention` uses `in_proj_weight`/`in_proj_bias`, and GPT-2's `Conv1D` stores
/// the weight transposed as `(in, out)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamNames {
    /// Name of the weight tensor.
    pub weight: String,
    /// Name of the bias tensor, `None` for a layer without bias.
    pub bias: Option<String>,
    /// Whether the weight is stored as `(in, out)` (GPT-2 `Conv1D`).
    pub transposed: bool,
}

impl ParamNames {
    /// `{prefix}.weight` stored `(out, in)`, and `{prefix}.bias` if `bias`.
    pub fn linear(prefix: &str, bias: bool) -> Self {
        Self {
            weight: join(prefix, "weight"),
            bias: bias.then(|| join(prefix, "bias")),
            transposed: false,
        }
    }

    /// GPT-2's `Conv1D`: `{prefix}.weight` stored `(in, out)` and `{prefix}.bias`.
    pub fn conv1d(prefix: &str) -> Self {
        Self {
            weight: join(prefix, "weight"),
            bias: Some(join(prefix, "bias")),
            transposed: true,
        }
    }

    /// Explicit tensor names, weight stored `(out, in)`.
    pub fn explicit(weight: &str, bias: Option<&str>) -> Self {
        Self {
            weight: weight.to_string(),
            bias: bias.map(str::to_string),
            transposed: false,
        }
    }
}

/// `{prefix}.{name}`, or just `name` when `prefix` is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A weight matrix `(out, in)`: a dense tensor, or GGML blocks kept quantized.
///
/// Linear layers, embedding tables and tied LM heads all hold one, so a model loaded from
/// a GGUF file keeps its quantized weights in every family and block.
#[derive(Debug, Clone)]
pub enum WeightMatrix {
    /// A dense tensor (any float dtype, any device; trainable).
    Dense(Tensor),
    /// Quantized blocks (CPU, inference only).
    Quantized(QuantizedMatrix),
}

impl WeightMatrix {
    /// `(out, in)`.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self {
            WeightMatrix::Dense(t) => Ok(t.dims2()?),
            WeightMatrix::Quantized(q) => Ok((q.out_dim(), q.in_dim())),
        }
    }

    /// The device the matrix lives on (quantized matrices live on the CPU).
    pub fn device(&self) -> &candle_core::Device {
        match self {
            WeightMatrix::Dense(t) => t.device(),
            WeightMatrix::Quantized(_) => &candle_core::Device::Cpu,
        }
    }

    /// The dtype of the activations it multiplies: the dense tensor's, f32 for quantized
    /// blocks.
    pub fn dtype(&self) -> candle_core::DType {
        match self {
            WeightMatrix::Dense(t) => t.dtype(),
            WeightMatrix::Quantized(_) => candle_core::DType::F32,
        }
    }

    /// The dense tensor, `None` when quantized.
    pub fn as_dense(&self) -> Option<&Tensor> {
        match self {
            WeightMatrix::Dense(t) => Some(t),
            WeightMatrix::Quantized(_) => None,
        }
    }

    /// The matrix as a dense tensor (a dequantized copy when quantized).
    pub fn to_dense(&self) -> Result<Tensor> {
        match self {
            WeightMatrix::Dense(t) => Ok(t.clone()),
            WeightMatrix::Quantized(q) => q.dequantize(),
        }
    }

    /// Rows `ids` (1-D, any integer dtype), `(ids, in)`: an embedding lookup. Quantized
    /// tables dequantize only the rows read.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            WeightMatrix::Dense(t) => Ok(t.index_select(&ids.to_dtype(DType::U32)?, 0)?),
            WeightMatrix::Quantized(q) => q.rows(ids),
        }
    }

    fn narrow_rows(&self, start: usize, len: usize) -> Result<Self> {
        Ok(match self {
            WeightMatrix::Dense(t) => WeightMatrix::Dense(t.narrow(0, start, len)?),
            WeightMatrix::Quantized(q) => WeightMatrix::Quantized(q.narrow_rows(start, len)?),
        })
    }
}

/// `y = x W^T + b` over the last dimension of an input of any rank.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: WeightMatrix,
    bias: Option<Tensor>,
    /// The layers a fused layer was built from, kept when some of them are trainable
    /// variables: a fused copy is a snapshot that an optimizer's update of the variables
    /// would not reach, so such a layer re-fuses its parts on every call (a cheap
    /// concatenation next to the product, and differentiable).
    parts: Option<std::sync::Arc<Vec<Linear>>>,
}

impl Linear {
    /// A linear layer from a weight of shape `(out, in)` and an optional bias of shape
    /// `(out,)`; any other shapes are an error naming them.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out, _) = weight
            .dims2()
            .map_err(|_| crate::Error::shape("linear weight", "(out, in)", weight.dims()))?;
        if let Some(b) = &bias {
            if b.dims() != [out] {
                return Err(crate::Error::shape(
                    "linear bias",
                    format!("({out},)"),
                    b.dims(),
                ));
            }
        }
        Ok(Self {
            weight: WeightMatrix::Dense(weight),
            bias,
            parts: None,
        })
    }

    /// A linear layer whose weight stays quantized: products run on candle's quantized
    /// kernels (activations quantized to 8 bits per block, as llama.cpp does). Inference
    /// only: no gradient flows through it.
    pub fn quantized(weight: QuantizedMatrix, bias: Option<Tensor>) -> Result<Self> {
        if let Some(b) = &bias {
            if b.dims() != [weight.out_dim()] {
                return Err(crate::Error::shape(
                    "quantized linear bias",
                    format!("({},)", weight.out_dim()),
                    b.dims(),
                ));
            }
        }
        Ok(Self {
            weight: WeightMatrix::Quantized(weight),
            bias,
            parts: None,
        })
    }

    /// A linear layer over any [`WeightMatrix`].
    pub fn from_matrix(weight: WeightMatrix, bias: Option<Tensor>) -> Result<Self> {
        match weight {
            WeightMatrix::Dense(w) => Self::new(w, bias),
            WeightMatrix::Quantized(q) => Self::quantized(q, bias),
        }
    }

    /// Loads (or, from a trainable store, creates with PyTorch's `nn.Linear` initialization)
    /// a layer mapping `in_dim` to `out_dim`.
    pub fn load(w: &Weights, in_dim: usize, out_dim: usize, names: &ParamNames) -> Result<Self> {
        // PyTorch: kaiming_uniform(a = sqrt(5)) for the weight, U(-1/sqrt(in), 1/sqrt(in)) for the bias.
        let bound = 1.0 / (in_dim as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = if names.transposed {
            w.get_init((in_dim, out_dim), &names.weight, init)?.t()?
        } else {
            w.get_init((out_dim, in_dim), &names.weight, init)?
        };
        // Inference on the CPU keeps W^T row-major, `(in, out)`, seen as `(out, in)` through
        // a transposed view: the GEMM then streams it as it is, where from `(out, in)` it
        // re-packs the whole matrix on every call (13 % of encoder time). A trainable store
        // keeps its variable as it is, so gradients reach it; other devices get `(out, in)`.
        let weight = if w.is_trainable() {
            weight
        } else if weight.device().is_cpu() {
            weight.t()?.contiguous()?.t()?
        } else {
            weight.contiguous()?
        };
        let bias = match &names.bias {
            Some(name) => Some(w.get_init(out_dim, name, init)?),
            None => None,
        };
        Self::new(weight, bias)
    }

    /// Stacks layers that read the same input into one wider layer, so a single matrix
    /// multiplication computes all of them (q, k and v; or gate and up). Quantized layers
    /// stack with quantized layers only.
    pub fn fuse(parts: &[Linear]) -> Result<Self> {
        if parts.len() == 1 {
            return Ok(parts[0].clone());
        }
        if parts.is_empty() {
            return Err(crate::Error::Invalid("no linear layers to fuse".into()));
        }
        let weight = match &parts[0].weight {
            WeightMatrix::Dense(_) => {
                let weights = parts
                    .iter()
                    .map(|l| {
                        l.weight.as_dense().ok_or_else(|| {
                            crate::Error::Invalid(
                                "cannot fuse a quantized linear layer with a dense one".into(),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                // Transposed-storage weights (see `load`) stack along their stored rows, so
                // the fused matrix keeps that layout.
                if weights
                    .iter()
                    .all(|w| !w.is_contiguous() && w.t().is_ok_and(|t| t.is_contiguous()))
                {
                    let stored = weights
                        .iter()
                        .map(|w| w.t())
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    WeightMatrix::Dense(Tensor::cat(&stored, 1)?.t()?)
                } else {
                    WeightMatrix::Dense(Tensor::cat(&weights, 0)?)
                }
            }
            WeightMatrix::Quantized(_) => {
                let mats = parts
                    .iter()
                    .map(|l| match &l.weight {
                        WeightMatrix::Quantized(q) => Ok(q),
                        WeightMatrix::Dense(_) => Err(crate::Error::Invalid(
                            "cannot fuse a dense linear layer with a quantized one".into(),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                WeightMatrix::Quantized(QuantizedMatrix::cat_rows(&mats)?)
            }
        };
        let bias = if parts.iter().all(|l| l.bias.is_some()) {
            let biases: Vec<&Tensor> = parts.iter().filter_map(|l| l.bias.as_ref()).collect();
            Some(Tensor::cat(&biases, 0)?)
        } else if parts.iter().all(|l| l.bias.is_none()) {
            None
        } else {
            // Mixed: give the bias-less parts explicit zeros.
            let Some((dtype, device)) = parts
                .iter()
                .find_map(|l| l.bias.as_ref())
                .map(|b| (b.dtype(), b.device().clone()))
            else {
                return Err(crate::Error::Invalid("no linear layer has a bias".into()));
            };
            let biases = parts
                .iter()
                .map(|l| match &l.bias {
                    Some(b) => Ok(b.clone()),
                    None => Tensor::zeros(l.out_dim(), dtype, &device),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Some(Tensor::cat(&biases, 0)?)
        };
        let trainable = parts.iter().any(|l| {
            matches!(&l.weight, WeightMatrix::Dense(t) if t.is_variable())
                || l.bias.as_ref().is_some_and(|b| b.is_variable())
                || l.parts.is_some()
        });
        let parts = trainable.then(|| std::sync::Arc::new(parts.to_vec()));
        Ok(Self {
            weight,
            bias,
            parts,
        })
    }

    /// The layer with its current values: itself, or for a fused layer of trainable parts,
    /// the parts fused now (see the `parts` field).
    fn current(&self) -> Result<std::borrow::Cow<'_, Self>> {
        match &self.parts {
            None => Ok(std::borrow::Cow::Borrowed(self)),
            Some(parts) => Ok(std::borrow::Cow::Owned(Self::fuse(parts)?)),
        }
    }

    /// Rows `start..start + len` of the output: the layer restricted to those outputs.
    pub fn narrow_out(&self, start: usize, len: usize) -> Result<Self> {
        if self.parts.is_some() {
            return self.current()?.narrow_out_now(start, len);
        }
        self.narrow_out_now(start, len)
    }

    fn narrow_out_now(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            parts: None,
            weight: self.weight.narrow_rows(start, len)?,
            bias: match &self.bias {
                Some(b) => Some(b.narrow(0, start, len)?),
                None => None,
            },
        })
    }

    /// The weight, `(out, in)`.
    pub fn weight(&self) -> &WeightMatrix {
        &self.weight
    }

    /// The bias, `(out,)`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Input features.
    pub fn in_dim(&self) -> usize {
        match &self.weight {
            WeightMatrix::Dense(t) => t.dims()[1],
            WeightMatrix::Quantized(q) => q.in_dim(),
        }
    }

    /// Output features.
    pub fn out_dim(&self) -> usize {
        match &self.weight {
            WeightMatrix::Dense(t) => t.dims()[0],
            WeightMatrix::Quantized(q) => q.out_dim(),
        }
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let in_dim = self.in_dim();
        if x.dims().last() != Some(&in_dim) {
            return Err(crate::Error::shape(
                "linear layer input",
                format!("(..., {in_dim})"),
                x.dims(),
            ));
        }
        Ok(())
    }

    /// Applies the layer to the last dimension of `x` (see [`ops::linear`](super::ops)).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let now = self.current()?;
        ops::linear(x, &now.weight, now.bias.as_ref(), None)
    }

    /// `act(self(x))`, fused into one pass on the CPU inference path.
    pub fn forward_act(&self, x: &Tensor, act: super::Activation) -> Result<Tensor> {
        self.check_input(x)?;
        let now = self.current()?;
        ops::linear(x, &now.weight, now.bias.as_ref(), Some(act))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Linear::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// A layer fused from trainable parts (BERT's q, k, v) must compute with the parts'
    /// current values: an optimizer updates the variables in place, and a fused copy made
    /// at load time would keep computing with the initial weights.
    #[test]
    fn fused_trainable_parts_see_updates() -> Result<()> {
        let dev = Device::Cpu;
        let wa = Var::from_vec(vec![1f32, 2., 3., 4.], (2, 2), &dev)?;
        let wb = Var::from_vec(vec![5f32, 6.], (1, 2), &dev)?;
        let fused = Linear::fuse(&[
            Linear::new(wa.as_tensor().clone(), None)?,
            Linear::new(wb.as_tensor().clone(), None)?,
        ])?;
        let x = Tensor::from_vec(vec![1f32, 1.], (1, 2), &dev)?;
        assert_eq!(
            fused.forward(&x)?.to_vec2::<f32>()?,
            vec![vec![3., 7., 11.]]
        );
        wb.set(&Tensor::from_vec(vec![-1f32, 0.], (1, 2), &dev)?)?;
        assert_eq!(
            fused.forward(&x)?.to_vec2::<f32>()?,
            vec![vec![3., 7., -1.]]
        );
        assert_eq!(
            fused.narrow_out(2, 1)?.forward(&x)?.to_vec2::<f32>()?,
            vec![vec![-1.]]
        );
        Ok(())
    }
}
