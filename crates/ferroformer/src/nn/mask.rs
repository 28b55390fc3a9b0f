//! Attention masks, built in one place for every model.
//!
//! Conventions follow Hugging Face: an *attention mask* is `(batch, key_len)` with 1 for a
//! token to attend to and 0 for padding, on either side. Attention layers take an *additive
//! bias* of shape `(batch or 1, 1, query_len, key_len)`: 0 where attention is allowed and a
//! large negative number where it is not. The negative value is finite (`f32::MIN`, as
//! `transformers` uses `finfo.min`) so a fully masked row (a padding query under a causal
//! mask) gives uniform weights instead of NaN; every row with at least one visible key gets
//! exactly the same result as with `-inf`.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The value written where attention is not allowed.
pub const MASKED: f32 = f32::MIN;

/// The value [`sliding_window_bias`] writes for a real key that has left a query's window:
/// masked like [`MASKED`] (every consumer treats a bias ≤ `f32::MIN / 2` as masked), but
/// distinct from padding, so that llama.cpp's attention loop can count key indices from a
/// row's first real key (its cache cell 0) rather than from the first key in the window.
pub const OUTSIDE_WINDOW: f32 = f32::MIN / 2.0;

/// `(1, 1, q_len, k_len)` with 1 where query `i` may see key `j`: `j <= i + (k_len - q_len)`.
///
/// With a KV cache, the `q_len` new queries sit at the end of the `k_len` keys.
pub fn causal_allowed(q_len: usize, k_len: usize, device: &Device) -> Result<Tensor> {
    if k_len < q_len {
        return Err(Error::Invalid(format!(
            "causal mask: key length {k_len} is shorter than query length {q_len}"
        )));
    }
    let past = k_len - q_len;
    let data: Vec<u8> = (0..q_len)
        .flat_map(|i| (0..k_len).map(move |j| u8::from(j <= i + past)))
        .collect();
    Ok(Tensor::from_vec(data, (1, 1, q_len, k_len), device)?)
}

/// `(1, 1, q_len, k_len)` with 1 where query `i` may see key `j` under causality and a sliding
/// window of `window` keys (the query's own included): `j <= i + past` and
/// `i + past - j < window`, llama.cpp's `LLAMA_SWA_TYPE_STANDARD` and `transformers`'
/// `sliding_window` mask.
pub fn sliding_window_allowed(
    q_len: usize,
    k_len: usize,
    window: usize,
    device: &Device,
) -> Result<Tensor> {
    if k_len < q_len {
        return Err(Error::Invalid(format!(
            "causal mask: key length {k_len} is shorter than query length {q_len}"
        )));
    }
    if window == 0 {
        return Err(Error::config("sliding_window", "must be > 0"));
    }
    let past = k_len - q_len;
    let data: Vec<u8> = (0..q_len)
        .flat_map(|i| (0..k_len).map(move |j| u8::from(j <= i + past && i + past - j < window)))
        .collect();
    Ok(Tensor::from_vec(data, (1, 1, q_len, k_len), device)?)
}

/// Checks an attention mask `(batch, key_len)` and returns it as `(batch, 1, 1, key_len)` u8.
fn padding_allowed(attention_mask: &Tensor, batch: usize, k_len: usize) -> Result<Tensor> {
    let dims = attention_mask.dims();
    if dims != [batch, k_len] {
        return Err(Error::shape(
            "attention_mask",
            format!("(batch={batch}, key_len={k_len})"),
            dims,
        ));
    }
    let allowed = attention_mask.ne(0f64)?;
    Ok(allowed.reshape((batch, 1, 1, k_len))?)
}

/// Builds the additive attention bias from an optional padding mask and/or causality.
///
/// Returns `None` when nothing is masked (no padding mask, not causal), so layers skip the
/// addition entirely.
pub fn attention_bias(
    attention_mask: Option<&Tensor>,
    causal: bool,
    batch: usize,
    q_len: usize,
    k_len: usize,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let allowed = match (attention_mask, causal) {
        (None, false) => return Ok(None),
        (Some(m), false) => padding_allowed(m, batch, k_len)?,
        (None, true) => {
            if q_len == 1 {
                return Ok(None); // one new query sees every key
            }
            causal_allowed(q_len, k_len, device)?
        }
        (Some(m), true) => {
            let pad = padding_allowed(m, batch, k_len)?;
            let causal = causal_allowed(q_len, k_len, device)?;
            pad.broadcast_mul(&causal)?
        }
    };
    Ok(Some(bias_from_allowed(&allowed, dtype)?))
}

/// The causal bias of [`attention_bias`] for layers that see only the last `window` keys
/// (see [`sliding_window_allowed`]). Left-padded rows count the window in key indices, which
/// differ from the rows' positions by the same offset for every real token, so the window is
/// the same as in the row alone. `None` when nothing is masked (one query over at most
/// `window` keys, no padding).
#[allow(clippy::too_many_arguments)]
pub fn sliding_window_bias(
    attention_mask: Option<&Tensor>,
    window: usize,
    batch: usize,
    q_len: usize,
    k_len: usize,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    if k_len <= window {
        // The window holds every key: the plain causal bias.
        return attention_bias(attention_mask, true, batch, q_len, k_len, dtype, device);
    }
    let window_allowed = sliding_window_allowed(q_len, k_len, window, device)?;
    // Keys outside the window (and past the query) get OUTSIDE_WINDOW, padding MASKED.
    let zeros = Tensor::zeros(window_allowed.shape(), DType::F32, device)?;
    let outside = Tensor::full(OUTSIDE_WINDOW, window_allowed.shape(), device)?;
    let bias = window_allowed.ne(0f64)?.where_cond(&zeros, &outside)?;
    let bias = match attention_mask {
        None => bias,
        Some(m) => {
            let pad = padding_allowed(m, batch, k_len)?;
            let shape = (batch, 1, q_len, k_len);
            let masked = Tensor::full(MASKED, shape, device)?;
            pad.broadcast_as(shape)?
                .ne(0f64)?
                .where_cond(&bias.broadcast_as(shape)?.contiguous()?, &masked)?
        }
    };
    Ok(Some(bias.to_dtype(dtype)?))
}

