//! Pretrained encoder families (BERT, DistilBERT, RoBERTa, XLM-RoBERTa) and their task heads
//! through the Auto classes, against `transformers` 4.57.6 (fixtures in
//! `tests/fixtures/encoders/`, written by `scripts/reference/encoder_fixtures.py`).
//!
//! Every output is compared at 1e-4 absolute in f32. Beyond the outputs: each row run alone
//! equals its row of the padded batch, sharded, f16, bf16 and `pytorch_model.bin` copies load
//! to the same outputs, task checkpoints load with or without the base-model prefix, and
//! configuration mistakes are errors that say what is wrong.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use common::*;
use ferroformer::models::encoder_model::EncoderOutput;
use ferroformer::{
    AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification, AutoModelForTokenClassification, LoadOptions,
    PretrainedConfig, Weights,
};

/// Every committed encoder fixture.
const FIXTURES: &[&str] = &[
    "bert-base",
    "bert-seqcls",
    "bert-multilabel",
    "bert-nli",
    "bert-tokcls",
    "bert-qa",
    "bert-mlm",
    "distilbert-base",
    "distilbert-seqcls",
    "distilbert-tokcls",
    "distilbert-qa",
    "distilbert-mlm",
    "roberta-base",
    "roberta-seqcls",
    "roberta-tokcls",
    "roberta-qa",
    "roberta-mlm",
    "xlm-roberta-base",
];

/// The f32 tolerance against `transformers`.
const TOL: f32 = 1e-4;

fn fixture_dir(name: &str) -> PathBuf {
    fixtures().join("encoders").join(name)
}

/// A nested JSON list of numbers as an f32 tensor of the same shape.
fn json_tensor(v: &serde_json::Value, dtype: DType) -> Tensor {
    fn walk(v: &serde_json::Value, depth: usize, shape: &mut Vec<usize>, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                }
                assert_eq!(shape[depth], items.len(), "ragged list in reference.json");
                for item in items {
                    walk(item, depth + 1, shape, out);
                }
            }
            serde_json::Value::Number(n) => out.push(n.as_f64().unwrap()),
            other => panic!("unexpected {other} in reference.json"),
        }
    }
    let (mut shape, mut data) = (Vec::new(), Vec::new());
    walk(v, 0, &mut shape, &mut data);
    Tensor::from_vec(data, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// `reference.json`: inputs of a right-padded batch and `transformers`' outputs.
struct Reference {
    input_ids: Tensor,
    attention_mask: Tensor,
    token_type_ids: Option<Tensor>,
    outputs: BTreeMap<String, Tensor>,
}

impl Reference {
    fn load(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let types = &json["token_type_ids"];
        Self {
            input_ids: json_tensor(&json["input_ids"], DType::U32),
            attention_mask: json_tensor(&json["attention_mask"], DType::U32),
            token_type_ids: (!types.is_null()).then(|| json_tensor(types, DType::U32)),
            outputs: json["outputs"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), json_tensor(v, DType::F32)))
                .collect(),
        }
    }
}

/// A fixture's model, by the head its directory name ends with.
enum Model {
    Base(AutoModel),
    Sequence(AutoModelForSequenceClassification),
    Token(AutoModelForTokenClassification),
    Span(AutoModelForQuestionAnswering),
    Masked(AutoModelForMaskedLM),
}

impl Model {
    fn load(fixture: &str, dir: &Path, options: &LoadOptions) -> Self {
        let head = fixture.rsplit('-').next().unwrap();
        let loaded = match head {
            "base" => AutoModel::from_dir(dir, options).map(Model::Base),
            "seqcls" | "multilabel" | "nli" | "bin" | "beta" => {
                AutoModelForSequenceClassification::from_dir(dir, options).map(Model::Sequence)
            }
            "tokcls" => AutoModelForTokenClassification::from_dir(dir, options).map(Model::Token),
            "qa" => AutoModelForQuestionAnswering::from_dir(dir, options).map(Model::Span),
            "mlm" => AutoModelForMaskedLM::from_dir(dir, options).map(Model::Masked),
            other => panic!("no head for fixture suffix {other}"),
        };
        loaded.unwrap_or_else(|e| panic!("{fixture} from {}: {e}", dir.display()))
    }

