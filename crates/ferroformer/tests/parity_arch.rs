//! Architectures and families against PyTorch / `transformers`: `nn.Transformer` forward and
//! gradients, a tiny `GPT2LMHeadModel` and a tiny `BertModel`, loaded through the shared
//! blocks. Tolerance 1e-4 absolute (f32).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use common::*;
use ferroformer::arch::{Transformer, TransformerConfig};
use ferroformer::models::{BertModel, Gpt2LmHeadModel};
use ferroformer::nn::mask::attention_bias;
use ferroformer::nn::Pass;
use ferroformer::Weights;

const TOL: f32 = 1e-4;

fn tiny_transformer_config() -> TransformerConfig {
    TransformerConfig {
        d_model: 16,
        nhead: 4,
        num_encoder_layers: 2,
        num_decoder_layers: 2,
        dim_feedforward: 32,
        dropout: 0.0,
        ..Default::default()
    }
}

/// The fixture's parameters as trainable variables, keyed by their PyTorch names.
fn varmap_from_fixture(f: &Fixture) -> (VarMap, HashMap<String, Var>) {
    let varmap = VarMap::new();
    let mut vars = HashMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for (name, t) in &f.tensors {
            if let Some(param) = name.strip_prefix("model.") {
                let var = Var::from_tensor(t).unwrap();
                data.insert(param.to_string(), var.clone());
                vars.insert(param.to_string(), var);
            }
        }
    }
    (varmap, vars)
}

#[test]
fn nn_transformer_forward_matches_pytorch() {
    let f = Fixture::load("transformer.safetensors");
    let model = Transformer::load(&f.weights(), &tiny_transformer_config()).unwrap();
    let (src, tgt) = (f.io("src"), f.io("tgt"));
    let (sm, tm) = (f.io("src_mask"), f.io("tgt_mask"));
    let out = model
        .forward(&src, &tgt, Some(&sm), Some(&tm), true, Pass::INFERENCE)
        .unwrap();
    assert_close("nn.Transformer output", &out, &f.io("out"), TOL);

    // Each padded row equals its unpadded run.
    let (sl, tl) = (lengths(&sm), lengths(&tm));
    for i in 0..3 {
        let alone = model
            .forward(
                &row_prefix(&src, i, sl[i]),
                &row_prefix(&tgt, i, tl[i]),
                None,
                None,
                true,
                Pass::INFERENCE,
            )
            .unwrap();
        assert_close(
            &format!("row {i} alone"),
            &row_prefix(&out, i, tl[i]),
            &alone,
            TOL,
        );
    }
}

#[test]
fn nn_transformer_gradients_match_pytorch() {
    let f = Fixture::load("transformer.safetensors");
    let (varmap, vars) = varmap_from_fixture(&f);
    let w = Weights::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Transformer::load(&w, &tiny_transformer_config()).unwrap();
    // No variable was created behind our back: every parameter came from the fixture.
    assert_eq!(varmap.all_vars().len(), vars.len());
    let out = model
        .forward(
            &f.io("src"),
            &f.io("tgt"),
            Some(&f.io("src_mask")),
            Some(&f.io("tgt_mask")),
            true,
            Pass::TRAIN,
        )
        .unwrap();
    assert_close("training-mode output", &out, &f.io("out"), TOL);
    let loss = (out * f.io("loss_weights")).unwrap().sum_all().unwrap();
    assert_close("loss", &loss.reshape(1).unwrap(), &f.io("loss"), 1e-3);
    let grads = loss.backward().unwrap();
    let mut checked = 0;
    for (name, var) in &vars {
        let expected = f.io(&format!("grad.{name}"));
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_close(&format!("grad {name}"), got, &expected, TOL);
        checked += 1;
    }
    assert_eq!(
        checked,
        2 * 12 + 2 * 18 + 4,
        "every parameter's gradient is compared"
    );
}

