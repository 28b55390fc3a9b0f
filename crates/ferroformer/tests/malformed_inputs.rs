//! Malformed GGUF files and configs are clear errors naming the key or tensor, never a
//! panic, an overflow or an allocation sized by a broken value.
//!
//! The GGUF files are tiny and written here: candle's writer for the metadata, then a
//! tensor directory written by hand, so that it can hold what candle's writer refuses (a
//! 0-dimensional tensor, dimensions whose product overflows 64 bits).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use ferroformer::models::gguf::MAX_GGUF_CONTEXT_LENGTH;
use ferroformer::models::{GgufFile, GgufModel, PretrainedConfig};

/// A tensor of the hand-written directory: its name and dimensions (outermost first, as
/// candle reports shapes), stored as F32 zeros.
struct RawTensor {
    name: String,
    dims: Vec<u64>,
}

/// A small GGUF file, edited by each test before it is written.
struct RawGguf {
    metadata: Vec<(String, Value)>,
    tensors: Vec<RawTensor>,
}

/// GGUF's alignment of the tensor data (`general.alignment`'s default).
const ALIGNMENT: usize = 32;

fn pad_to_alignment(bytes: &mut Vec<u8>) {
    bytes.resize(bytes.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
}

impl RawGguf {
    /// A consistent 1-layer Llama: d_model 32, 2 heads of 16, 1 KV head, FFN 64, a
    /// vocabulary of 4 tokens, context 64; every tensor F32.
    fn llama() -> Self {
        let (d, hd, kv, ff, vocab) = (32u64, 16u64, 1u64, 64u64, 4u64);
        let s = |x: &str| Value::String(x.to_string());
        let u = |x: u32| Value::U32(x);
        let metadata = vec![
            ("general.architecture".to_string(), s("llama")),
            ("llama.block_count".into(), u(1)),
            ("llama.context_length".into(), u(64)),
            ("llama.embedding_length".into(), u(d as u32)),
            ("llama.feed_forward_length".into(), u(ff as u32)),
            ("llama.attention.head_count".into(), u(2)),
            ("llama.attention.head_count_kv".into(), u(kv as u32)),
            (
                "llama.attention.layer_norm_rms_epsilon".into(),
                Value::F32(1e-5),
            ),
            ("tokenizer.ggml.model".into(), s("gpt2")),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(vec![s("a"), s("b"), s("ab"), s("c")]),
            ),
            ("tokenizer.ggml.merges".into(), Value::Array(vec![s("a b")])),
            ("tokenizer.ggml.eos_token_id".into(), u(3)),
        ];
        let t = |name: &str, dims: &[u64]| RawTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
        };
        let tensors = vec![
            t("token_embd.weight", &[vocab, d]),
            t("blk.0.attn_q.weight", &[2 * hd, d]),
            t("blk.0.attn_k.weight", &[kv * hd, d]),
            t("blk.0.attn_v.weight", &[kv * hd, d]),
            t("blk.0.attn_output.weight", &[d, 2 * hd]),
            t("blk.0.ffn_gate.weight", &[ff, d]),
            t("blk.0.ffn_up.weight", &[ff, d]),
            t("blk.0.ffn_down.weight", &[d, ff]),
            t("blk.0.attn_norm.weight", &[d]),
            t("blk.0.ffn_norm.weight", &[d]),
            t("output_norm.weight", &[d]),
        ];
        Self { metadata, tensors }
    }

    /// Sets (or adds) metadata entry `key`.
    fn set(mut self, key: &str, value: Value) -> Self {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Sets (or adds) tensor `name` with dimensions `dims`.
    fn tensor(mut self, name: &str, dims: &[u64]) -> Self {
        self.tensors.retain(|t| t.name != name);
        self.tensors.push(RawTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
        });
        self
    }

    /// Writes the file into `dir` as `name`.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let md: Vec<(&str, &Value)> = self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut buf = Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &md, &[]).unwrap();
        // With an empty tensor directory, candle's reader stops where the metadata ends.
        buf.set_position(0);
        gguf_file::Content::read(&mut buf).unwrap();
        let end = buf.position() as usize;
        let mut bytes = buf.into_inner();
        bytes.truncate(end);
        // Header: magic (4 bytes), version (4), tensor count (8), metadata count (8).
        bytes[8..16].copy_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        let mut data = Vec::new();
        for t in &self.tensors {
            bytes.extend((t.name.len() as u64).to_le_bytes());
            bytes.extend(t.name.as_bytes());
            bytes.extend((t.dims.len() as u32).to_le_bytes());
            // GGUF lists dimensions innermost first.
            for d in t.dims.iter().rev() {
                bytes.extend(d.to_le_bytes());
            }
            bytes.extend(0u32.to_le_bytes()); // GGML type 0: F32.
            bytes.extend((data.len() as u64).to_le_bytes());
            // Data for tensors of a sane size; none for the absurd ones under test.
            let elems = t
                .dims
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .filter(|&n| n <= 1 << 16)
                .unwrap_or(0);
            data.resize(data.len() + elems as usize * 4, 0);
            pad_to_alignment(&mut data);
        }
        pad_to_alignment(&mut bytes);
        bytes.extend(data);
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The error loading the model from this file gives.
    fn load_error(&self) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = self.write(dir.path(), "bad.gguf");
        match GgufModel::load(&path) {
            Ok(_) => panic!("a malformed GGUF file loaded"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("bad.gguf"), "the error names the file: {e}");
                e
            }
        }
    }
}

