//! AdamW with parameter groups, a warmup + cosine learning-rate schedule, and gradient
//! clipping by global norm — with state that can be saved and restored exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Hyper-parameters of AdamW (PyTorch's `torch.optim.AdamW` semantics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay, applied only to parameters in the decay group.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// One trainable parameter with its moments.
struct Param {
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

/// AdamW over named parameters. Norm weights, biases and embeddings are not decayed
/// (the usual GPT-2/Llama practice); every other matrix is.
pub struct AdamW {
    cfg: AdamWConfig,
    params: BTreeMap<String, Param>,
    step: u64,
}

/// Whether a parameter gets weight decay: matrices do, except embedding tables.
pub fn decays(name: &str, var: &Var) -> bool {
    let is_matrix = var.as_tensor().rank() >= 2;
    let is_embedding = ["wte", "wpe", "embed", "embedding"]
        .iter()
        .any(|k| name.contains(k));
    is_matrix && !is_embedding
}

impl AdamW {
    /// An optimizer over `vars` (name → variable), moments zero; [`decays`] picks the
    /// decayed parameters.
    pub fn new(vars: &HashMap<String, Var>, cfg: AdamWConfig) -> Result<Self> {
        Self::with_decay_rule(vars, cfg, decays)
    }

    /// An optimizer over `vars` whose decay group is the parameters `decay(name, var)`
    /// accepts.
    pub fn with_decay_rule(
        vars: &HashMap<String, Var>,
        cfg: AdamWConfig,
        decay: impl Fn(&str, &Var) -> bool,
    ) -> Result<Self> {
        let mut params = BTreeMap::new();
        for (name, var) in vars {
            let t = var.as_tensor();
            params.insert(
                name.clone(),
                Param {
                    var: var.clone(),
                    decay: decay(name, var),
                    m: t.zeros_like()?,
                    v: t.zeros_like()?,
                },
            );
        }
        Ok(Self {
            cfg,
            params,
            step: 0,
        })
    }

    /// Number of steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Names of the parameters that are decayed and those that are not.
    pub fn groups(&self) -> (Vec<&str>, Vec<&str>) {
        let decayed = self
            .params
            .iter()
            .filter(|(_, p)| p.decay)
            .map(|(n, _)| n.as_str())
            .collect();
        let plain = self
            .params
            .iter()
            .filter(|(_, p)| !p.decay)
            .map(|(n, _)| n.as_str())
            .collect();
        (decayed, plain)
    }

    /// One update with learning rate `lr` from `grads` (name → gradient). Parameters with
    /// no gradient are left alone.
    pub fn step(&mut self, grads: &HashMap<String, Tensor>, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        for (name, p) in self.params.iter_mut() {
            let Some(g) = grads.get(name) else { continue };
            let decay = if p.decay { self.cfg.weight_decay } else { 0.0 };
            if Self::step_cpu(p, g, lr, decay, (bc1, bc2), &self.cfg)? {
                continue;
            }
            p.m = ((&p.m * b1)? + (g * (1.0 - b1))?)?;
            p.v = ((&p.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&p.m / bc1)?;
            let v_hat = (&p.v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.cfg.eps)?)?;
            let theta = p.var.as_tensor();
            let decayed = if p.decay && self.cfg.weight_decay > 0.0 {
                (theta * (1.0 - lr * self.cfg.weight_decay))?
            } else {
                theta.clone()
            };
            p.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// The update of one f32 CPU parameter in a single pass over its elements (the composed
    /// form above takes a dozen tensor ops and buffers per parameter), with the same f32
    /// arithmetic. `false` when it does not apply.
    fn step_cpu(
        p: &mut Param,
        g: &Tensor,
        lr: f64,
        decay: f64,
        (bc1, bc2): (f64, f64),
        cfg: &AdamWConfig,
    ) -> Result<bool> {
        let all = [p.var.as_tensor(), &p.m, &p.v, g];
        if !all
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.dims() == g.dims())
        {
            return Ok(false);
        }
        let data = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
        let (mut theta, mut m, mut v, g) =
            (data(p.var.as_tensor())?, data(&p.m)?, data(&p.v)?, data(g)?);
        let (b1, c1) = (cfg.beta1 as f32, (1.0 - cfg.beta1) as f32);
        let (b2, c2) = (cfg.beta2 as f32, (1.0 - cfg.beta2) as f32);
        let (inv_bc1, inv_bc2) = ((1.0 / bc1) as f32, (1.0 / bc2) as f32);
        let (eps, lr32, keep) = (cfg.eps as f32, lr as f32, (1.0 - lr * decay) as f32);
        // Elements are independent: chunks on every thread, the same result.
        const CHUNK: usize = 1 << 15;
        theta
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((theta, m), v), g)| {
                for i in 0..theta.len() {
                    m[i] = m[i] * b1 + g[i] * c1;
                    v[i] = v[i] * b2 + (g[i] * g[i]) * c2;
                    let update = (m[i] * inv_bc1) / ((v[i] * inv_bc2).sqrt() + eps);
                    theta[i] = theta[i] * keep - update * lr32;
                }
            });
        let dims = p.m.dims().to_vec();
        let dev = p.m.device().clone();
        p.var.set(&Tensor::from_vec(theta, dims.clone(), &dev)?)?;
        p.m = Tensor::from_vec(m, dims.clone(), &dev)?;
        p.v = Tensor::from_vec(v, dims, &dev)?;
        Ok(true)
    }