#[test]
fn tiny_gpt2_logits_match_transformers() {
    let model =
        Gpt2LmHeadModel::from_dir(&fixtures().join("tiny-gpt2"), DType::F32, &Device::Cpu).unwrap();
    let f = Fixture::load("tiny-gpt2-io.safetensors");
    let ids = f.io("input_ids");
    let mask = f.io("attention_mask");
    let row0 = model
        .forward(&row_prefix(&ids, 0, 9), None, None)
        .unwrap()
        .logits;
    assert_close("row 0 logits", &row0, &f.io("logits_row0"), TOL);

    let padded = model.forward(&ids, Some(&mask), None).unwrap().logits;
    let expected = f.io("logits_padded");
    for (i, len) in lengths(&mask).into_iter().enumerate() {
        let got = row_suffix(&padded, i, len);
        assert_close(
            &format!("left-padded row {i}"),
            &got,
            &row_suffix(&expected, i, len),
            TOL,
        );
        let alone = model
            .forward(&row_suffix(&ids, i, len), None, None)
            .unwrap()
            .logits;
        assert_close(&format!("row {i} alone"), &got, &alone, TOL);
    }
}

#[test]
fn tiny_gpt2_incremental_decoding_matches_full_pass() {
    let model =
        Gpt2LmHeadModel::from_dir(&fixtures().join("tiny-gpt2"), DType::F32, &Device::Cpu).unwrap();
    let f = Fixture::load("tiny-gpt2-io.safetensors");
    let ids = row_prefix(&f.io("input_ids"), 0, 9);
    let mut caches = model.decoder().new_caches();
    let mut steps = vec![
        model
            .forward(&ids.narrow(1, 0, 5).unwrap(), None, Some(&mut caches))
            .unwrap()
            .logits,
    ];
    for t in 5..9 {
        steps.push(
            model
                .forward(&ids.narrow(1, t, 1).unwrap(), None, Some(&mut caches))
                .unwrap()
                .logits,
        );
    }
    let incremental = Tensor::cat(&steps, 1).unwrap();
    assert_close("cached decoding", &incremental, &f.io("logits_row0"), TOL);
}

#[test]
fn tiny_bert_matches_transformers() {
    let model =
        BertModel::from_dir(&fixtures().join("tiny-bert"), DType::F32, &Device::Cpu).unwrap();
    let f = Fixture::load("tiny-bert-io.safetensors");
    let (ids, mask, types) = (
        f.io("input_ids"),
        f.io("attention_mask"),
        f.io("token_type_ids"),
    );
    let out = model.forward(&ids, Some(&mask), Some(&types)).unwrap();
    assert_close(
        "last_hidden_state",
        &out.last_hidden_state,
        &f.io("last_hidden_state"),
        TOL,
    );
    assert_close(
        "pooler_output",
        out.pooler_output.as_ref().unwrap(),
        &f.io("pooler_output"),
        TOL,
    );
    for (i, len) in lengths(&mask).into_iter().enumerate() {
        let alone = model
            .forward(
                &row_prefix(&ids, i, len),
                None,
                Some(&row_prefix(&types, i, len)),
            )
            .unwrap();
        assert_close(
            &format!("row {i} alone"),
            &row_prefix(&out.last_hidden_state, i, len),
            &alone.last_hidden_state,
            TOL,
        );
    }
}

#[test]
fn masks_for_any_padding_side() {
    // Left- and right-padded masks give the same bias pattern on the real tokens.
    let dev = Device::Cpu;
    let right = Tensor::new(&[[1u8, 1, 1, 0], [1, 1, 1, 1]], &dev).unwrap();
    let left = Tensor::new(&[[0u8, 1, 1, 1], [1, 1, 1, 1]], &dev).unwrap();
    let br = attention_bias(Some(&right), true, 2, 4, 4, DType::F32, &dev)
        .unwrap()
        .unwrap();
    let bl = attention_bias(Some(&left), true, 2, 4, 4, DType::F32, &dev)
        .unwrap()
        .unwrap();
    assert_eq!(br.dims(), &[2, 1, 4, 4]);
    let allowed = |b: &Tensor| -> Vec<Vec<u8>> {
        b.squeeze(1)
            .unwrap()
            .eq(0f64)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec2::<u8>()
            .unwrap()
    };
    assert_eq!(
        allowed(&br),
        vec![
            vec![1, 0, 0, 0],
            vec![1, 1, 0, 0],
            vec![1, 1, 1, 0],
            vec![1, 1, 1, 0]
        ]
    );
    assert_eq!(
        allowed(&bl),
        vec![
            vec![0, 0, 0, 0],
            vec![0, 1, 0, 0],
            vec![0, 1, 1, 0],
            vec![0, 1, 1, 1]
        ]
    );
}

