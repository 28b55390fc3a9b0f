//! Affine projections and the names their parameters are stored under.

use candle_core::{Module, Tensor};
use candle_nn::Init;

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

/// `y = x W^T + b` over the last dimension of an input of any rank.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A linear layer from a weight of shape `(out, in)` and an optional bias of shape `(out,)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
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
            let stored = w.get_init((in_dim, out_dim), &names.weight, init)?;
            // Contiguous `(out, in)` once at load, so every forward is the same fast GEMM;
            // a trainable store keeps the view so gradients reach the stored variable.
            if w.is_trainable() {
                stored.t()?
            } else {
                stored.t()?.contiguous()?
            }
        } else {
            w.get_init((out_dim, in_dim), &names.weight, init)?
        };
        let bias = match &names.bias {
            Some(name) => Some(w.get_init(out_dim, name, init)?),
            None => None,
        };
        Ok(Self { weight, bias })
    }

    /// Stacks layers that read the same input into one wider layer, so a single matrix
    /// multiplication computes all of them (q, k and v; or gate and up).
    pub fn fuse(parts: &[Linear]) -> Result<Self> {
        if parts.len() == 1 {
            return Ok(parts[0].clone());
        }
        let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
        let weight = Tensor::cat(&weights, 0)?;
        let bias = if parts.iter().all(|l| l.bias.is_some()) {
            let biases: Vec<&Tensor> = parts.iter().filter_map(|l| l.bias.as_ref()).collect();
            Some(Tensor::cat(&biases, 0)?)
        } else if parts.iter().all(|l| l.bias.is_none()) {
            None
        } else {
            // Mixed: give the bias-less parts explicit zeros.
            let biases = parts
                .iter()
                .map(|l| match &l.bias {
                    Some(b) => Ok(b.clone()),
                    None => Tensor::zeros(l.out_dim(), l.weight.dtype(), l.weight.device()),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Some(Tensor::cat(&biases, 0)?)
        };
        Ok(Self { weight, bias })
    }

    /// Rows `start..start + len` of the output: the layer restricted to those outputs.
    pub fn narrow_out(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            weight: self.weight.narrow(0, start, len)?,
            bias: match &self.bias {
                Some(b) => Some(b.narrow(0, start, len)?),
                None => None,
            },
        })
    }

    /// The weight, `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `(out,)`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Input features.
    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Output features.
    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
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

    /// Applies the layer to the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        if let Some(y) = super::kernels::linear(x, &self.weight, self.bias.as_ref(), None)? {
            return Ok(y);
        }
        Ok(Module::forward(self, x)?)
    }

    /// `act(self(x))`, fused into one pass on the CPU fast path.
    pub fn forward_act(&self, x: &Tensor, act: super::Activation) -> Result<Tensor> {
        self.check_input(x)?;
        if let Some(y) = super::kernels::linear(x, &self.weight, self.bias.as_ref(), Some(act))? {
            return Ok(y);
        }
        act.forward(&Module::forward(self, x)?)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        // One 2-D GEMM over all leading dimensions: faster than a batched matmul against a
        // broadcast weight.
        let x2 = x.reshape((rows, in_dim))?;
        let mut parts = vec![&x2, &self.weight];
        parts.extend(self.bias.as_ref());
        let y = if super::autograd_ops::applicable(&parts) {
            // One GEMM per product in both directions (training on the CPU).
            super::autograd_ops::linear(&x2, &self.weight, self.bias.as_ref())?
        } else {
            let y = x2.matmul(&self.weight.t()?)?;
            match &self.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            }
        };
        let mut out_dims = dims.to_vec();
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight.dims()[0];
        y.reshape(out_dims)
    }
}
