//! Bad input gives a clear error naming the parameter or tensor — never a panic.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::*;
use ferroformer::models::{BertModel, Gpt2LmHeadModel};
use ferroformer::nn::mask::attention_bias;
use ferroformer::nn::*;
use ferroformer::{Error, Weights};

#[test]
fn d_model_not_divisible_by_heads() {
    let err = AttentionConfig::new(30, 4).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref param, .. } if param == "d_model"),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("d_model (30) must be a positive multiple of num_heads (4)"));
    let err = AttentionConfig::new(32, 4)
        .unwrap()
        .with_kv_heads(3)
        .unwrap_err();
    assert!(err.to_string().contains("num_kv_heads"), "{err}");
}

fn attention() -> MultiHeadAttention {
    let f = Fixture::load("mha.safetensors");
    let cfg = AttentionConfig::new(16, 4).unwrap();
    MultiHeadAttention::load(&f.weights(), &cfg, &AttentionNames::torch("", &cfg)).unwrap()
}

#[test]
fn mismatched_input_and_mask_shapes() {
    let attn = attention();
    let x = Tensor::zeros((2, 5, 12), DType::F32, &Device::Cpu).unwrap();
    let err = attn
        .forward(&x, AttentionContext::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attention input")
            && err.contains("(batch, seq, 16)")
            && err.contains("[2, 5, 12]"),
        "{err}"
    );

    let x = Tensor::zeros((2, 5, 16), DType::F32, &Device::Cpu).unwrap();
    let wrong = Tensor::zeros((2, 1, 5, 4), DType::F32, &Device::Cpu).unwrap();
    let err = attn
        .forward(
            &x,
            AttentionContext {
                bias: Some(&wrong),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attention mask") && err.contains("[2, 1, 5, 4]"),
        "{err}"
    );

    let mask = Tensor::ones((2, 6), DType::U8, &Device::Cpu).unwrap();
    let err = attention_bias(Some(&mask), false, 2, 5, 5, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attention_mask") && err.contains("key_len=5") && err.contains("[2, 6]"),
        "{err}"
    );
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let f = Fixture::load("mha.safetensors");
    let cfg = AttentionConfig::new(16, 4).unwrap();
    let err = MultiHeadAttention::load(
        &f.weights(),
        &cfg,
        &AttentionNames::torch("self_attn", &cfg),
    )
    .unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.self_attn.in_proj_weight") && msg.contains("mha.safetensors"),
        "{msg}"
    );

    let cfg = AttentionConfig::new(32, 4).unwrap();
    let err =
        MultiHeadAttention::load(&f.weights(), &cfg, &AttentionNames::torch("", &cfg)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("model.in_proj_weight")
            && msg.contains("[48, 16]")
            && msg.contains("[96, 32]"),
        "{msg}"
    );
}

#[test]
fn config_that_disagrees_with_weights_names_the_tensor() {
    let dir = tempfile_dir();
    std::fs::copy(
        fixtures().join("tiny-bert/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(fixtures().join("tiny-bert/config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"intermediate_size\": 37", "\"intermediate_size\": 40"),
    )
    .unwrap();
    let err = BertModel::from_dir(&dir, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.layer.0.intermediate.dense.weight")
            && err.contains("[37, 32]")
            && err.contains("[40, 32]"),
        "{err}"
    );

    std::fs::write(
        dir.join("config.json"),
        config.replace("\"vocab_size\": 99", "\"vocab_sizes\": 99"),
    )
    .unwrap();
    let err = BertModel::from_dir(&dir, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("missing field `vocab_size`"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sequences_longer_than_the_model_supports() {
    let model =
        Gpt2LmHeadModel::from_dir(&fixtures().join("tiny-gpt2"), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::zeros((1, 40), DType::U32, &Device::Cpu).unwrap();
    let err = model.forward(&ids, None, None).unwrap_err().to_string();
    assert!(
        err.contains("position 39") && err.contains("at most 32"),
        "{err}"
    );
}

#[test]
fn unknown_activation_is_named() {
    let err = Activation::from_name("gelu_quick_fancy")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gelu_quick_fancy") && err.contains("activation"),
        "{err}"
    );
}

#[test]
fn in_memory_weights_missing_tensor() {
    let w = Weights::from_tensors(HashMap::new(), DType::F32, &Device::Cpu);
    let err = Norm::load(&w, 8, &NormConfig::layer_norm(1e-5), "ln")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing tensor `ln.weight`"), "{err}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroformer-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_absurd_label_count_is_refused_before_any_allocation() {
    use ferroformer::models::PretrainedConfig;
    let start = std::time::Instant::now();
    let json = serde_json::json!({
        "model_type": "bert", "hidden_size": 8, "max_position_embeddings": 8,
        "num_labels": 10_000_000_000u64
    });
    let err = PretrainedConfig::from_json(json, std::path::Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("num_labels") && err.contains("10000000000"),
        "{err}"
    );
    assert!(start.elapsed().as_secs() < 2, "took {:?}", start.elapsed());
}

#[test]
fn a_shard_index_cannot_point_outside_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "../secret.safetensors",
        "/etc/passwd",
        "sub/../../x.safetensors",
        "",
    ] {
        let index = serde_json::json!({"weight_map": {"w": name}});
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        let err = ferroformer::models::checkpoint_files(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("weight_map.w") && err.contains("not a file in this directory"),
            "{err}"
        );
    }
    let index =
        serde_json::json!({"weight_map": {"a": "model-1.safetensors", "b": "model-1.safetensors"}});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let files = ferroformer::models::checkpoint_files(dir.path()).unwrap();
    assert_eq!(files, vec![dir.path().join("model-1.safetensors")]);
}
