//! Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3 (text) and Phi-3 checkpoints loaded through
//! `causal_lm_from_dir` (`config.json`'s `model_type` picks the family) against
//! `transformers`: tiny random models whose sliding windows are shorter than the inputs,
//! Gemma's soft caps low enough to bend the scores, Phi-3's partial rotary, Phi-3's
//! `longrope` with inputs on both sides of its original context. Logits of one row alone,
//! of a left-padded batch, and of cached decoding, at 1e-4 (f32). Fixtures:
//! tests/fixtures/families/<family>/ from scripts/reference/causal_lm_families_fixtures.py.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use ferroformer::arch::DecoderOnlyTransformer;
use ferroformer::models::auto::causal_lm_from_dir;
use ferroformer::nn::Pass;

const TOL: f32 = 1e-4;

fn dir(family: &str) -> PathBuf {
    fixtures().join("families").join(family)
}

fn load(dir: &Path) -> ferroformer::Result<DecoderOnlyTransformer> {
    causal_lm_from_dir(dir, DType::F32, &Device::Cpu)
}

fn logits(m: &DecoderOnlyTransformer, ids: &Tensor, mask: Option<&Tensor>) -> Tensor {
    m.forward(ids, mask, None, Pass::INFERENCE).unwrap().logits
}

/// Row 0 alone, the left-padded batch (each row against `transformers` and against its own
/// unpadded run), and decoding with the KV cache past the sliding window.
fn check(family: &str) {
    let model = load(&dir(family)).unwrap_or_else(|e| panic!("{family}: {e}"));
    let f = Fixture::load(&format!("families/{family}/io.safetensors"));
    let ids = f.io("input_ids").to_dtype(DType::U32).unwrap();
    let mask = f.io("attention_mask");
    let (_, seq) = ids.dims2().unwrap();
    let want_row0 = f.io("logits_row0");
    assert!(
        max_abs("row 0 logits", &want_row0) > 0.5,
        "{family}: flat logits"
    );
    let row0 = logits(&model, &row_prefix(&ids, 0, seq), None);
    assert_close(&format!("{family}: row 0"), &row0, &want_row0, TOL);

    let padded = logits(&model, &ids, Some(&mask));
    let want = f.io("logits_padded");
    for (i, len) in lengths(&mask).into_iter().enumerate() {
        let got = row_suffix(&padded, i, len);
        assert_close(
            &format!("{family}: left-padded row {i}"),
            &got,
            &row_suffix(&want, i, len),
            TOL,
        );
        let alone = logits(&model, &row_suffix(&ids, i, len), None);
        assert_close(
            &format!("{family}: padded row {i} vs the row alone"),
            &got,
            &alone,
            TOL,
        );
    }

    // Four tokens, then one at a time: the cache grows past the window of 4.
    let mut caches = model.new_caches();
    let ids0 = row_prefix(&ids, 0, seq);
    let mut steps = Vec::new();
    for (start, len) in std::iter::once((0, 4)).chain((4..seq).map(|t| (t, 1))) {
        let out = model
            .forward(
                &ids0.narrow(1, start, len).unwrap(),
                None,
                Some(&mut caches),
                Pass::INFERENCE,
            )
            .unwrap();
        steps.push(out.logits);
    }
    assert_close(
        &format!("{family}: cached decoding"),
        &Tensor::cat(&steps, 1).unwrap(),
        &want_row0,
        TOL,
    );
}

#[test]
fn mistral_matches_transformers() {
    check("mistral");
    let cfg = load(&dir("mistral")).unwrap().config().clone();
    let sw = cfg.stack.sliding_window.expect("mistral: sliding window");
    assert_eq!((sw.window, sw.layers), (4, vec![true; 3]));
}

#[test]
fn qwen2_matches_transformers() {
    check("qwen2");
    // `max_window_layers` 1: the first layer global, the others local.
    let cfg = load(&dir("qwen2")).unwrap().config().clone();
    let sw = cfg.stack.sliding_window.expect("qwen2: sliding window");
    assert_eq!(sw.layers, vec![false, true, true]);
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3");
}

#[test]
fn gemma2_matches_transformers() {
    check("gemma2");
    let cfg = load(&dir("gemma2")).unwrap().config().clone();
    assert_eq!(cfg.final_logit_softcap, Some(3.0));
    assert_eq!(cfg.stack.layer.self_attention.softcap, Some(2.0));
    assert_eq!(
        cfg.stack.sliding_window.unwrap().layers,
        vec![true, false, true]
    );
}

