//! Tiny random `qwen2`, `qwen3`, `llama` (Llama 3: `llama-bpe` pre-tokenizer, `rope_freqs`;
//! Mistral: SentencePiece), `gemma2` (soft caps, sliding window, head width ≠ hidden/heads)
//! and `phi3` (fused q/k/v and gate/up, partial rotary, special tokens that strip the
//! spaces after them; and a `longrope` one, at two context sizes) GGUF files, made by `transformers` and converted with llama.cpp's own
//! `convert_hf_to_gguf.py` at F32 and Q8_0 (and a one-layer Llama 3 and Gemma 2 of width 256
//! that llama.cpp quantized to Q4_K_M and Q6_K, the Llama 3 also to Q4_0 and Q2_K, the
//! formats llama.cpp repacks at load), against llama.cpp (llama-cpp-python) on the
//! same files: token ids of a mixed text set, logits of every position of a prompt, greedy
//! tokens. Fixtures: tests/fixtures/gguf/<family>/ from
//! scripts/reference/gguf_tiny_fixtures.py.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor, D};
use ferroformer::models::gguf::GgufModel;
use serde_json::Value as Json;

/// Largest |Δ logit| allowed against llama.cpp (logits reach about ±4 in these models; the
/// fixture rounds them to 5 decimals, ±5e-6). Measured: Q8_0, Q4_K_M (Q4_K + Q6_K), Q6_K,
/// Q4_0 and Q2_K (+ Q3_K) files ≤ 5.8e-6 (llama.cpp's arithmetic reproduced to the last bit;
/// Q4_0 and Q2_K through candle's `QMatMul` instead: 5.3e-6 and 6.4e-6); F32 files ≤ 7.8e-6
/// except gemma2 (9.3e-5), phi3 (1.8e-4) and qwen3 (8.9e-4 at a few
/// late positions, where a last-bit difference in a dense f32 product flips the f16
/// rounding of a cached key; llama.cpp itself moves these logits by up to 2.5e-3 with an
/// f32 KV cache and 4e-3 with flash attention).
fn logit_tol(ty: &str) -> f32 {
    match ty {
        "q8_0" | "q4_k_m" | "q6_k" | "q4_0" | "q2_k" => 2e-5,
        "f32" => 1e-3,
        _ => 1.0,
    }
}

fn dir(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gguf")
        .join(family)
}