#[test]
fn course_decoder_left_padded_rows_equal_unpadded_runs() {
    use ferroformer::arch::{DecoderConfig, DecoderNames, DecoderOnlyTransformer};
    let varmap = VarMap::new();
    let w = Weights::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = DecoderConfig::course(50, 32, 2, 4, 64, 0.0, 64).unwrap();
    let model = DecoderOnlyTransformer::load(&w, &cfg, &DecoderNames::torch(&cfg)).unwrap();
    let dev = Device::Cpu;
    let ids = Tensor::new(
        &[
            [3u32, 9, 4, 7, 1, 2],
            [0, 0, 0, 5, 8, 6],
            [0, 11, 12, 13, 14, 15],
        ],
        &dev,
    )
    .unwrap();
    let mask = Tensor::new(
        &[[1u8, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1]],
        &dev,
    )
    .unwrap();
    let batched = model
        .forward(&ids, Some(&mask), None, Pass::INFERENCE)
        .unwrap()
        .logits;
    for (i, len) in lengths(&mask).into_iter().enumerate() {
        let alone = model
            .forward(&row_suffix(&ids, i, len), None, None, Pass::INFERENCE)
            .unwrap()
            .logits;
        assert_close(
            &format!("row {i}"),
            &row_suffix(&batched, i, len),
            &alone,
            1e-5,
        );
    }
}

#[test]
fn tiny_llama_logits_match_transformers() {
    use ferroformer::models::LlamaForCausalLm;
    let model =
        LlamaForCausalLm::from_dir(&fixtures().join("tiny-llama"), DType::F32, &Device::Cpu)
            .unwrap();
    let f = Fixture::load("tiny-llama-io.safetensors");
    let ids = f.io("input_ids");
    let mask = f.io("attention_mask");
    let row0 = model
        .forward(&row_prefix(&ids, 0, 9), None, None)
        .unwrap()
        .logits;
    assert_close("row 0 logits", &row0, &f.io("logits_row0"), TOL);
    let padded = model.forward(&ids, Some(&mask), None).unwrap().logits;
    let expected = f.io("logits_padded");
    for (i, len) in lengths(&mask).into_iter().enumerate() {
        let got = row_suffix(&padded, i, len);
        assert_close(
            &format!("left-padded row {i}"),
            &got,
            &row_suffix(&expected, i, len),
            TOL,
        );
    }
    // Incremental decoding with the KV cache (rotary positions continue from the cache).
    let mut caches = model.decoder().new_caches();
    let ids0 = row_prefix(&ids, 0, 9);
    let mut steps = vec![
        model
            .forward(&ids0.narrow(1, 0, 4).unwrap(), None, Some(&mut caches))
            .unwrap()
            .logits,
    ];
    for t in 4..9 {
        steps.push(
            model
                .forward(&ids0.narrow(1, t, 1).unwrap(), None, Some(&mut caches))
                .unwrap()
                .logits,
        );
    }
    assert_close(
        "cached decoding",
        &Tensor::cat(&steps, 1).unwrap(),
        &f.io("logits_row0"),
        TOL,
    );
}

/// Checkpoints written by `ferroformer train lm` load in `transformers` as
/// `GPT2LMHeadModel` / `LlamaForCausalLM` (the reference script does that) and give the
/// same logits as here.
#[test]
fn trained_checkpoints_match_transformers() {
    use ferroformer::models::auto::causal_lm_from_dir;
    for preset in ["gpt2", "llama"] {
        let model = causal_lm_from_dir(
            &fixtures().join(format!("trained-{preset}")),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let f = Fixture::load(&format!("trained-{preset}-io.safetensors"));
        let logits = model
            .forward(&f.io("input_ids"), None, None, Pass::INFERENCE)
            .unwrap()
            .logits;
        assert_close(&format!("{preset} logits"), &logits, &f.io("logits"), TOL);
    }
}