/// Turns a boolean-like "allowed" tensor (nonzero = attend) into an additive bias.
pub fn bias_from_allowed(allowed: &Tensor, dtype: DType) -> Result<Tensor> {
    let zeros = Tensor::zeros(allowed.shape(), dtype, allowed.device())?;
    let masked = Tensor::full(MASKED, allowed.shape(), allowed.device())?.to_dtype(dtype)?;
    Ok(allowed.ne(0f64)?.where_cond(&zeros, &masked)?)
}

/// Converts PyTorch's `key_padding_mask` convention (`true`/1 = ignore this key) to an
/// attention mask (1 = attend).
pub fn from_key_padding_mask(key_padding_mask: &Tensor) -> Result<Tensor> {
    Ok(key_padding_mask.eq(0f64)?.to_dtype(DType::U8)?)
}

/// Checks that an additive bias can be broadcast to `(batch, heads, q_len, k_len)`.
pub fn check_bias(
    what: &str,
    bias: &Tensor,
    batch: usize,
    heads: usize,
    q_len: usize,
    k_len: usize,
) -> Result<()> {
    let d = bias.dims();
    let ok = d.len() == 4
        && (d[0] == 1 || d[0] == batch)
        && (d[1] == 1 || d[1] == heads)
        && (d[2] == 1 || d[2] == q_len)
        && d[3] == k_len;
    if !ok {
        return Err(Error::shape(
            what,
            format!("(1 or {batch}, 1 or {heads}, 1 or {q_len}, {k_len})"),
            d,
        ));
    }
    Ok(())
}

/// Position ids `(batch, seq)` for left- or right-padded rows: each row counts its real
/// tokens from 0 (`cumsum(mask) - 1`, padding clamped to 0). With a KV cache, pass the mask
/// over all keys and keep the last columns.
pub fn position_ids_from_mask(attention_mask: &Tensor) -> Result<Tensor> {
    let (b, s) = attention_mask.dims2()?;
    let m: Vec<Vec<f32>> = attention_mask.to_dtype(DType::F32)?.to_vec2()?;
    let mut ids = Vec::with_capacity(b * s);
    for row in &m {
        let mut count = 0u32;
        for &v in row.iter().take(s) {
            if v != 0.0 {
                ids.push(count);
                count += 1;
            } else {
                ids.push(0);
            }
        }
    }
    Ok(Tensor::from_vec(ids, (b, s), attention_mask.device())?)
}

/// The additive bias `(1, 1, n, n)` that lets sequences packed end to end (lengths in
/// order, summing to `n`) attend only within themselves: 0 inside each diagonal block,
/// [`MASKED`] elsewhere.
pub fn packed_bias(lengths: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    let n: usize = lengths.iter().sum();
    let mut seq_of = Vec::with_capacity(n);
    for (i, &len) in lengths.iter().enumerate() {
        seq_of.extend(std::iter::repeat_n(i, len));
    }
    let mut data = vec![MASKED; n * n];
    for (r, &sr) in seq_of.iter().enumerate() {
        for (c, &sc) in seq_of.iter().enumerate() {
            if sr == sc {
                data[r * n + c] = 0.0;
            }
        }
    }
    Ok(Tensor::from_vec(data, (1, 1, n, n), device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: &Tensor) -> Vec<Vec<u8>> {
        let (_, _, q, k) = t.dims4().unwrap();
        t.reshape((q, k)).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn sliding_window_keeps_the_last_window_keys() {
        let t = sliding_window_allowed(4, 6, 3, &Device::Cpu).unwrap();
        // Two cached keys: query i sits at key position i + 2.
        assert_eq!(
            rows(&t),
            vec![
                vec![1, 1, 1, 0, 0, 0],
                vec![0, 1, 1, 1, 0, 0],
                vec![0, 0, 1, 1, 1, 0],
                vec![0, 0, 0, 1, 1, 1],
            ]
        );
        assert!(sliding_window_allowed(1, 2, 0, &Device::Cpu).is_err());
        // A window that holds every key is the causal mask.
        let c = causal_allowed(3, 5, &Device::Cpu).unwrap();
        let w = sliding_window_allowed(3, 5, 5, &Device::Cpu).unwrap();
        assert_eq!(rows(&c), rows(&w));
    }

    #[test]
    fn sliding_window_bias_masks_padding_and_old_keys() {
        let mask = Tensor::new(&[[0u8, 1, 1, 1], [1, 1, 1, 1]], &Device::Cpu).unwrap();
        let b = sliding_window_bias(Some(&mask), 2, 2, 1, 4, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        // Padding is MASKED, a real key outside the window OUTSIDE_WINDOW (both masked).
        let (m, o) = (MASKED, OUTSIDE_WINDOW);
        assert_eq!(v, vec![m, o, 0.0, 0.0, o, o, 0.0, 0.0]);
        assert!(o <= f32::MIN / 2.0 && o > m);
        // One query within the window and no padding: nothing to mask.
        assert!(
            sliding_window_bias(None, 8, 1, 1, 4, DType::F32, &Device::Cpu)
                .unwrap()
                .is_none()
        );
    }
}
