//! Quantized weight matrices (GGML block formats: Q4_0, Q4_1, Q8_0, the K-quants…) kept
//! quantized in memory: products run on candle's `QMatMul` kernels, which quantize the
//! activations to the matching 8-bit format as llama.cpp does, and embedding lookups
//! dequantize only the rows they read.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor, D};

use super::kernels::qmatmul::{self, WeightFormat};
use crate::error::{Error, Result};

/// A `(out, in)` matrix stored in GGML blocks along `in`: one or more row blocks of
/// quantized tensors, stacked along `out`.
///
/// Row blocks of the same block format are merged into one tensor (one product for q, k
/// and v); blocks of different formats (a Q6_K `attn_v` beside Q4_K `attn_q` in a Q4_K_M
/// file) stay separate and their outputs are concatenated.
#[derive(Debug, Clone)]
pub struct QuantizedMatrix {
    parts: Vec<Arc<QTensor>>,
    out_dim: usize,
    in_dim: usize,
}

impl QuantizedMatrix {
    /// Wraps a `(out, in)` quantized tensor.
    pub fn new(tensor: QTensor) -> Result<Self> {
        Self::from_arc(Arc::new(tensor))
    }

    /// Wraps a shared `(out, in)` quantized tensor.
    pub fn from_arc(tensor: Arc<QTensor>) -> Result<Self> {
        let (out_dim, in_dim) = tensor
            .shape()
            .dims2()
            .map_err(|_| Error::shape("quantized weight", "(out, in)", tensor.shape().dims()))?;
        if !tensor.device().is_cpu() {
            // The byte-level operations below (merging, narrowing, lookups) read CPU memory.
            return Err(Error::Invalid(
                "quantized weights are supported on the CPU only".into(),
            ));
        }
        Ok(Self {
            parts: vec![tensor],
            out_dim,
            in_dim,
        })
    }

    /// Output features (rows).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Input features (columns).
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// The row blocks, in order.
    pub fn parts(&self) -> &[Arc<QTensor>] {
        &self.parts
    }

    /// The block formats of the row blocks.
    pub fn dtypes(&self) -> Vec<GgmlDType> {
        self.parts.iter().map(|p| p.dtype()).collect()
    }

    /// Bytes the quantized data occupies.
    pub fn size_in_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.storage_size_in_bytes()).sum()
    }

    /// The whole matrix in f32 (for inspection and tests; the model never needs it).
    pub fn dequantize(&self) -> Result<Tensor> {
        let parts = self
            .parts
            .iter()
            .map(|p| p.dequantize(&Device::Cpu))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Stacks matrices that share `in` along `out`, merging neighbouring blocks of the
    /// same format into one tensor (their bytes are row-major, so merging is a copy).
    pub fn cat_rows(mats: &[&QuantizedMatrix]) -> Result<Self> {
        let Some(first) = mats.first() else {
            return Err(Error::Invalid("nothing to stack".into()));
        };
        let in_dim = first.in_dim;
        let mut parts: Vec<Arc<QTensor>> = Vec::new();
        let mut pending: Vec<Arc<QTensor>> = Vec::new();
        for m in mats {
            if m.in_dim != in_dim {
                return Err(Error::shape(
                    "stacked quantized weight",
                    format!("(out, {in_dim})"),
                    &[m.out_dim, m.in_dim],
                ));
            }
            for p in &m.parts {
                if pending.first().is_some_and(|q| q.dtype() != p.dtype()) {
                    parts.push(merge(&pending)?);
                    pending.clear();
                }
                pending.push(p.clone());
            }
        }
        if !pending.is_empty() {
            parts.push(merge(&pending)?);
        }
        Ok(Self {
            parts,
            out_dim: mats.iter().map(|m| m.out_dim).sum(),
            in_dim,
        })
    }

    /// Rows `start..start + len`.
    pub fn narrow_rows(&self, start: usize, len: usize) -> Result<Self> {
        if start + len > self.out_dim || len == 0 {
            return Err(Error::Invalid(format!(
                "rows {start}..{} of a quantized weight with {} rows",
                start + len,
                self.out_dim
            )));
        }
        let mut parts = Vec::new();
        let mut offset = 0;
        for p in &self.parts {
            let rows = p.shape().dims()[0];
            let lo = start.max(offset);
            let hi = (start + len).min(offset + rows);
            if lo < hi {
                parts.push(if lo == offset && hi == offset + rows {
                    p.clone()
                } else {
                    Arc::new(slice_rows(p, lo - offset, hi - lo)?)
                });
            }
            offset += rows;
        }
        Ok(Self {
            parts,
            out_dim: len,
            in_dim: self.in_dim,
        })
    }

    /// `x W^T` for a contiguous f32 `x` of shape `(rows, in)`.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let outs = self
            .parts
            .iter()
            .map(|p| part_matmul_t(&x, p))
            .collect::<Result<Vec<_>>>()?;
        Ok(if outs.len() == 1 {
            outs.into_iter().next().expect("one part")
        } else {
            Tensor::cat(&outs, D::Minus1)?
        })
    }

    /// Rows `ids` (a 1-D tensor of indices) dequantized to f32, shape `(ids, in)`: an
    /// embedding lookup that reads only those rows.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        if self.parts.len() == 1 {
            return Ok(self.parts[0].embedding(ids)?);
        }
        // Several row blocks: look each id up in its block.
        let ids = ids.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            if id as usize >= self.out_dim {
                return Err(Error::Invalid(format!(
                    "row {id} of a quantized weight with {} rows",
                    self.out_dim
                )));
            }
            let mut offset = 0;
            for p in &self.parts {
                let n = p.shape().dims()[0];
                if (id as usize) < offset + n {
                    let local = Tensor::new(&[id - offset as u32], &Device::Cpu)?;
                    rows.push(p.embedding(&local)?);
                    break;
                }
                offset += n;
            }
        }
        Ok(Tensor::cat(&rows, 0)?)
    }
}