/// `Gemma2Config`'s defaults when the soft caps are absent (final 30, attention 50); `null`
/// means none; Gemma 3 has none by default.
#[test]
fn gemma_soft_caps_default_as_transformers() {
    let t = edited("gemma2", |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("final_logit_softcapping");
        c.remove("attn_logit_softcapping");
    });
    let cfg = load(t.path()).unwrap().config().clone();
    assert_eq!(cfg.final_logit_softcap, Some(30.0));
    assert_eq!(cfg.stack.layer.self_attention.softcap, Some(50.0));

    let t = edited("gemma2", |c| {
        c["final_logit_softcapping"] = serde_json::Value::Null;
        c["attn_logit_softcapping"] = serde_json::Value::Null;
    });
    let cfg = load(t.path()).unwrap().config().clone();
    assert_eq!(cfg.final_logit_softcap, None);
    assert_eq!(cfg.stack.layer.self_attention.softcap, None);

    let t = edited("gemma3_text", |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("final_logit_softcapping");
        c.remove("attn_logit_softcapping");
    });
    let cfg = load(t.path()).unwrap().config().clone();
    assert_eq!(cfg.final_logit_softcap, None);
    assert_eq!(cfg.stack.layer.self_attention.softcap, None);
}

#[test]
fn gemma3_text_matches_transformers() {
    check("gemma3_text");
}

#[test]
fn phi3_matches_transformers() {
    check("phi3");
    let cfg = load(&dir("phi3")).unwrap().config().clone();
    assert_eq!(cfg.stack.layer.self_attention.rotary_dim, Some(2));
}

/// Phi-3 `longrope` (short factors within the original context of 8 positions, long ones
/// past it, cosines and sines scaled by sqrt(1 + ln 4 / ln 8)) against `transformers`: a
/// short and a long input, left-padded batches, cached decoding that crosses the original
/// context.
#[test]
fn phi3_longrope_matches_transformers() {
    let family = "phi3_longrope";
    let model = load(&dir(family)).unwrap_or_else(|e| panic!("{family}: {e}"));
    let f = Fixture::load(&format!("families/{family}/io.safetensors"));
    let ids = f.io("input_ids").to_dtype(DType::U32).unwrap();
    let (short, long) = (f.io("logits_short"), f.io("logits_long"));
    assert!(max_abs("long logits", &long) > 0.5, "flat logits");
    let got_short = logits(&model, &row_prefix(&ids, 0, 6), None);
    assert_close(
        "longrope: 6 tokens (short factors)",
        &got_short,
        &short,
        TOL,
    );
    let got_long = logits(&model, &row_prefix(&ids, 0, 14), None);
    assert_close("longrope: 14 tokens (long factors)", &got_long, &long, TOL);
    // The first 6 positions of the long pass differ from the short pass: the long factors
    // and not only the positions past 8 changed, so the two tests above test two tables.
    let head = got_long.narrow(1, 0, 6).unwrap();
    assert!(
        max_abs_diff(&head, &got_short) > 1e-2,
        "long factors unused"
    );

    for batch in ["long", "short", "mixed"] {
        let rows = f
            .io(&format!("batch_{batch}_input_ids"))
            .to_dtype(DType::U32)
            .unwrap();
        let mask = f.io(&format!("batch_{batch}_attention_mask"));
        let want = f.io(&format!("batch_{batch}_logits"));
        let got = logits(&model, &rows, Some(&mask));
        for (i, len) in lengths(&mask).into_iter().enumerate() {
            let row = row_suffix(&got, i, len);
            assert_close(
                &format!("longrope: batch {batch}, left-padded row {i}"),
                &row,
                &row_suffix(&want, i, len),
                TOL,
            );
            // Rows on the same side of the original context as their batch's longest row
            // score as they do alone; in the mixed batch the short row takes the long
            // factors, as in `transformers`.
            let alone = logits(&model, &row_suffix(&rows, i, len), None);
            let d = max_abs_diff(&row, &alone);
            if batch == "mixed" && i == 1 {
                assert!(d > 1e-2, "mixed batch: short row unchanged ({d})");
            } else {
                assert!(d <= TOL, "longrope: batch {batch} row {i} vs alone: {d}");
            }
        }
    }

    // A 6-token prompt, then one token at a time to 14: `transformers` switches to the long
    // factors at the step whose position reaches past 8, keeping the prompt's cached keys.
    let mut caches = model.new_caches();
    let ids0 = row_prefix(&ids, 0, 14);
    let mut steps = Vec::new();
    for (start, len) in std::iter::once((0, 6)).chain((6..14).map(|t| (t, 1))) {
        let out = model
            .forward(
                &ids0.narrow(1, start, len).unwrap(),
                None,
                Some(&mut caches),
                Pass::INFERENCE,
            )
            .unwrap();
        steps.push(out.logits);
    }
    assert_close(
        "longrope: cached decoding across the original context",
        &Tensor::cat(&steps, 1).unwrap(),
        &f.io("logits_cached"),
        TOL,
    );
}

