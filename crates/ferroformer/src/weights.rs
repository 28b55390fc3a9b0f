//! Where a model's parameters come from: a safetensors checkpoint (pretrained) or a
//! [`VarMap`] (training from scratch).
//!
//! [`Weights`] wraps candle's `VarBuilder` so that tensor paths mirror Hugging Face names
//! (`encoder.layers.0.self_attn.in_proj_weight`) and so that a missing tensor or a tensor of
//! the wrong shape is reported with its full name and the file it was looked for in.
//!
//! Old checkpoints (BERT converted from TensorFlow) name LayerNorm parameters `gamma` and
//! `beta`; `transformers` renames them to `weight` and `bias` on load. [`Weights`] does the
//! same for every model, so no family or block has to know about it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::error::{Error, Result};

/// A view of a parameter store at some name prefix.
#[derive(Clone)]
pub struct Weights<'a> {
    vb: VarBuilder<'a>,
    source: Arc<String>,
    trainable: bool,
}

impl std::fmt::Debug for Weights<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("prefix", &self.vb.prefix())
            .field("source", &self.source)
            .field("trainable", &self.trainable)
            .finish()
    }
}

impl<'a> Weights<'a> {
    /// Memory-maps one or more safetensors files (a sharded checkpoint passes every shard).
    ///
    /// Each file is validated up front, so a truncated or corrupt file is reported by name
    /// here rather than as an obscure failure later.
    pub fn from_safetensors<P: AsRef<Path>>(
        paths: &[P],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        for path in &paths {
            if !path.is_file() {
                return Err(Error::file(path, "no such file"));
            }
            // SAFETY: read-only memory map; the file must not change while it is mapped,
            // as with every mmap-based loader.
            unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
                .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
        }
        // SAFETY: as above.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&paths, dtype, device)? };
        let source = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            vb,
            source: Arc::new(source),
            trainable: false,
        })
    }

    /// Reads a PyTorch checkpoint (`pytorch_model.bin`, a `torch.save`d state dict in the zip
    /// format PyTorch writes since 1.6). Tensors are read lazily, one at a time.
    pub fn from_pth(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::file(path, "no such file"));
        }
        // Parse the pickle up front so that a corrupt file is reported here, by name.
        let pth = candle_core::pickle::PthTensors::new(path, None)
            .map_err(|e| Error::file(path, format!("not a readable PyTorch checkpoint: {e}")))?;
        if pth.tensor_infos().is_empty() {
            return Err(Error::file(
                path,
                "no tensors found: expected a state dict saved with torch.save",
            ));
        }
        Ok(Self {
            vb: VarBuilder::from_backend(Box::new(pth), dtype, device.clone()),
            source: Arc::new(path.display().to_string()),
            trainable: false,
        })
    }

    /// Parameters held in memory under their names (useful in tests and for conversions).
    pub fn from_tensors(
        tensors: std::collections::HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            vb: VarBuilder::from_tensors(tensors, dtype, device),
            source: Arc::new("in-memory tensors".to_string()),
            trainable: false,
        }
    }

    /// Trainable parameters: each tensor is created in `varmap` (with its initializer) the
    /// first time it is requested, or reused if the varmap already has it.
    pub fn from_varmap(varmap: &'a VarMap, dtype: DType, device: &Device) -> Self {
        Self {
            vb: VarBuilder::from_varmap(varmap, dtype, device),
            source: Arc::new("var map".to_string()),
            trainable: true,
        }
    }

    /// The same store, at `prefix` below the current path.
    pub fn pp(&self, prefix: impl ToString) -> Self {
        Self {
            vb: self.vb.pp(prefix),
            source: self.source.clone(),
            trainable: self.trainable,
        }
    }

    /// The full name a relative tensor name resolves to.
    pub fn full_name(&self, name: &str) -> String {
        let prefix = self.vb.prefix();
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    }

    /// Whether this store creates parameters (training) rather than reading them.
    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    /// Whether a tensor exists (always false for a trainable store before creation); a
    /// `…weight`/`…bias` stored as `…gamma`/`…beta` counts as present.
    pub fn contains(&self, name: &str) -> bool {
        self.stored_name(name).is_some()
    }

    /// The name `name` is stored under: itself, or its old LayerNorm alias (`…gamma` for
    /// `…weight`, `…beta` for `…bias`), as `transformers` accepts when loading.
    fn stored_name<'n>(&self, name: &'n str) -> Option<std::borrow::Cow<'n, str>> {
        if self.vb.contains_tensor(name) {
            return Some(name.into());
        }
        if self.trainable {
            return None;
        }
        let (stem, last) = match name.rsplit_once('.') {
            Some((stem, last)) => (Some(stem), last),
            None => (None, name),
        };
        let alias = match last {
            "weight" => "gamma",
            "bias" => "beta",
            _ => return None,
        };
        let alias = match stem {
            Some(stem) => format!("{stem}.{alias}"),
            None => alias.to_string(),
        };
        self.vb.contains_tensor(&alias).then(|| alias.into())
    }

    /// The device parameters are placed on.
    pub fn device(&self) -> &Device {
        self.vb.device()
    }

    /// The dtype parameters are converted to.
    pub fn dtype(&self) -> DType {
        self.vb.dtype()
    }

    /// A tensor of the given shape; initialized with `init` when the store is trainable.
    pub fn get_init<S: Into<Shape>>(&self, shape: S, name: &str, init: Init) -> Result<Tensor> {
        let shape: Shape = shape.into();
        if self.trainable {
            return Ok(self.vb.get_with_hints(shape, name, init)?);
        }
        let Some(stored) = self.stored_name(name) else {
            return Err(Error::MissingTensor {
                name: self.full_name(name),
                source_desc: self.source.to_string(),
            });
        };
        let tensor = self.vb.get_unchecked(&stored)?;
        if tensor.dims() != shape.dims() {
            return Err(Error::TensorShape {
                name: self.full_name(name),
                source_desc: self.source.to_string(),
                expected: shape.dims().to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        Ok(tensor.to_dtype(self.dtype())?)
    }

    /// A tensor of the given shape (zero-initialized when trainable).
    pub fn get<S: Into<Shape>>(&self, shape: S, name: &str) -> Result<Tensor> {
        self.get_init(shape, name, Init::Const(0.0))
    }
}