#[test]
fn the_consistent_base_file_loads() {
    // The control: every failure below comes from its one edit.
    let dir = tempfile::tempdir().unwrap();
    let path = RawGguf::llama().write(dir.path(), "good.gguf");
    let model = GgufModel::load(&path).unwrap();
    let cfg = &model.config().decoder;
    assert_eq!(cfg.stack.num_layers, 1);
    assert_eq!(cfg.embeddings.vocab_size, 4);
    assert_eq!(model.tokenizer().eos_token_id(), Some(3));
}

#[test]
fn zero_dimensional_embedding_table_without_vocab_size_is_an_error() {
    let e = RawGguf::llama()
        .tensor("token_embd.weight", &[])
        .load_error();
    assert!(
        e.contains("token_embd.weight") && e.contains("2 dimensions"),
        "{e}"
    );
}

#[test]
fn huge_block_count_is_an_error() {
    for blocks in [1u64 << 62, u64::MAX, 2] {
        let e = RawGguf::llama()
            .set("llama.block_count", Value::U64(blocks))
            .load_error();
        assert!(
            e.contains("llama.block_count") && e.contains(&blocks.to_string()),
            "{e}"
        );
    }
}

#[test]
fn block_count_with_a_block_missing_is_an_error() {
    // Two blocks of tensors stored as blk.0 and blk.5: block 1 is missing.
    let mut raw = RawGguf::llama().set("llama.block_count", Value::U32(2));
    raw.tensors.push(RawTensor {
        name: "blk.5.attn_norm.weight".into(),
        dims: vec![32],
    });
    let e = raw.load_error();
    assert!(
        e.contains("llama.block_count") && e.contains("blk.1."),
        "{e}"
    );
}

#[test]
fn tensor_size_overflowing_64_bits_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = RawGguf::llama()
        .tensor("junk", &[1 << 32, 1 << 32, 1 << 32])
        .write(dir.path(), "overflow.gguf");
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("overflow.gguf") && e.contains("`junk`") && e.contains("64-bit"),
        "{e}"
    );
    // Bytes (not elements) beyond 64 bits: 2^62 F32 values.
    let path = RawGguf::llama()
        .tensor("junk", &[1 << 31, 1 << 31])
        .write(dir.path(), "bytes.gguf");
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("`junk`") && e.contains("bytes"), "{e}");
}