    /// The outputs under `transformers`' names.
    fn run(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        types: Option<&Tensor>,
    ) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        match self {
            Model::Base(m) => {
                let EncoderOutput {
                    last_hidden_state,
                    pooler_output,
                } = m.forward(ids, mask, types).unwrap();
                out.insert("last_hidden_state".into(), last_hidden_state);
                if let Some(p) = pooler_output {
                    out.insert("pooler_output".into(), p);
                }
            }
            Model::Sequence(m) => {
                out.insert("logits".into(), m.forward(ids, mask, types).unwrap());
            }
            Model::Token(m) => {
                out.insert("logits".into(), m.forward(ids, mask, types).unwrap());
            }
            Model::Span(m) => {
                let (start, end) = m.forward(ids, mask, types).unwrap();
                out.insert("start_logits".into(), start);
                out.insert("end_logits".into(), end);
            }
            Model::Masked(m) => {
                out.insert("logits".into(), m.forward(ids, mask, types).unwrap());
            }
        }
        out
    }

    fn run_reference(&self, r: &Reference) -> BTreeMap<String, Tensor> {
        self.run(
            &r.input_ids,
            Some(&r.attention_mask),
            r.token_type_ids.as_ref(),
        )
    }
}

/// Compares every reference output (the masked-LM references hold the first rows only) and
/// returns the largest difference.
#[track_caller]
fn compare(what: &str, ours: &BTreeMap<String, Tensor>, r: &Reference, tol: f32) -> f32 {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        r.outputs.keys().collect::<Vec<_>>(),
        "{what}: output names"
    );
    let mut worst = 0f32;
    for (name, expected) in &r.outputs {
        let rows = expected.dim(0).unwrap();
        let got = ours[name].i(0..rows).unwrap();
        let d = max_abs_diff(&got, expected);
        assert_close(&format!("{what} {name}"), &got, expected, tol);
        worst = worst.max(d);
    }
    worst
}

