//! Each building block against PyTorch / `transformers` (fixtures from
//! `scripts/reference/make_fixtures.py`), at 1e-5 absolute unless stated.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use ferroformer::nn::mask::{attention_bias, MASKED};
use ferroformer::nn::*;

const TOL: f32 = 1e-5;

#[test]
fn sinusoidal_encoding_matches_formula() {
    let f = Fixture::load("sinusoidal.safetensors");
    let pe = SinusoidalPositionalEncoding::new(16, 50, DType::F32, &Device::Cpu).unwrap();
    assert_close("sinusoidal table", pe.table(), &f.io("pe"), 1e-6);
    // A position beyond the table is an error, not a wrap or panic.
    let err = pe.encoding(45, 10).unwrap_err().to_string();
    assert!(err.contains("position 54") && err.contains("50"), "{err}");
}

fn mha() -> (Fixture, MultiHeadAttention) {
    let f = Fixture::load("mha.safetensors");
    let cfg = AttentionConfig::new(16, 4).unwrap();
    let attn =
        MultiHeadAttention::load(&f.weights(), &cfg, &AttentionNames::torch("", &cfg)).unwrap();
    (f, attn)
}

fn bias(mask: Option<&Tensor>, causal: bool, b: usize, q: usize, k: usize) -> Option<Tensor> {
    attention_bias(mask, causal, b, q, k, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn multihead_attention_with_padding_mask() {
    let (f, attn) = mha();
    let x = f.io("x");
    let mask = f.io("mask");
    let plain = attn.forward(&x, AttentionContext::default()).unwrap();
    assert_close("no mask", &plain.output, &f.io("plain_out"), TOL);

    let b = bias(Some(&mask), false, 3, 7, 7);
    let out = attn
        .forward(
            &x,
            AttentionContext {
                bias: b.as_ref(),
                mode: Mode::INFERENCE.with_weights(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_close("padded output", &out.output, &f.io("padded_out"), TOL);
    assert_close(
        "padded weights",
        out.weights.as_ref().unwrap(),
        &f.io("padded_weights"),
        TOL,
    );
}

#[test]
fn multihead_attention_with_causal_and_padding_mask() {
    let (f, attn) = mha();
    let x = f.io("x");
    let mask = f.io("mask");
    let b = bias(Some(&mask), true, 3, 7, 7);
    let out = attn
        .forward(
            &x,
            AttentionContext {
                bias: b.as_ref(),
                mode: Mode::INFERENCE.with_weights(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_close("causal output", &out.output, &f.io("causal_out"), TOL);
    // Without weights requested, the fused CPU kernel runs; it must agree too.
    let fused = attn
        .forward(
            &x,
            AttentionContext {
                bias: b.as_ref(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_close(
        "causal output (fused kernel)",
        &fused.output,
        &f.io("causal_out"),
        TOL,
    );
    assert_close(
        "causal weights",
        out.weights.as_ref().unwrap(),
        &f.io("causal_weights"),
        TOL,
    );
}

#[test]
fn cross_attention_with_left_padded_memory() {
    let (f, attn) = mha();
    let q = f.io("query");
    let mem = f.io("memory");
    let b = bias(Some(&f.io("memory_mask")), false, 3, 5, 9);
    let out = attn
        .forward(
            &q,
            AttentionContext {
                memory: Some(&mem),
                bias: b.as_ref(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_close("cross output", &out.output, &f.io("cross_out"), TOL);
}

#[test]
fn attention_batched_equals_unbatched() {
    let (f, attn) = mha();
    let x = f.io("x");
    let mask = f.io("mask");
    for causal in [false, true] {
        let b = bias(Some(&mask), causal, 3, 7, 7);
        let batched = attn
            .forward(
                &x,
                AttentionContext {
                    bias: b.as_ref(),
                    ..Default::default()
                },
            )
            .unwrap()
            .output;
        for (i, len) in lengths(&mask).into_iter().enumerate() {
            let alone_in = row_prefix(&x, i, len);
            let cb = bias(None, causal, 1, len, len);
            let alone = attn
                .forward(
                    &alone_in,
                    AttentionContext {
                        bias: cb.as_ref(),
                        ..Default::default()
                    },
                )
                .unwrap()
                .output;
            assert_close(
                &format!("row {i} causal={causal}"),
                &row_prefix(&batched, i, len),
                &alone,
                TOL,
            );
        }
    }
}

#[test]
fn attention_kv_cache_matches_full_pass() {
    let (f, attn) = mha();
    let x = f.io("x");
    let full_bias = bias(None, true, 3, 7, 7);
    let full = attn
        .forward(
            &x,
            AttentionContext {
                bias: full_bias.as_ref(),
                ..Default::default()
            },
        )
        .unwrap()
        .output;
    let mut cache = KvCache::new();
    let mut steps = Vec::new();
    // Prefill 4 tokens, then one at a time.
    let prefill = x.narrow(1, 0, 4).unwrap();
    let pb = bias(None, true, 3, 4, 4);
    steps.push(
        attn.forward(
            &prefill,
            AttentionContext {
                bias: pb.as_ref(),
                cache: Some(&mut cache),
                ..Default::default()
            },
        )
        .unwrap()
        .output,
    );
    for t in 4..7 {
        let xt = x.narrow(1, t, 1).unwrap();
        steps.push(
            attn.forward(
                &xt,
                AttentionContext {
                    cache: Some(&mut cache),
                    ..Default::default()
                },
            )
            .unwrap()
            .output,
        );
    }
    assert_eq!(cache.len(), 7);
    let incremental = Tensor::cat(&steps, 1).unwrap();
    assert_close("kv cache", &incremental, &full, TOL);
}

fn layer(
    file: &str,
    norm_first: bool,
    cross: bool,
    act: Activation,
) -> (Fixture, TransformerLayer) {
    let f = Fixture::load(file);
    let cfg = LayerConfig::standard(16, 4, 32, 0.0, act, norm_first, 1e-5, cross).unwrap();
    let l = TransformerLayer::load(&f.weights(), &cfg, &LayerNames::torch(&cfg)).unwrap();
    (f, l)
}

#[test]
fn encoder_layer_post_and_pre_norm() {
    for (file, norm_first) in [
        ("encoder_layer_post.safetensors", false),
        ("encoder_layer_pre.safetensors", true),
    ] {
        let (f, l) = layer(file, norm_first, false, Activation::Relu);
        let x = f.io("x");
        let mask = f.io("mask");
        let b = bias(Some(&mask), false, 3, 7, 7);
        let out = l
            .forward(
                &x,
                LayerContext {
                    self_bias: b.as_ref(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_close(file, &out.hidden, &f.io("out"), TOL);
        for (i, len) in lengths(&mask).into_iter().enumerate() {
            let alone = l
                .forward(&row_prefix(&x, i, len), LayerContext::default())
                .unwrap()
                .hidden;
            assert_close(
                &format!("{file} row {i} alone"),
                &row_prefix(&out.hidden, i, len),
                &alone,
                TOL,
            );
        }
    }
}

#[test]
fn decoder_layer_post_and_pre_norm() {
    for (file, norm_first) in [
        ("decoder_layer_post.safetensors", false),
        ("decoder_layer_pre.safetensors", true),
    ] {
        let (f, l) = layer(file, norm_first, true, Activation::Gelu);
        let (tgt, mem) = (f.io("tgt"), f.io("memory"));
        let (tmask, mmask) = (f.io("tgt_mask"), f.io("memory_mask"));
        let sb = bias(Some(&tmask), true, 3, 5, 5);
        let mb = bias(Some(&mmask), false, 3, 5, 7);
        let out = l
            .forward(
                &tgt,
                LayerContext {
                    self_bias: sb.as_ref(),
                    memory: Some(&mem),
                    memory_bias: mb.as_ref(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_close(file, &out.hidden, &f.io("out"), TOL);
        let (tl, ml) = (lengths(&tmask), lengths(&mmask));
        for i in 0..3 {
            let t = row_prefix(&tgt, i, tl[i]);
            let m = row_prefix(&mem, i, ml[i]);
            let cb = bias(None, true, 1, tl[i], tl[i]);
            let alone = l
                .forward(
                    &t,
                    LayerContext {
                        self_bias: cb.as_ref(),
                        memory: Some(&m),
                        ..Default::default()
                    },
                )
                .unwrap()
                .hidden;
            assert_close(
                &format!("{file} row {i} alone"),
                &row_prefix(&out.hidden, i, tl[i]),
                &alone,
                TOL,
            );
        }
    }
}

#[test]
fn rope_matches_transformers_llama() {
    let f = Fixture::load("rope.safetensors");
    let pos = f.io("position_ids");
    let half = RotaryEmbedding::new(
        8,
        64,
        10000.0,
        RopeLayout::HalfSplit,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let t = half.tables(&pos, Arithmetic::Reference).unwrap();
    assert_close(
        "q half-split",
        &t.apply(&f.io("q"), Arithmetic::Reference).unwrap(),
        &f.io("q_rot"),
        TOL,
    );
    assert_close(
        "k half-split",
        &t.apply(&f.io("k"), Arithmetic::Reference).unwrap(),
        &f.io("k_rot"),
        TOL,
    );
    let inter = RotaryEmbedding::new(
        8,
        64,
        10000.0,
        RopeLayout::Interleaved,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let ti = inter.tables(&pos, Arithmetic::Reference).unwrap();
    assert_close(
        "q interleaved",
        &ti.apply(&f.io("q"), Arithmetic::Reference).unwrap(),
        &f.io("q_interleaved"),
        TOL,
    );
    // The differentiable path (taken while tracking gradients) agrees with the fused kernel.
    let qv = Var::from_tensor(&f.io("q")).unwrap();
    assert_close(
        "q half-split (grad path)",
        &t.apply(qv.as_tensor(), Arithmetic::Reference).unwrap(),
        &f.io("q_rot"),
        TOL,
    );
    assert_close(
        "q interleaved (grad path)",
        &ti.apply(qv.as_tensor(), Arithmetic::Reference).unwrap(),
        &f.io("q_interleaved"),
        TOL,
    );
    // Beyond the table: a clear error.
    let far = Tensor::new(&[[70u32]], &Device::Cpu).unwrap();
    assert!(half
        .tables(&far, Arithmetic::Reference)
        .unwrap_err()
        .to_string()
        .contains("position 70"));
}

#[test]
fn rmsnorm_matches_llama() {
    let f = Fixture::load("rmsnorm.safetensors");
    let w = Weights::from_safetensors(&[&f.path], DType::F32, &Device::Cpu).unwrap();
    let norm = Norm::load(&w, 16, &NormConfig::rms_norm(1e-6), "model").unwrap();
    assert_close(
        "rmsnorm",
        &norm.forward(&f.io("x")).unwrap(),
        &f.io("out"),
        TOL,
    );
    let xv = Var::from_tensor(&f.io("x")).unwrap();
    assert_close(
        "rmsnorm (grad path)",
        &norm.forward(xv.as_tensor()).unwrap(),
        &f.io("out"),
        TOL,
    );
}

#[test]
fn swiglu_matches_llama_mlp() {
    let f = Fixture::load("swiglu.safetensors");
    let ffn = FeedForward::load(
        &f.weights(),
        &FeedForwardConfig::swiglu(16, 40),
        &FeedForwardNames::gated("gate_proj", "up_proj", "down_proj", false),
    )
    .unwrap();
    assert_close(
        "swiglu",
        &ffn.forward(&f.io("x"), Mode::INFERENCE).unwrap(),
        &f.io("out"),
        TOL,
    );
}

use ferroformer::Weights;

/// Grouped-query attention equals multi-head attention whose key/value projections repeat
/// each shared head for its group of query heads — on both the fused and composed paths.
#[test]
fn grouped_query_attention_equals_repeated_kv_heads() {
    use std::collections::HashMap;
    let dev = Device::Cpu;
    let (d, heads, kv_heads, hd) = (16, 4, 2, 4);
    let t = |shape: (usize, usize), seed: f64| {
        Tensor::arange(0f32, (shape.0 * shape.1) as f32, &dev)
            .unwrap()
            .affine(0.37, seed)
            .unwrap()
            .sin()
            .unwrap()
            .reshape(shape)
            .unwrap()
    };
    let (q, k, v, o) = (
        t((d, d), 0.1),
        t((kv_heads * hd, d), 0.2),
        t((kv_heads * hd, d), 0.3),
        t((d, d), 0.4),
    );
    let repeat = |w: &Tensor| {
        let per_head: Vec<Tensor> = (0..heads)
            .map(|h| w.narrow(0, (h / 2) * hd, hd).unwrap())
            .collect();
        Tensor::cat(&per_head, 0).unwrap()
    };
    let weights = |k: Tensor, v: Tensor| {
        let m: HashMap<String, Tensor> = [
            ("q.weight", q.clone()),
            ("k.weight", k),
            ("v.weight", v),
            ("o.weight", o.clone()),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        Weights::from_tensors(m, DType::F32, &dev)
    };
    let mut gqa_cfg = AttentionConfig::new(d, heads)
        .unwrap()
        .with_kv_heads(kv_heads)
        .unwrap();
    gqa_cfg.qkv_bias = false;
    gqa_cfg.out_bias = false;
    let mut mha_cfg = gqa_cfg.clone();
    mha_cfg.num_kv_heads = heads;
    let names = |c: &AttentionConfig| AttentionNames::separate("q", "k", "v", "o", c);
    let gqa = MultiHeadAttention::load(&weights(k.clone(), v.clone()), &gqa_cfg, &names(&gqa_cfg))
        .unwrap();
    let mha =
        MultiHeadAttention::load(&weights(repeat(&k), repeat(&v)), &mha_cfg, &names(&mha_cfg))
            .unwrap();
    let x = Tensor::randn(0f32, 1f32, (2, 5, d), &dev).unwrap();
    let b = bias(None, true, 2, 5, 5);
    for need_weights in [false, true] {
        let ctx = || AttentionContext {
            bias: b.as_ref(),
            mode: Mode {
                need_weights,
                ..Mode::INFERENCE
            },
            ..Default::default()
        };
        let a = gqa.forward(&x, ctx()).unwrap().output;
        let e = mha.forward(&x, ctx()).unwrap().output;
        assert_close(
            &format!("GQA vs repeated MHA (need_weights={need_weights})"),
            &a,
            &e,
            1e-6,
        );
    }
}

/// An additive position bias (T5, ALiBi) is added to the scores of every head.
#[test]
fn position_bias_shifts_scores() {
    let (f, attn) = mha();
    let x = f.io("x");
    // A bias that forbids every key but the first equals attending only to key 0.
    let mut data = vec![MASKED; 4 * 7 * 7];
    for (i, v) in data.iter_mut().enumerate() {
        if i % 7 == 0 {
            *v = 0.0;
        }
    }
    let pb = Tensor::from_vec(data, (1, 4, 7, 7), &Device::Cpu).unwrap();
    let out = attn
        .forward(
            &x,
            AttentionContext {
                position_bias: Some(&pb),
                ..Default::default()
            },
        )
        .unwrap()
        .output;
    let only_first = attn
        .forward(&x.narrow(1, 0, 1).unwrap(), AttentionContext::default())
        .unwrap()
        .output;
    for t in 0..7 {
        assert_close(
            &format!("position {t}"),
            &out.narrow(1, t, 1).unwrap(),
            &only_first,
            1e-5,
        );
    }
}

/// The one-pass training kernels (GELU-tanh, RMSNorm, LayerNorm, softmax) give the same
/// gradients as the same functions composed from candle's differentiable ops.
#[test]
fn training_kernels_match_composed_gradients() {
    use candle_core::D;
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.5, (3, 5, 16), &dev).unwrap()).unwrap();
    let wts = Tensor::randn(0f32, 1., (3, 5, 16), &dev).unwrap();
    let gamma = Var::from_tensor(&Tensor::randn(1f32, 0.2, 16, &dev).unwrap()).unwrap();
    let beta = Var::from_tensor(&Tensor::randn(0f32, 0.2, 16, &dev).unwrap()).unwrap();
    let grad_of = |y: Tensor, v: &Var| {
        let g = (y * &wts).unwrap().sum_all().unwrap().backward().unwrap();
        g.get(v.as_tensor()).unwrap().clone()
    };
    let xt = x.as_tensor();
    // GELU (tanh): candle's composed backward.
    let ours = grad_of(Activation::GeluTanh.forward(xt).unwrap(), &x);
    let composed = grad_of(xt.gelu().unwrap(), &x);
    assert_close("gelu-tanh grad", &ours, &composed, 1e-4);
    // GELU (erf, BERT's): candle's composed backward of its exact GELU.
    let ours = grad_of(Activation::Gelu.forward(xt).unwrap(), &x);
    let composed = grad_of(xt.gelu_erf().unwrap(), &x);
    assert_close("gelu-erf grad", &ours, &composed, 1e-4);
    assert_close(
        "gelu-erf",
        &Activation::Gelu.forward(xt).unwrap(),
        &xt.gelu_erf().unwrap(),
        1e-5,
    );
    // Softmax.
    let ours = grad_of(
        ferroformer::nn::attention::softmax_last_dim(xt).unwrap(),
        &x,
    );
    let composed = grad_of(candle_nn::ops::softmax(xt, D::Minus1).unwrap(), &x);
    assert_close("softmax grad", &ours, &composed, 1e-5);
    // Cross-entropy against class ids (rows of the same x as logits).
    let labels = Tensor::new(&[3u32, 0, 15, 7, 9, 1, 2, 8, 11, 4, 6, 5, 13, 12, 10], &dev).unwrap();
    let logits = xt.reshape((15, 16)).unwrap();
    let ours = ferroformer::nn::loss::cross_entropy(&logits, &labels).unwrap();
    let composed = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    assert_close("cross-entropy", &ours, &composed, 1e-5);
    let g1 = (ours * 3.0).unwrap().backward().unwrap();
    let g2 = (composed * 3.0).unwrap().backward().unwrap();
    assert_close(
        "cross-entropy grad",
        g1.get(xt).unwrap(),
        g2.get(xt).unwrap(),
        1e-6,
    );
    let bad = Tensor::new(&[16u32; 15], &dev).unwrap();
    let err = ferroformer::nn::loss::cross_entropy(&logits, &bad).unwrap_err();
    assert!(err.to_string().contains("label 16"), "{err}");
    // LayerNorm and RMSNorm, gradients for the input and the weight.
    let composed_ln = |x: &Tensor| {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let c = x.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        c.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(gamma.as_tensor())
            .unwrap()
            .broadcast_add(beta.as_tensor())
            .unwrap()
    };
    let composed_rms = |x: &Tensor| {
        let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        x.broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(gamma.as_tensor())
            .unwrap()
    };
    let ln = Norm::new(
        NormKind::LayerNorm,
        gamma.as_tensor().clone(),
        Some(beta.as_tensor().clone()),
        1e-5,
    );
    let rms = Norm::new(NormKind::RmsNorm, gamma.as_tensor().clone(), None, 1e-5);
    for (name, ours_y, comp_y) in [
        ("layer norm", ln.forward(xt).unwrap(), composed_ln(xt)),
        ("rms norm", rms.forward(xt).unwrap(), composed_rms(xt)),
    ] {
        assert_close(&format!("{name} output"), &ours_y, &comp_y, 1e-5);
        let g1 = (ours_y * &wts)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (comp_y * &wts)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (what, v) in [("x", &x), ("weight", &gamma)] {
            assert_close(
                &format!("{name} grad {what}"),
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
                1e-4,
            );
        }
    }
}

/// Sequences packed end to end (no padding) attend only within themselves: each packed
/// segment equals the sequence run alone, on the fused CPU kernel and on the composed path
/// (block-diagonal mask) that gradients and other devices take.
#[test]
fn packed_attention_equals_each_sequence_alone() {
    let (f, attn) = mha();
    let x = f.io("x"); // (3, 7, 16)
    let lengths = [7usize, 3, 5];
    let rows: Vec<Tensor> = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| x.narrow(0, i, 1).unwrap().narrow(1, 0, n).unwrap())
        .collect();
    let packed = Tensor::cat(&rows, 1).unwrap();
    // A Var input is tracked by autograd, which sends the call down the composed path.
    let tracked = Var::from_tensor(&packed).unwrap();
    for (what, input) in [
        ("fused", packed.clone()),
        ("composed", tracked.as_tensor().clone()),
    ] {
        let out = attn
            .forward(
                &input,
                AttentionContext {
                    packed: Some(&lengths),
                    ..Default::default()
                },
            )
            .unwrap()
            .output;
        let mut start = 0;
        for (row, &n) in rows.iter().zip(&lengths) {
            let alone = attn
                .forward(row, AttentionContext::default())
                .unwrap()
                .output;
            assert_close(what, &out.narrow(1, start, n).unwrap(), &alone, TOL);
            start += n;
        }
    }
    let bad = attn.forward(
        &x,
        AttentionContext {
            packed: Some(&lengths),
            ..Default::default()
        },
    );
    assert!(bad.unwrap_err().to_string().contains("packed"));
}

/// Training runs attention as one differentiable op (forward and backward per head block);
/// asking for the attention weights takes the composed candle ops instead. Both give the
/// same output and the same gradients — for the input and every projection — with grouped
/// query heads, rotary positions and a causal + padding mask.
#[test]
fn attention_training_op_matches_composed_gradients() {
    use candle_nn::VarMap;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let w = ferroformer::Weights::from_varmap(&varmap, DType::F32, &dev);
    let cfg = AttentionConfig::new(32, 4)
        .unwrap()
        .with_kv_heads(2)
        .unwrap();
    let attn = MultiHeadAttention::load(&w, &cfg, &AttentionNames::torch("", &cfg)).unwrap();
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 6, 32), &dev).unwrap()).unwrap();
    let mask = Tensor::new(
        &[[1u8, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]],
        &dev,
    )
    .unwrap();
    let b = bias(Some(&mask), true, 3, 6, 6);
    let rope = RotaryEmbedding::new(8, 16, 10_000.0, RopeLayout::HalfSplit, DType::F32, &dev)
        .unwrap()
        .tables_range(3, 0, 6, Arithmetic::Reference)
        .unwrap();
    let wts = Tensor::randn(0f32, 1.0, (3, 6, 32), &dev).unwrap();
    // Without rotary positions the op reads q, k and v straight out of the fused projection.
    for rope in [Some(&rope), None] {
        let run = |need_weights: bool| {
            let out = attn
                .forward(
                    x.as_tensor(),
                    AttentionContext {
                        bias: b.as_ref(),
                        rope,
                        mode: Mode {
                            need_weights,
                            ..Mode::train()
                        },
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(out.weights.is_some(), need_weights);
            let grads = (&out.output * &wts)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (out.output, grads)
        };
        let (op_out, op_grads) = run(false);
        let (composed_out, composed_grads) = run(true);
        assert_close("output", &op_out, &composed_out, 1e-5);
        let vars = varmap.all_vars();
        assert!(vars.len() >= 4, "q/k/v/out projections are trainable");
        for (i, v) in vars.iter().chain([&x]).enumerate() {
            let got = op_grads.get(v.as_tensor()).expect("op gradient");
            let want = composed_grads
                .get(v.as_tensor())
                .expect("composed gradient");
            assert_close(&format!("gradient {i} {:?}", v.dims()), got, want, 1e-4);
        }
    }
}