/// `x W^T` for one block of rows: llama.cpp's arithmetic for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q3_K,
/// Q4_K, Q5_K and Q6_K on CPUs with AVX2, and for Q2_K on CPUs with AVX-512 (see
/// [`super::kernels::qmatmul`]), candle's quantized matmul otherwise
/// (other formats, other CPUs: candle's CPU dot products follow ggml's AVX2 `vec_dot`s, up
/// to the rounding of exact ties in the activations).
fn part_matmul_t(x: &Tensor, w: &QTensor) -> Result<Tensor> {
    let format = match w.dtype() {
        GgmlDType::Q4_0 => Some(WeightFormat::Q4_0),
        GgmlDType::Q2K => Some(WeightFormat::Q2K),
        GgmlDType::Q4_1 => Some(WeightFormat::Q4_1),
        GgmlDType::Q8_0 => Some(WeightFormat::Q8_0),
        GgmlDType::Q5_0 => Some(WeightFormat::Q5_0),
        GgmlDType::Q5_1 => Some(WeightFormat::Q5_1),
        GgmlDType::Q3K => Some(WeightFormat::Q3K),
        GgmlDType::Q4K => Some(WeightFormat::Q4K),
        GgmlDType::Q5K => Some(WeightFormat::Q5K),
        GgmlDType::Q6K => Some(WeightFormat::Q6K),
        _ => None,
    };
    if let (Some(format), true, DType::F32) = (format, qmatmul::available(), x.dtype()) {
        let (m, k) = x.dims2()?;
        let n = w.shape().dims()[0];
        let data = w.data()?;
        let (storage, layout) = x.storage_and_layout();
        if let Some(xs) = super::kernels::f32_data(&storage, layout).and_then(|d| d.get(..m * k)) {
            if let Some(y) = qmatmul::matmul_t(xs, m, k, &data, n, format) {
                return Ok(Tensor::from_vec(y, (m, n), &Device::Cpu)?);
            }
        }
    }
    Ok(x.apply_op1_no_bwd(w)?)
}

/// One tensor holding the rows of `parts` (all of one block format) in order.
fn merge(parts: &[Arc<QTensor>]) -> Result<Arc<QTensor>> {
    if parts.len() == 1 {
        return Ok(parts[0].clone());
    }
    let dtype = parts[0].dtype();
    let cols = parts[0].shape().dims()[1];
    let total = parts.iter().map(|p| p.storage_size_in_bytes()).sum();
    let mut buf = AlignedBytes::new(total);
    let mut at = 0;
    let mut rows = 0;
    for p in parts {
        let data = p.data()?;
        buf.bytes_mut()[at..at + data.len()].copy_from_slice(&data);
        at += data.len();
        rows += p.shape().dims()[0];
    }
    let storage = QStorage::from_data(Cow::Borrowed(buf.bytes()), &Device::Cpu, dtype)?;
    Ok(Arc::new(QTensor::new(storage, (rows, cols))?))
}

/// Rows `start..start + len` of `t` (each row is a whole number of blocks, so a byte range).
fn slice_rows(t: &QTensor, start: usize, len: usize) -> Result<QTensor> {
    let (rows, cols) = t.shape().dims2()?;
    let data = t.data()?;
    let row_bytes = data.len() / rows;
    let src = &data[start * row_bytes..(start + len) * row_bytes];
    let mut buf = AlignedBytes::new(src.len());
    buf.bytes_mut().copy_from_slice(src);
    let storage = QStorage::from_data(Cow::Borrowed(buf.bytes()), &Device::Cpu, t.dtype())?;
    Ok(QTensor::new(storage, (len, cols))?)
}

/// A byte buffer aligned for any block type: candle reinterprets the bytes as blocks and
/// asserts their alignment, which a plain `Vec<u8>` does not promise.
struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the words cover at least `len` initialized bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, with unique access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }
}