    /// Moments as tensors named `m.{param}` / `v.{param}` (for a checkpoint).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (name, p) in &self.params {
            out.insert(format!("m.{name}"), p.m.clone());
            out.insert(format!("v.{name}"), p.v.clone());
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, path: &Path, step: u64, device: &Device) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::file(path, format!("cannot read optimizer state: {e}")))?;
        for (name, p) in self.params.iter_mut() {
            for (key, slot) in [
                (format!("m.{name}"), &mut p.m),
                (format!("v.{name}"), &mut p.v),
            ] {
                let t = tensors.get(&key).ok_or_else(|| Error::MissingTensor {
                    name: key.clone(),
                    source_desc: path.display().to_string(),
                })?;
                if t.dims() != slot.dims() {
                    return Err(Error::TensorShape {
                        name: key.clone(),
                        source_desc: path.display().to_string(),
                        expected: slot.dims().to_vec(),
                        found: t.dims().to_vec(),
                    });
                }
                *slot = t.to_dtype(DType::F32)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warmup from 0 to `lr` over `warmup` steps, then cosine decay to `min_lr` at
/// `max_steps` (constant after). `step` counts from 0.
pub fn learning_rate(step: u64, lr: f64, min_lr: f64, warmup: u64, max_steps: u64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    if step >= max_steps || max_steps <= warmup {
        return min_lr;
    }
    let progress = (step - warmup) as f64 / (max_steps - warmup) as f64;
    min_lr + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (lr - min_lr)
}

/// `transformers`' default schedule (`get_linear_schedule_with_warmup`): the learning
/// rate of optimizer step `step` (counting from 0) rises linearly from 0 over `warmup` steps,
/// then falls linearly to 0 at `total` steps. As there, the first step of a warmup runs at 0.
pub fn linear_schedule(step: u64, lr: f64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return lr * step as f64 / warmup.max(1) as f64;
    }
    let left = total.saturating_sub(step) as f64;
    lr * (left / total.saturating_sub(warmup).max(1) as f64).max(0.0)
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm`; returns the
/// norm before clipping (as `torch.nn.utils.clip_grad_norm_`).
pub fn clip_grad_norm(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    // In name order: a map's iteration order changes from one process to the next, and the
    // f64 sum (so the clipping factor) with it, which made a resumed run differ from an
    // uninterrupted one in the last bit.
    let mut names: Vec<&String> = grads.keys().collect();
    names.sort();
    let mut total = 0f64;
    for g in names.into_iter().map(|n| &grads[n]) {
        total += g
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * factor)?;
        }
    }
    Ok(norm)
}