fn fixture(family: &str) -> Json {
    let path = dir(family).join("llama_cpp.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Checks one family at every stored type: tokenizer ids, prompt logits, greedy tokens.
fn check(family: &str, arch: &str) {
    let fx = fixture(family);
    let files = fx["files"].as_object().unwrap();
    assert!(
        files.len() >= 2,
        "two or more quantization types per family expected"
    );
    for (ty, rec) in files {
        let path = dir(family).join(rec["file"].as_str().unwrap());
        let model = GgufModel::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(model.config().architecture, arch);
        let tok = model.tokenizer();
        assert_eq!(
            tok.adds_bos(),
            rec["add_bos"].as_bool().unwrap(),
            "{family}/{ty}: add_bos"
        );

        // Token ids: llama_tokenize(add_bos = false, parse_special = true).
        let cases = rec["tokens"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let got = tok.encode(text, false).unwrap();
            assert_eq!(got, ids(&case["ids"]), "{family}/{ty}: tokens of {text:?}");
        }

        // Logits of every prompt position.
        let prompt = ids(&rec["prompt_ids"]);
        assert_eq!(
            tok.encode("def fib(n):\n    return the quick brown fox", false)
                .unwrap(),
            prompt
        );
        let x = Tensor::new(prompt.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model
            .forward(&x, None, None)
            .unwrap()
            .logits
            .squeeze(0)
            .unwrap();
        let want: Vec<Vec<f32>> = rec["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let want = Tensor::new(want, &Device::Cpu).unwrap();
        let diff = common::max_abs_diff(&logits, &want);
        let scale = common::max_abs("llama.cpp logits", &want);
        eprintln!("{family}/{ty}: max |Δ logit| {diff:.2e} (logits up to {scale:.2})");
        let tol = logit_tol(ty);
        assert!(diff <= tol, "{family}/{ty}: max |Δ logit| {diff} > {tol}");

        // Greedy continuation with the KV cache, one token at a time.
        let greedy = rec["greedy"].as_array().unwrap();
        let mut caches = model.new_caches();
        let mut out = model.forward(&x, None, Some(&mut caches)).unwrap().logits;
        let mut agree = 0;
        for (i, g) in greedy.iter().enumerate() {
            let last = out.narrow(1, out.dim(1).unwrap() - 1, 1).unwrap();
            let next = last
                .flatten_all()
                .unwrap()
                .argmax(D::Minus1)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap();
            let want = g["id"].as_u64().unwrap() as u32;
            let lead = g["lead"].as_f64().unwrap() as f32;
            // A near-tie (lead within the logit tolerance) may go either way.
            if next == want {
                agree += 1;
            } else {
                assert!(
                    lead <= 2.0 * tol,
                    "{family}/{ty}: greedy token {i}: {next}, llama.cpp {want} (lead {lead})"
                );
            }
            // Follow llama.cpp's choice so the sequences stay comparable.
            let step = Tensor::new(&[want], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            out = model
                .forward(&step, None, Some(&mut caches))
                .unwrap()
                .logits;
        }
        eprintln!("{family}/{ty}: greedy {agree}/{} equal", greedy.len());
        assert!(agree * 100 >= greedy.len() * 95, "{family}/{ty}: {agree}");
    }
}

#[test]
fn qwen2_matches_llama_cpp() {
    check("qwen2", "qwen2");
}

#[test]
fn qwen3_matches_llama_cpp() {
    check("qwen3", "qwen3");
}

#[test]
fn llama3_matches_llama_cpp() {
    check("llama3", "llama");
}

/// One of llama.cpp's tokenizer test vocabularies (`models/ggml-vocab-NAME.gguf`, metadata
/// only) against its expected ids (`.gguf.inp` / `.gguf.out`), as `test-tokenizer-0` reads
/// them: inputs separated by `\n__ggml_vocab_test__\n`, one line of ids each, tokenized
/// without BOS and without parsing special tokens. Returns the number of cases.
fn check_vocab(models: &Path, name: &str) -> usize {
    let gguf = models.join(format!("ggml-vocab-{name}.gguf"));
    let file = ferroformer::models::gguf::GgufFile::open(&gguf)
        .unwrap_or_else(|e| panic!("{}: {e}", gguf.display()));
    let mut tok = ferroformer::models::gguf_tokenizer::GgufTokenizer::from_gguf(&file)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    tok.set_parse_special(false);
    let read = |ext: &str| {
        let p = models.join(format!("ggml-vocab-{name}.gguf.{ext}"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let raw = read("inp");
    let out = read("out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs: Vec<&str> = Vec::new();
    let mut rest = raw.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                inputs.push(&rest[..i]);
                rest = &rest[i + sep.len()..];
            }
            None => {
                inputs.push(rest);
                break;
            }
        }
    }
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(inputs.len(), expected.len(), "{name}: .inp vs .out cases");
    let mut failed = Vec::new();
    for (text, want) in inputs.iter().zip(&expected) {
        let got = tok.encode(text, false).unwrap();
        if &got != want {
            failed.push(format!("{text:?}: got {got:?}, llama.cpp {want:?}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
    inputs.len()
}

/// Where llama.cpp's tokenizer test vocabularies are: `FERROFORMER_LLAMA_CPP_MODELS` (llama.cpp's
/// `models/` directory), else where `scripts/fetch_models.py llama-cpp-vocab` puts them (the
/// data cache: `$FERROFORMER_DATA`, else `~/.cache/ferroformer/datasets`).
fn llama_cpp_models_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FERROFORMER_LLAMA_CPP_MODELS") {
        return PathBuf::from(dir);
    }
    let data = std::env::var("FERROFORMER_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cache = std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
            cache.join("ferroformer").join("datasets")
        });
    data.join("llama_cpp_python-0.3.36").join("models")
}

/// llama.cpp's own tokenizer test vocabularies of the families read here (too large to
/// commit: qwen2 5.9 MB, llama-bpe 7.8 MB). `scripts/test.sh` fetches them from
/// llama-cpp-python's source package; without them the test fails and says how to get them.
#[test]
fn llama_cpp_tokenizer_test_vocabularies() {
    let models = llama_cpp_models_dir();
    assert!(
        models.join("ggml-vocab-qwen2.gguf").is_file(),
        "llama.cpp's test vocabularies are not in {}: run `python3 scripts/fetch_models.py \
         llama-cpp-vocab` or set FERROFORMER_LLAMA_CPP_MODELS to llama.cpp's models/ directory",
        models.display()
    );
    let models = models.as_path();
    for name in [
        "qwen2",
        "llama-bpe",
        "gpt-2",
        "starcoder",
        "refact",
        "command-r",
        "mpt",
        "llama-spm",
        "phi-3",
    ] {
        let n = check_vocab(models, name);
        eprintln!("{name}: {n} cases equal");
    }
}

/// A copy of fixture `family/file` in `dir` with its metadata edited by `edit`.
fn edited(
    dir: &Path,
    family: &str,
    file: &str,
    edit: impl Fn(&mut Vec<(String, Value)>),
) -> PathBuf {
    rewrite(dir, family, file, edit, |_| {})
}

/// A copy of fixture `family/file` in `dir` with its tensors edited by `edit`.
fn edited_tensors(
    dir: &Path,
    family: &str,
    file: &str,
    edit: impl Fn(&mut Vec<(String, QTensor)>),
) -> PathBuf {
    rewrite(dir, family, file, |_| {}, edit)
}

fn rewrite(
    dir: &Path,
    family: &str,
    file: &str,
    edit: impl Fn(&mut Vec<(String, Value)>),
    edit_tensors: impl Fn(&mut Vec<(String, QTensor)>),
) -> PathBuf {
    let src = self::dir(family).join(file);
    let mut f = std::fs::File::open(&src).unwrap();
    let content = Content::read(&mut f).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                content.tensor(&mut f, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let mut md: Vec<(String, Value)> = content.metadata.clone().into_iter().collect();
    edit(&mut md);
    edit_tensors(&mut tensors);
    let out = dir.join(file);
    let mut w = std::fs::File::create(&out).unwrap();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &md_refs, &t_refs).unwrap();
    out
}

fn set(md: &mut Vec<(String, Value)>, key: &str, value: Value) {
    md.retain(|(k, _)| k != key);
    md.push((key.to_string(), value));
}

#[test]
fn unsupported_architecture_names_the_key_and_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let path = edited(tmp.path(), "qwen2", "qwen2-q8_0.gguf", |md| {
        set(md, "general.architecture", Value::String("qwen2moe".into()))
    });
    let err = GgufModel::load(&path).unwrap_err().to_string();
    for want in [
        "general.architecture",
        "qwen2moe",
        "llama, qwen2, qwen3, gemma2, gemma3, phi3",
        "qwen2-q8_0.gguf",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn unsupported_pre_tokenizer_names_the_key_and_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let path = edited(tmp.path(), "qwen3", "qwen3-q8_0.gguf", |md| {
        set(
            md,
            "tokenizer.ggml.pre",
            Value::String("deepseek-v3".into()),
        )
    });
    let err = GgufModel::load(&path).unwrap_err().to_string();
    for want in [
        "tokenizer.ggml.pre",
        "deepseek-v3",
        "llama-bpe",
        "qwen2",
        "smollm",
        "qwen3-q8_0.gguf",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn unsupported_rope_scaling_type_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = edited(tmp.path(), "llama3", "llama3-q8_0.gguf", |md| {
        set(md, "llama.rope.scaling.type", Value::String("yarn".into()))
    });
    let err = GgufModel::load(&path).unwrap_err().to_string();
    for want in ["llama.rope.scaling.type", "yarn", "rope_freqs"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn rope_freqs_of_the_wrong_length_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = edited_tensors(tmp.path(), "llama3", "llama3-q8_0.gguf", |ts| {
        let short = Tensor::new(&[1f32, 2., 4.], &Device::Cpu).unwrap();
        for (name, t) in ts.iter_mut() {
            if name == "rope_freqs.weight" {
                *t = QTensor::quantize(&short, GgmlDType::F32).unwrap();
            }
        }
    });
    let err = GgufModel::load(&path).unwrap_err().to_string();
    for want in ["rope_freqs.weight", "[4]", "[3]", "llama3-q8_0.gguf"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn llama3_k_quants_match_llama_cpp() {
    check("llama3-kquant", "llama");
}

#[test]
fn mistral_matches_llama_cpp() {
    // `MistralForCausalLM` converts to `llama` with a SentencePiece vocabulary.
    check("mistral", "llama");
}

#[test]
fn gemma2_matches_llama_cpp() {
    check("gemma2", "gemma2");
}

#[test]
fn gemma2_k_quants_match_llama_cpp() {
    check("gemma2-kquant", "gemma2");
}

#[test]
fn phi3_matches_llama_cpp() {
    check("phi3", "phi3");
}

#[test]
fn gemma2_and_phi3_metadata_become_the_shared_blocks() {
    let g = GgufModel::load(dir("gemma2").join("gemma2-q8_0.gguf")).unwrap();
    let cfg = &g.config().decoder;
    let attn = &cfg.stack.layer.self_attention;
    assert_eq!((attn.head_dim, attn.softcap), (16, Some(3.0)));
    assert_eq!(cfg.final_logit_softcap, Some(5.0));
    let sw = cfg.stack.sliding_window.as_ref().unwrap();
    assert_eq!((sw.window, sw.layers.clone()), (6, vec![true, false]));
    assert_eq!(g.config().query_scale, Some(0.25));

    let p = GgufModel::load(dir("phi3").join("phi3-q8_0.gguf")).unwrap();
    let cfg = &p.config().decoder;
    // Rotary on 4 of 8 dims; llama.cpp runs Phi-3 without its sliding window.
    assert_eq!(cfg.stack.layer.self_attention.rotary_dim, Some(4));
    assert!(cfg.stack.sliding_window.is_none());
}

#[test]
fn gemma2_and_phi3_bad_metadata_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = edited(tmp.path(), "gemma2", "gemma2-q8_0.gguf", |md| {
        set(md, "gemma2.attn_logit_softcapping", Value::F32(f32::NAN))
    });
    let err = GgufModel::load(&path).unwrap_err().to_string();
    for want in ["gemma2.attn_logit_softcapping", "NaN", "gemma2-q8_0.gguf"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = edited_tensors(tmp.path(), "phi3", "phi3-q8_0.gguf", |ts| {
        let ones = Tensor::ones(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        ts.push((
            "rope_factors_long.weight".into(),
            QTensor::quantize(&ones, GgmlDType::F32).unwrap(),
        ));
    });
    let err = GgufModel::load(&path).unwrap_err().to_string();
    for want in ["rope_factors_long.weight", "longrope", "phi3-q8_0.gguf"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = edited(tmp.path(), "phi3", "phi3-q8_0.gguf", |md| {
        set(md, "phi3.attention.head_count_kv", Value::U32(4))
    });
    let err = GgufModel::load(&path).unwrap_err().to_string();
    for want in [
        "blk.0.attn_qkv.weight",
        "phi3.attention.head_count_kv",
        "[64, 32]",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

/// Phi-3 `longrope` GGUF (`rope_factors_short/long.weight`,
/// `phi3.rope.scaling.attn_factor`, original context 256 of 1024) against llama.cpp at
/// n_ctx 256 (short factors) and 512 (long factors): prompt logits and greedy tokens with
/// the KV cache, the choice fixed by the context size as llama.cpp makes it.
#[test]
fn phi3_longrope_matches_llama_cpp_at_both_context_sizes() {
    let fx = fixture("phi3-longrope");
    let path = dir("phi3-longrope").join("phi3-longrope-f32.gguf");
    let loaded = GgufModel::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let contexts = fx["contexts"].as_object().unwrap();
    assert_eq!(contexts.len(), 2);
    let tol = logit_tol("f32");
    let mut firsts = Vec::new();
    for (n_ctx, rec) in contexts {
        let n_ctx: usize = n_ctx.parse().unwrap();
        assert_eq!(rec["n_ctx_seq"].as_u64().unwrap() as usize, n_ctx);
        let model = loaded.clone().with_context_size(n_ctx);
        let prompt = ids(&rec["prompt_ids"]);
        assert_eq!(
            model
                .tokenizer()
                .encode("def fib(n):\n    return the quick brown fox", false)
                .unwrap(),
            prompt
        );
        let x = Tensor::new(prompt.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model
            .forward(&x, None, None)
            .unwrap()
            .logits
            .squeeze(0)
            .unwrap();
        let want: Vec<Vec<f32>> = rec["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let want = Tensor::new(want, &Device::Cpu).unwrap();
        let diff = common::max_abs_diff(&logits, &want);
        eprintln!("phi3-longrope n_ctx {n_ctx}: max |Δ logit| {diff:.2e}");
        assert!(diff <= tol, "n_ctx {n_ctx}: max |Δ logit| {diff} > {tol}");
        firsts.push(want);

        let mut caches = model.new_caches();
        let mut out = model.forward(&x, None, Some(&mut caches)).unwrap().logits;
        let greedy = rec["greedy"].as_array().unwrap();
        let mut agree = 0;
        for (i, g) in greedy.iter().enumerate() {
            let last = out.narrow(1, out.dim(1).unwrap() - 1, 1).unwrap();
            let next = last
                .flatten_all()
                .unwrap()
                .argmax(D::Minus1)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap();
            let want = g["id"].as_u64().unwrap() as u32;
            if next == want {
                agree += 1;
            } else {
                let lead = g["lead"].as_f64().unwrap() as f32;
                assert!(
                    lead <= 2.0 * tol,
                    "n_ctx {n_ctx}: greedy token {i}: {next}, llama.cpp {want} (lead {lead})"
                );
            }
            let step = Tensor::new(&[want], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            out = model
                .forward(&step, None, Some(&mut caches))
                .unwrap()
                .logits;
        }
        assert!(agree * 100 >= greedy.len() * 95, "n_ctx {n_ctx}: {agree}");
    }
    // The two context sizes give different logits: both factor sets were exercised.
    assert!(common::max_abs_diff(&firsts[0], &firsts[1]) > 0.1);

    // Without a context size the choice is per pass, as in `transformers`: this short
    // prompt (within 256 positions) gets the short factors, as llama.cpp at n_ctx 256.
    let rec = &contexts["256"];
    let prompt = ids(&rec["prompt_ids"]);
    let x = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = loaded
        .forward(&x, None, None)
        .unwrap()
        .logits
        .squeeze(0)
        .unwrap();
    assert!(common::max_abs_diff(&logits, &firsts[0]) <= tol);

    // One factor tensor without the other is named.
    let tmp = tempfile::tempdir().unwrap();
    let path = edited_tensors(
        tmp.path(),
        "phi3-longrope",
        "phi3-longrope-f32.gguf",
        |ts| ts.retain(|(name, _)| name != "rope_factors_short.weight"),
    );
    let err = GgufModel::load(&path).unwrap_err().to_string();
    for want in [
        "rope_factors_long.weight",
        "rope_factors_short.weight",
        "needs both",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    // Factors of the wrong length are named.
    let tmp = tempfile::tempdir().unwrap();
    let path = edited_tensors(
        tmp.path(),
        "phi3-longrope",
        "phi3-longrope-f32.gguf",
        |ts| {
            for (name, t) in ts.iter_mut() {
                if name == "rope_factors_long.weight" {
                    let short = Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap();
                    *t = QTensor::quantize(&short, GgmlDType::F32).unwrap();
                }
            }
        },
    );
    let err = GgufModel::load(&path).unwrap_err().to_string();
    assert!(err.contains("rope_factors_long.weight"), "{err}");
}