/// `longrope` configs that `transformers` rejects or cannot use are errors naming the field.
#[test]
fn bad_longrope_configs_name_the_field() {
    let t = edited("phi3_longrope", |c| {
        c["rope_scaling"]["short_factor"] = serde_json::json!([1.0, 2.0])
    });
    assert_mentions(
        &load_err(&t),
        &["rope_scaling.short_factor", "4", "found 2"],
    );
    let t = edited("phi3_longrope", |c| {
        c["rope_scaling"]["long_factor"] = serde_json::json!([1.0, 0.0, 1.0, 1.0])
    });
    assert_mentions(&load_err(&t), &["rope_scaling.long_factor", "> 0"]);
    let t = edited("phi3_longrope", |c| {
        c["rope_scaling"]["type"] = "dynamic".into()
    });
    assert_mentions(&load_err(&t), &["rope_scaling", "dynamic"]);
    // `su` is Phi-3's old name for longrope.
    let t = edited("phi3_longrope", |c| c["rope_scaling"]["type"] = "su".into());
    load(t.path()).unwrap();
    // Outside Phi-3, longrope without a top-level original context needs a factor.
    let t = edited(
        "qwen3",
        |c| c["rope_scaling"] = serde_json::json!({"rope_type": "longrope", "short_factor": [1.0, 1.0, 1.0, 1.0], "long_factor": [2.0, 2.0, 2.0, 2.0]}),
    );
    assert_mentions(&load_err(&t), &["rope_scaling.factor"]);
}

/// A copy of fixture `family` in a temporary directory with `config.json` edited by `edit`.
fn edited(family: &str, edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(dir(family).join(name), tmp.path().join(name)).unwrap();
    }
    let path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    tmp
}

fn load_err(tmp: &tempfile::TempDir) -> String {
    load(tmp.path()).unwrap_err().to_string()
}

fn assert_mentions(err: &str, wants: &[&str]) {
    for want in wants {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn bad_configs_name_the_field() {
    let t = edited("phi3", |c| {
        c["rope_scaling"] = serde_json::json!({"type": "longrope", "short_factor": [1.0]})
    });
    assert_mentions(&load_err(&t), &["rope_scaling", "longrope", "config.json"]);

    let t = edited("gemma2", |c| {
        c["layer_types"] = serde_json::json!(["sliding_attention", "full_attention"])
    });
    assert_mentions(&load_err(&t), &["layer_types", "2 entries", "3"]);

    let t = edited("gemma2", |c| {
        c["layer_types"][1] = "chunked_attention".into()
    });
    assert_mentions(&load_err(&t), &["layer_types", "chunked_attention"]);

    let t = edited("mistral", |c| c["sliding_window"] = 0.into());
    assert_mentions(&load_err(&t), &["sliding_window"]);

    let t = edited("gemma3_text", |c| {
        c.as_object_mut().unwrap().remove("query_pre_attn_scalar");
    });
    assert_mentions(&load_err(&t), &["query_pre_attn_scalar", "config.json"]);

    let t = edited("gemma3_text", |c| {
        c["use_bidirectional_attention"] = true.into()
    });
    assert_mentions(&load_err(&t), &["use_bidirectional_attention"]);

    let t = edited("gemma2", |c| c["attn_logit_softcapping"] = (-1.0).into());
    assert_mentions(&load_err(&t), &["softcap", "-1"]);
}

#[test]
fn config_contradicting_tensor_shapes_names_the_tensor() {
    // Phi-3: a head width the fused projection does not have.
    let t = edited("phi3", |c| c["num_key_value_heads"] = 4.into());
    assert_mentions(&load_err(&t), &["qkv_proj"]);
    // Gemma 2: head_dim 8 in the file; 4 makes q_proj (16, 16) instead of (32, 16).
    let t = edited("gemma2", |c| c["head_dim"] = 4.into());
    assert_mentions(&load_err(&t), &["q_proj"]);
    // Qwen3 q/k norms have head_dim values.
    let t = edited("qwen3", |c| c["intermediate_size"] = 20.into());
    assert_mentions(&load_err(&t), &["gate_proj"]);
}