/// A fresh directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ferroformer-encoders-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of a fixture's `config.json`, edited by `edit`, next to `model.safetensors`
/// holding `tensors`.
fn write_checkpoint(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &HashMap<String, Tensor>,
) -> PathBuf {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

fn read_config(fixture: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir(fixture).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read_tensors(fixture: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir(fixture).join("model.safetensors"), &Device::Cpu)
        .unwrap()
}

#[test]
fn every_fixture_matches_transformers() {
    let mut report = Vec::new();
    for &name in FIXTURES {
        let dir = fixture_dir(name);
        let r = Reference::load(&dir);
        let model = Model::load(name, &dir, &LoadOptions::default());
        let d = compare(name, &model.run_reference(&r), &r, TOL);
        report.push(format!("{name}: {d:.2e}"));
    }
    eprintln!("max abs diff vs transformers: {}", report.join(", "));
}

#[test]
fn from_pretrained_takes_a_directory_path() {
    let dir = fixture_dir("roberta-seqcls");
    let model = AutoModelForSequenceClassification::from_pretrained(dir.to_str().unwrap()).unwrap();
    let r = Reference::load(&dir);
    let logits = model
        .forward(&r.input_ids, Some(&r.attention_mask), None)
        .unwrap();
    assert_close("logits", &logits, &r.outputs["logits"], TOL);
}

/// Each row run alone, without padding, equals its row of the padded batch on the real
/// positions. For RoBERTa this checks that padding does not shift positions.
#[test]
fn each_row_alone_matches_its_padded_batch_row() {
    let mut worst = 0f32;
    for &name in FIXTURES {
        let dir = fixture_dir(name);
        let r = Reference::load(&dir);
        let model = Model::load(name, &dir, &LoadOptions::default());
        let batch = model.run_reference(&r);
        for (i, len) in lengths(&r.attention_mask).into_iter().enumerate() {
            let ids = row_prefix(&r.input_ids, i, len);
            let types = r.token_type_ids.as_ref().map(|t| row_prefix(t, i, len));
            let alone = model.run(&ids, None, types.as_ref());
            for (key, single) in &alone {
                let padded = &batch[key];
                // Pooled outputs and sequence logits are (batch, n); the rest per position.
                let row = if padded.rank() == 2 && key != "start_logits" && key != "end_logits" {
                    padded.i(i..i + 1).unwrap()
                } else {
                    row_prefix(padded, i, len)
                };
                let d = max_abs_diff(single, &row);
                assert!(d <= 1e-5, "{name} row {i} {key}: max abs diff {d:e}");
                worst = worst.max(d);
            }
        }
    }
    eprintln!("batched vs unbatched: max abs diff {worst:.2e}");
}

/// A checkpoint split into shards with an index loads like the single file.
#[test]
fn sharded_checkpoint_matches_single_file() {
    for name in ["bert-mlm", "roberta-seqcls"] {
        let src = fixture_dir(name);
        let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        let dir = temp_dir(&format!("sharded-{name}"));
        let mut weight_map = serde_json::Map::new();
        let half = names.len() / 2;
        for (shard, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
            let file = format!("model-{:05}-of-00002.safetensors", shard + 1);
            let views: Vec<(String, safetensors::tensor::TensorView)> = part
                .iter()
                .map(|n| (n.clone(), st.tensor(n).unwrap()))
                .collect();
            safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
            for n in part {
                weight_map.insert(n.clone(), serde_json::Value::String(file.clone()));
            }
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
        let r = Reference::load(&src);
        let model = Model::load(name, &dir, &LoadOptions::default());
        compare(
            &format!("sharded {name}"),
            &model.run_reference(&r),
            &r,
            TOL,
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Checkpoints stored in f16 and bf16 are computed in f32 by default. The weights lose
/// precision when stored (f16 keeps 11 significant bits, relative error up to 2^-11 ≈ 4.9e-4;
/// bf16 keeps 8, up to 2^-8 ≈ 3.9e-3); through two layers of these tiny models, with weights
/// and activations of magnitude ~1, the outputs move by up to ~4e-3 (f16) and ~3e-2 (bf16)
/// as observed, so the tolerances are 1e-2 and 1e-1: the storage error with some margin,
/// still far below the outputs' spread.
#[test]
fn f16_and_bf16_checkpoints_compute_in_f32() {
    for (dtype, tol) in [(DType::F16, 1e-2f32), (DType::BF16, 1e-1)] {
        let mut report = Vec::new();
        for name in [
            "bert-base",
            "distilbert-seqcls",
            "roberta-mlm",
            "roberta-qa",
        ] {
            let tensors: HashMap<String, Tensor> = read_tensors(name)
                .into_iter()
                .map(|(k, v)| (k, v.to_dtype(dtype).unwrap()))
                .collect();
            let dir = temp_dir(&format!("{dtype:?}-{name}"));
            write_checkpoint(&dir, &read_config(name), &tensors);
            let r = Reference::load(&fixture_dir(name));
            let model = Model::load(name, &dir, &LoadOptions::default());
            let out = model.run_reference(&r);
            assert!(out.values().all(|t| t.dtype() == DType::F32));
            let d = compare(&format!("{dtype:?} {name}"), &out, &r, tol);
            report.push(format!("{name}: {d:.2e}"));
            std::fs::remove_dir_all(&dir).unwrap();
        }
        eprintln!(
            "{dtype:?} weights vs transformers f32: {}",
            report.join(", ")
        );
    }
}

/// `pytorch_model.bin` (a `torch.save`d state dict), also with LayerNorm parameters under
/// their old names `gamma`/`beta`, loads like the safetensors file.
#[test]
fn pytorch_bin_checkpoints_load() {
    let r = Reference::load(&fixture_dir("bert-seqcls"));
    for name in ["bert-seqcls-bin", "bert-seqcls-bin-gamma-beta"] {
        let dir = fixture_dir(name);
        assert!(!dir.join("model.safetensors").exists());
        let stored: Vec<String> =
            candle_core::pickle::read_pth_tensor_info(dir.join("pytorch_model.bin"), false, None)
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect();
        let old_names = stored.iter().any(|n| n.ends_with("LayerNorm.gamma"));
        assert_eq!(old_names, name.ends_with("gamma-beta"), "{stored:?}");
        let model = Model::load(name, &dir, &LoadOptions::default());
        compare(name, &model.run_reference(&r), &r, TOL);
    }
}

/// Task checkpoints keep the base model under `bert.` / `distilbert.` / `roberta.`; they load
/// without the prefix too, and base checkpoints load with it.
#[test]
fn base_model_prefix_present_or_absent() {
    let cases = [
        ("bert-seqcls", "bert.", false),
        ("distilbert-qa", "distilbert.", false),
        ("roberta-tokcls", "roberta.", false),
        ("roberta-mlm", "roberta.", false),
        ("bert-base", "bert.", true),
        ("distilbert-base", "distilbert.", true),
        ("xlm-roberta-base", "roberta.", true),
    ];
    for (name, prefix, add) in cases {
        let tensors: HashMap<String, Tensor> = read_tensors(name)
            .into_iter()
            .map(|(k, v)| {
                let k = match (add, k.strip_prefix(prefix)) {
                    (true, _) => format!("{prefix}{k}"),
                    (false, Some(rest)) => rest.to_string(),
                    (false, None) => k,
                };
                (k, v)
            })
            .collect();
        assert_eq!(
            tensors.keys().any(|k| k.starts_with(prefix)),
            add,
            "{name}: renaming did nothing"
        );
        let dir = temp_dir(&format!("prefix-{name}"));
        write_checkpoint(&dir, &read_config(name), &tensors);
        let r = Reference::load(&fixture_dir(name));
        let model = Model::load(name, &dir, &LoadOptions::default());
        compare(
            &format!(
                "{name} with prefix {}",
                if add { "added" } else { "removed" }
            ),
            &model.run_reference(&r),
            &r,
            TOL,
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn pretrained_config_view() {
    let c = PretrainedConfig::from_dir(&fixture_dir("bert-seqcls")).unwrap();
    assert_eq!(c.model_type, "bert");
    assert_eq!(c.architectures, ["BertForSequenceClassification"]);
    assert_eq!(c.num_labels, 2);
    assert_eq!(c.id2label[&0], "NEGATIVE");
    assert_eq!(c.id2label[&1], "POSITIVE");
    assert_eq!(c.label2id["POSITIVE"], 1);
    assert_eq!(c.problem_type, None);
    assert_eq!(c.pad_token_id, Some(0));
    assert_eq!(c.max_position_embeddings, 128);
    assert_eq!(c.hidden_size, 16);
    assert_eq!(c.raw["vocab_size"], 300);

    let c = PretrainedConfig::from_dir(&fixture_dir("bert-multilabel")).unwrap();
    assert_eq!(
        c.problem_type.as_deref(),
        Some("multi_label_classification")
    );
    assert_eq!(c.num_labels, 3);
    assert_eq!(c.label(2), "science");

    let c = PretrainedConfig::from_dir(&fixture_dir("bert-tokcls")).unwrap();
    assert_eq!(c.num_labels, 9);
    assert_eq!(c.id2label[&1], "B-PER");

    // No id2label: transformers' defaults.
    let c = PretrainedConfig::from_dir(&fixture_dir("bert-base")).unwrap();
    assert_eq!(c.num_labels, 2);
    assert_eq!(
        c.id2label.values().collect::<Vec<_>>(),
        ["LABEL_0", "LABEL_1"]
    );
    assert_eq!(c.label2id["LABEL_1"], 1);

    // RoBERTa's table has 130 rows; positions start after the padding index 1.
    let c = PretrainedConfig::from_dir(&fixture_dir("roberta-base")).unwrap();
    assert_eq!((c.max_position_embeddings, c.pad_token_id), (128, Some(1)));
    let c = PretrainedConfig::from_dir(&fixture_dir("xlm-roberta-base")).unwrap();
    assert_eq!(c.model_type, "xlm-roberta");
    assert_eq!(c.max_position_embeddings, 128);

    let c = PretrainedConfig::from_dir(&fixture_dir("distilbert-tokcls")).unwrap();
    assert_eq!((c.model_type.as_str(), c.hidden_size), ("distilbert", 16));
    assert_eq!(c.max_position_embeddings, 128);

    // The Auto classes expose the same view.
    let m = AutoModelForTokenClassification::from_dir(
        &fixture_dir("roberta-tokcls"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(m.config().label(0), "O");
    assert_eq!(m.config().num_labels, 9);
}

/// Without `model_type`, `architectures` picks the family; `camembert` is RoBERTa.
#[test]
fn family_from_architectures_or_alias() {
    let mut config = read_config("roberta-seqcls");
    config.as_object_mut().unwrap().remove("model_type");
    let dir = temp_dir("no-model-type");
    write_checkpoint(&dir, &config, &read_tensors("roberta-seqcls"));
    let r = Reference::load(&fixture_dir("roberta-seqcls"));
    let m = Model::load("roberta-seqcls", &dir, &LoadOptions::default());
    compare("without model_type", &m.run_reference(&r), &r, TOL);

    config["model_type"] = "camembert".into();
    config["architectures"] = serde_json::json!(["CamembertForSequenceClassification"]);
    write_checkpoint(&dir, &config, &read_tensors("roberta-seqcls"));
    let m = Model::load("roberta-seqcls", &dir, &LoadOptions::default());
    compare("as camembert", &m.run_reference(&r), &r, TOL);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_model_type_or_architecture_lists_supported() {
    let dir = temp_dir("unknown-family");
    let mut config = read_config("bert-base");
    config["model_type"] = "funnel".into();
    write_checkpoint(&dir, &config, &read_tensors("bert-base"));
    let err = AutoModel::from_dir(&dir, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`funnel`")
            && err.contains("bert, distilbert, roberta, xlm-roberta, camembert")
            && err.contains("config.json"),
        "{err}"
    );

    config.as_object_mut().unwrap().remove("model_type");
    config["architectures"] = serde_json::json!(["BertForMagic"]);
    write_checkpoint(&dir, &config, &read_tensors("bert-base"));
    let err = AutoModelForSequenceClassification::from_dir(&dir, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("BertForMagic")
            && err.contains("BertForSequenceClassification")
            && err.contains("XLMRobertaForMaskedLM"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A config whose sizes disagree with the weights names the tensor and both shapes.
#[test]
fn config_that_disagrees_with_weights_names_tensor_and_shapes() {
    let dir = temp_dir("mismatch");
    let mut config = read_config("bert-seqcls");
    config["id2label"] = serde_json::json!({"0": "a", "1": "b", "2": "c"});
    config["label2id"] = serde_json::json!({"a": 0, "b": 1, "c": 2});
    write_checkpoint(&dir, &config, &read_tensors("bert-seqcls"));
    let err = AutoModelForSequenceClassification::from_dir(&dir, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`classifier.weight`") && err.contains("[2, 16]") && err.contains("[3, 16]"),
        "{err}"
    );

    let mut config = read_config("distilbert-qa");
    config["hidden_dim"] = 40.into();
    write_checkpoint(&dir, &config, &read_tensors("distilbert-qa"));
    let err = AutoModelForQuestionAnswering::from_dir(&dir, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`distilbert.transformer.layer.0.ffn.lin1.weight`")
            && err.contains("[32, 16]")
            && err.contains("[40, 16]"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Loading a checkpoint for a head it does not have says which tensor is missing and what
/// the checkpoint is.
#[test]
fn wrong_head_for_checkpoint_is_explained() {
    let err = AutoModelForMaskedLM::from_dir(&fixture_dir("bert-seqcls"), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("masked-LM")
            && err.contains("cls.predictions.transform.dense.weight")
            && err.contains("BertForSequenceClassification"),
        "{err}"
    );
    // BERT's sequence classification needs the pooler, which a QA checkpoint lacks.
    let err = AutoModelForSequenceClassification::from_dir(
        &fixture_dir("bert-qa"),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("bert.pooler.dense.weight") && err.contains("BertForQuestionAnswering"),
        "{err}"
    );
    let err = AutoModelForSequenceClassification::from_dir(
        &fixture_dir("distilbert-base"),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("pre_classifier.weight") && err.contains("DistilBertModel"),
        "{err}"
    );
}

#[test]
fn roberta_length_limit_leaves_room_for_the_padding_index() {
    let model = AutoModel::from_dir(&fixture_dir("roberta-base"), &LoadOptions::default()).unwrap();
    let ok = Tensor::full(5u32, (1, 128), &Device::Cpu).unwrap();
    model.forward(&ok, None, None).unwrap();
    let too_long = Tensor::full(5u32, (1, 129), &Device::Cpu).unwrap();
    let err = model
        .forward(&too_long, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("position 128") && err.contains("at most 128"),
        "{err}"
    );
}

/// `sinusoidal_pos_embds`: `transformers` saves the sinusoid table with the weights, so it
/// loads like a learned one.
#[test]
fn distilbert_sinusoidal_positions_use_the_stored_table() {
    let mut config = read_config("distilbert-base");
    config["sinusoidal_pos_embds"] = true.into();
    let dir = temp_dir("sinusoidal");
    write_checkpoint(&dir, &config, &read_tensors("distilbert-base"));
    let r = Reference::load(&fixture_dir("distilbert-base"));
    let m = Model::load("distilbert-base", &dir, &LoadOptions::default());
    compare("sinusoidal flag", &m.run_reference(&r), &r, TOL);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Untied masked-LM decoders read their own weight (here: a copy of the embeddings).
#[test]
fn untied_masked_lm_decoder_reads_its_weight() {
    let mut config = read_config("roberta-mlm");
    config["tie_word_embeddings"] = false.into();
    let mut tensors = read_tensors("roberta-mlm");
    let emb = tensors["roberta.embeddings.word_embeddings.weight"].clone();
    let dir = temp_dir("untied");
    write_checkpoint(&dir, &config, &tensors);
    let err = AutoModelForMaskedLM::from_dir(&dir, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("lm_head.decoder.weight"), "{err}");
    tensors.insert("lm_head.decoder.weight".into(), emb);
    write_checkpoint(&dir, &config, &tensors);
    let r = Reference::load(&fixture_dir("roberta-mlm"));
    let m = Model::load("roberta-mlm", &dir, &LoadOptions::default());
    compare("untied", &m.run_reference(&r), &r, TOL);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// In-memory weights go through the same loading (the path pipelines use for converted
/// checkpoints).
#[test]
fn load_from_weights_and_config() {
    let dir = fixture_dir("distilbert-mlm");
    let config = PretrainedConfig::from_dir(&dir).unwrap();
    let w = Weights::from_tensors(read_tensors("distilbert-mlm"), DType::F32, &Device::Cpu);
    let m = AutoModelForMaskedLM::load(&w, &config).unwrap();
    let r = Reference::load(&dir);
    let logits = m
        .forward(&r.input_ids, Some(&r.attention_mask), None)
        .unwrap();
    assert_eq!(logits.dims(), [4, r.input_ids.dim(1).unwrap(), 300]);
    assert_close(
        "logits",
        &logits.i(0..2).unwrap(),
        &r.outputs["logits"],
        TOL,
    );
}

/// `LoadOptions::dtype` computes in that dtype: outputs come back in f16 / bf16, within the
/// precision of the dtype (observed up to ~7e-3 for f16 and ~6e-2 for bf16 on these models).
#[test]
fn load_options_dtype_computes_in_that_dtype() {
    for (dtype, tol) in [(DType::F16, 2e-2f32), (DType::BF16, 2e-1)] {
        for name in [
            "bert-base",
            "distilbert-seqcls",
            "roberta-mlm",
            "roberta-qa",
        ] {
            let dir = fixture_dir(name);
            let r = Reference::load(&dir);
            let options = LoadOptions {
                dtype,
                device: Device::Cpu,
                ..Default::default()
            };
            let out = Model::load(name, &dir, &options).run_reference(&r);
            assert!(out.values().all(|t| t.dtype() == dtype));
            compare(&format!("{dtype:?} compute {name}"), &out, &r, tol);
        }
    }
}

/// With `skip_padding_outputs` the padded batch is packed to its real tokens: every output
/// that depends only on real tokens (pooled and sequence-level outputs, and per-token
/// outputs at real positions) equals `transformers`', and the padding positions of the
/// hidden states are zero.
#[test]
fn skipping_padding_matches_at_every_real_token() {
    let names = [
        "bert-base",
        "bert-seqcls",
        "bert-tokcls",
        "bert-qa",
        "bert-mlm",
        "distilbert-base",
        "distilbert-seqcls",
        "roberta-base",
        "roberta-seqcls",
        "roberta-tokcls",
        "xlm-roberta-base",
    ];
    let options = LoadOptions {
        skip_padding_outputs: true,
        ..Default::default()
    };
    for name in names {
        let dir = fixture_dir(name);
        let r = Reference::load(&dir);
        let mask = r.attention_mask.to_dtype(DType::F32).unwrap();
        assert!(
            mask.min_all().unwrap().to_scalar::<f32>().unwrap() == 0.0,
            "{name}: the reference batch must be padded for this test to mean anything"
        );
        let ours = Model::load(name, &dir, &options).run_reference(&r);
        for (key, expected) in &r.outputs {
            let rows = expected.dim(0).unwrap();
            let got = ours[key].i(0..rows).unwrap();
            // Per-token outputs are compared at real tokens only (padding rows zeroed on
            // both sides); pooled outputs as they are.
            let (got, expected) =
                if expected.rank() >= 2 && expected.dim(1).unwrap() == mask.dim(1).unwrap() {
                    let m = mask.i(0..rows).unwrap();
                    let m = if expected.rank() == 3 {
                        m.unsqueeze(2).unwrap()
                    } else {
                        m
                    };
                    (
                        got.broadcast_mul(&m).unwrap(),
                        expected.broadcast_mul(&m).unwrap(),
                    )
                } else {
                    (got, expected.clone())
                };
            assert_close(&format!("{name} {key} (packed)"), &got, &expected, 1e-4);
        }
        if let Some(h) = ours.get("last_hidden_state") {
            let padding = (1.0 - mask.clone()).unwrap().unsqueeze(2).unwrap();
            let at_padding = h
                .broadcast_mul(&padding)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap();
            let total = h
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(
                at_padding.to_scalar::<f32>().unwrap(),
                0.0,
                "{name}: padding rows are zero"
            );
            assert!(total > 0.0);
        }
    }
}