#[test]
fn absurd_context_length_is_an_error() {
    for context in [0u64, MAX_GGUF_CONTEXT_LENGTH as u64 + 1, 1 << 40, u64::MAX] {
        let e = RawGguf::llama()
            .set("llama.context_length", Value::U64(context))
            .load_error();
        assert!(
            e.contains("llama.context_length") && e.contains(&context.to_string()),
            "{e}"
        );
    }
}

#[test]
fn head_sizes_whose_product_overflows_are_an_error() {
    let e = RawGguf::llama()
        .set("llama.attention.key_length", Value::U64(1 << 63))
        .load_error();
    assert!(e.contains("llama.attention.head_count"), "{e}");
}

#[test]
fn metadata_contradicting_the_tensor_shapes_names_the_key() {
    let cases: [(&str, Value, &[&str]); 5] = [
        (
            "llama.attention.head_count_kv",
            Value::U32(2),
            &["llama.attention.head_count_kv", "blk.0.attn_k.weight"],
        ),
        (
            "llama.attention.key_length",
            Value::U32(32),
            &[
                "llama.attention.head_count",
                "llama.attention.key_length",
                "blk.0.attn_q.weight",
            ],
        ),
        (
            "llama.feed_forward_length",
            Value::U64(1 << 60),
            &["llama.feed_forward_length", "blk.0.ffn_gate.weight"],
        ),
        (
            "llama.embedding_length",
            Value::U32(48),
            &["llama.embedding_length", "token_embd.weight"],
        ),
        (
            "llama.vocab_size",
            Value::U32(5),
            &["llama.vocab_size", "token_embd.weight"],
        ),
    ];
    for (key, value, named) in cases {
        let e = RawGguf::llama().set(key, value).load_error();
        for n in named {
            assert!(e.contains(n), "{key}: `{n}` is not named in: {e}");
        }
    }
}

#[test]
fn non_finite_epsilon_and_rope_base_are_errors() {
    for (key, value) in [
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(f32::NAN),
        ),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(-1.0)),
        ("llama.rope.freq_base", Value::F32(0.0)),
        ("llama.rope.freq_base", Value::F64(f64::INFINITY)),
    ] {
        let e = RawGguf::llama().set(key, value).load_error();
        assert!(e.contains(key), "{e}");
    }
}

#[test]
fn token_ids_beyond_32_bits_are_errors_not_truncated() {
    // 2^32 + 1 truncated to 32 bits is 1, a valid id of the 4-token vocabulary.
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
    ] {
        let e = RawGguf::llama()
            .set(key, Value::U64((1 << 32) + 1))
            .load_error();
        assert!(e.contains(key) && e.contains("32 bits"), "{e}");
    }
}

#[test]
fn pad_token_id_beyond_32_bits_is_an_error_not_truncated() {
    let source = Path::new("config.json");
    let config = |pad: serde_json::Value| {
        serde_json::json!({"model_type": "roberta", "hidden_size": 8,
            "max_position_embeddings": 514, "pad_token_id": pad})
    };
    // 2^32 + 1 would be truncated to 1, RoBERTa's real padding id.
    for pad in [
        serde_json::json!((1u64 << 32) + 1),
        serde_json::json!(-1),
        serde_json::json!(1.5),
        serde_json::json!("1"),
    ] {
        let e = PretrainedConfig::from_json(config(pad.clone()), source)
            .err()
            .unwrap_or_else(|| panic!("pad_token_id {pad} was accepted"))
            .to_string();
        assert!(
            e.contains("pad_token_id") && e.contains("config.json"),
            "{e}"
        );
    }
    let ok = PretrainedConfig::from_json(config(serde_json::json!(1)), source).unwrap();
    assert_eq!(ok.pad_token_id, Some(1));
    assert_eq!(ok.max_position_embeddings, 512);
    let absent = PretrainedConfig::from_json(config(serde_json::Value::Null), source).unwrap();
    assert_eq!(absent.pad_token_id, Some(1));
}
