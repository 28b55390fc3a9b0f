//! Gemma 3 270M (Q4_K_M GGUF, `general.architecture = gemma3`) against llama.cpp: fixtures in
//! tests/fixtures/gguf/gemma3/ from `scripts/reference/gguf_fixtures.py --family gemma3`.
//!
//! The model comes from the hub cache, where `scripts/fetch_models.py gemma3-270m` places it
//! (`scripts/test.sh` fetches it); a missing file fails the test rather than skipping it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use ferroformer::arch::PositionalKind;
use ferroformer::generation::{generate_stream, GenerationConfig};
use ferroformer::models::gguf::{GgufConfig, GgufFile, GgufModel};
use ferroformer::models::hub;
use ferroformer::nn::{Activation, Arithmetic, RopeLayout, WeightMatrix};
use serde_json::Value as Json;

const HUB_ID: &str = "unsloth/gemma-3-270m-GGUF";
const FILENAME: &str = "gemma-3-270m-Q4_K_M.gguf";

fn gemma_path() -> PathBuf {
    let dir = hub::resolve_local(HUB_ID).unwrap_or_else(|e| {
        panic!(
            "{e}\nrun `python3 scripts/fetch_models.py gemma3-270m` to place the packaged GGUF \
             in the hub cache"
        )
    });
    let path = dir.join(FILENAME);
    assert!(
        path.is_file(),
        "{} is missing; run `python3 scripts/fetch_models.py gemma3-270m`",
        path.display()
    );
    path
}

fn gemma() -> &'static GgufModel {
    static MODEL: OnceLock<GgufModel> = OnceLock::new();
    MODEL.get_or_init(|| GgufModel::load(gemma_path()).unwrap())
}

fn fixture(name: &str) -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gguf/gemma3")
        .join(name);
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

fn floats(v: &Json) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn config_comes_from_the_metadata() {
    let file = GgufFile::open(gemma_path()).unwrap();
    let cfg = GgufConfig::from_file(&file).unwrap();
    assert_eq!(cfg.architecture, "gemma3");
    let d = &cfg.decoder;
    let attn = &d.stack.layer.self_attention;
    assert_eq!(d.stack.num_layers, 18);
    // Head width 256, not 640 / 4.
    assert_eq!(
        (
            attn.d_model,
            attn.num_heads,
            attn.num_kv_heads,
            attn.head_dim
        ),
        (640, 4, 1, 256)
    );
    let ffn = &d.stack.layer.feed_forward;
    assert_eq!(
        (ffn.d_ff, ffn.gated, ffn.activation),
        (2048, true, Activation::GeluTanh)
    );
    assert_eq!(d.embeddings.vocab_size, 262144);
    assert_eq!(d.embeddings.scale, Some((640f32).sqrt() as f64));
    assert_eq!(
        d.embeddings.positional,
        PositionalKind::Rotary {
            base: 1_000_000.0,
            layout: RopeLayout::HalfSplit,
            scaling: None,
        }
    );
    // Queries scaled by 1/sqrt(256) before the product, 1 inside the softmax.
    assert_eq!(attn.scale, Some(1.0));
    assert_eq!(cfg.query_scale, Some(1.0 / 16.0));
    let sw = d.stack.sliding_window.as_ref().expect("sliding window");
    assert_eq!(sw.window, 512);
    assert_eq!(sw.local_rope_base, Some(10_000.0));
    let global: Vec<usize> = (0..18).filter(|&i| !sw.layers[i]).collect();
    assert_eq!(global, vec![5, 11, 17], "every 6th layer is global");
    assert!(d.tie_word_embeddings);
    assert_eq!(d.arithmetic, Arithmetic::Ggml);
    assert!((d.stack.layer.norm.eps - 1e-6).abs() < 1e-12);

    let tok = gemma().tokenizer();
    assert_eq!(tok.bos_token_id(), Some(2));
    assert_eq!(tok.eos_token_id(), Some(1));
    assert!(tok.adds_bos(), "tokenizer.ggml.add_bos_token is true");
    // `<end_of_turn>` (106) ends a generation, as in llama.cpp.
    assert_eq!(tok.stop_token_ids(), vec![1, 106]);
}

#[test]
fn k_quants_and_q5_0_stay_quantized() {
    let file = GgufFile::open(gemma_path()).unwrap();
    let expect = [
        ("token_embd.weight", vec![262144, 640], GgmlDType::Q8_0),
        ("blk.0.attn_q.weight", vec![1024, 640], GgmlDType::Q5_0),
        ("blk.0.attn_output.weight", vec![640, 1024], GgmlDType::Q4K),
        ("blk.0.ffn_down.weight", vec![640, 2048], GgmlDType::Q6K),
    ];
    for (name, shape, dtype) in expect {
        assert_eq!(file.tensor_info(name).unwrap(), (shape, dtype), "{name}");
    }
    for (prefix, inp, out, dtype) in [
        ("blk.0.attn_output", 1024, 640, GgmlDType::Q4K),
        ("blk.0.ffn_down", 2048, 640, GgmlDType::Q6K),
        ("blk.0.ffn_gate", 640, 2048, GgmlDType::Q5_0),
    ] {
        match file.linear(prefix, inp, out).unwrap().weight() {
            WeightMatrix::Quantized(q) => assert_eq!(q.dtypes(), vec![dtype], "{prefix}"),
            WeightMatrix::Dense(_) => panic!("{prefix} was dequantized"),
        }
    }
}

#[test]
fn tokenizer_ids_equal_llama_cpp() {
    let tok = gemma().tokenizer();
    let f = fixture("tokens.json");
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids"]);
        // The fixture's ids are without BOS (`add_bos=False`).
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, expected, "token ids of {text:?}");
        // Byte fallback loses nothing: decoding gives the text back.
        assert_eq!(tok.decode(&got, false).unwrap(), text);
    }
    // BOS in front when special tokens are added, as the metadata asks.
    assert_eq!(tok.encode("Hi", true).unwrap()[0], 2);
}

fn log_softmax_rows(logits: &Tensor) -> Vec<Vec<f64>> {
    logits
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap()
        .into_iter()
        .map(|row| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            row.into_iter().map(|x| x - lse).collect()
        })
        .collect()
}

/// 1000 tokens (BOS + Milton), more than the sliding window of 512: the local layers see
/// only their window from position 512 on.
#[test]
fn teacher_forced_predictions_match_llama_cpp() {
    let model = gemma();
    let f = fixture("perplexity.json");
    let input = ids(&f["ids"]);
    let top1_ref = ids(&f["top1"]);
    let lp_ref = floats(&f["logprob_next"]);
    let ppl_ref = f["perplexity"].as_f64().unwrap();
    let top1_f32kv = ids(&f["f32_kv_cache"]["top1"]);
    assert!(input.len() >= 1000 && input[0] == 2);

    let x = Tensor::new(input.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model
        .forward(&x, None, None)
        .unwrap()
        .logits
        .squeeze(0)
        .unwrap();
    let lp = log_softmax_rows(&logits);
    let n = input.len() - 1;
    let (mut agree, mut agree_past_window, mut floor) = (0, 0, 0);
    let mut nll = 0.0;
    let mut worst: f64 = 0.0;
    let mut mean_abs = 0.0;
    for pos in 0..n {
        let row = &lp[pos];
        let top = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        agree += usize::from(top == top1_ref[pos]);
        if pos >= 512 {
            agree_past_window += usize::from(top == top1_ref[pos]);
        }
        floor += usize::from(top1_f32kv[pos] == top1_ref[pos]);
        let l = row[input[pos + 1] as usize];
        assert!(l.is_finite(), "log p(next) at position {pos} is {l}");
        nll -= l;
        worst = worst.max((l - lp_ref[pos]).abs());
        mean_abs += (l - lp_ref[pos]).abs() / n as f64;
    }
    let agreement = agree as f64 / n as f64;
    let past_window = agree_past_window as f64 / (n - 512) as f64;
    let floor = floor as f64 / n as f64;
    let ppl = (nll / n as f64).exp();
    let rel = (ppl - ppl_ref).abs() / ppl_ref;
    eprintln!(
        "top-1 agreement with llama.cpp {:.2}% ({agree}/{n}; past the window {:.2}%; llama.cpp \
         with an f32 KV cache: {:.2}%); perplexity {ppl:.4} vs {ppl_ref:.4} ({:.3}%); \
         |Δ log p(next)| mean {mean_abs:.5}, max {worst:.4}",
        agreement * 100.0,
        past_window * 100.0,
        floor * 100.0,
        rel * 100.0
    );
    // The bars: perplexity within 1% and top-1 agreement of at least 99%. This
    // model is chaotic in its 8-bit activation roundings (llama.cpp with only its KV cache
    // in f32 agrees with itself at ~96%, and llama.cpp decoding one token at a time agrees
    // with its own batch run at 95.4%), so 99% takes llama.cpp's arithmetic to the bit:
    // measured 100.00% (999/999) and log-probabilities equal to the fixture's 5 decimals.
    assert!(rel <= 0.01, "perplexity {ppl} vs llama.cpp's {ppl_ref}");
    assert!(
        agreement >= 0.99,
        "top-1 agreement with llama.cpp: {agreement} (f32-cache llama.cpp: {floor})"
    );
    assert!(
        past_window >= 0.99,
        "top-1 agreement past the sliding window: {past_window}"
    );
    assert!(worst <= 1e-4, "largest |Δ log p(next)| {worst}");
}

#[test]
fn greedy_generation_equals_llama_cpp() {
    let model = gemma();
    let f = fixture("greedy.json");
    for case in f["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = model.tokenizer().encode(prompt, true).unwrap();
        assert_eq!(prompt_ids, ids(&case["prompt_ids"]), "{prompt:?}");
        let expected = ids(&case["new_ids"]);
        let leads = floats(&case["leads"]);
        let cfg = GenerationConfig::greedy(expected.len());
        let got = generate_stream(model.decoder(), &prompt_ids, &cfg, None, |_| Ok(true))
            .unwrap()
            .tokens;
        let text = model.tokenizer().decode(&got, false).unwrap();
        eprintln!("{prompt:?} -> {text:?}");
        // Prompt and decoding steps compute llama.cpp's logits bit for bit (its batch
        // kernels for the prompt, its single-row ones for each step), so every token is
        // llama.cpp's, near ties included.
        assert_eq!(
            got, expected,
            "{prompt:?}: {text:?} vs llama.cpp's {:?} (leads {leads:?})",
            case["text"]
        );
        assert_eq!(got.len(), expected.len(), "{prompt:?}: length");
    }
}

/// Decoding step by step past the window with the KV cache gives the logits of one pass
/// over the whole sequence, up to rounding noise: the sliding-window mask of a cached step
/// (one query, more keys than the window) masks what the full pass masks.
#[test]
fn cached_decoding_past_the_window_equals_the_full_pass() {
    let model = gemma();
    let input = ids(&fixture("perplexity.json")["ids"]);
    let n = 520;
    let dev = Device::Cpu;
    let full = model
        .forward(
            &Tensor::new(&input[..n], &dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            None,
            None,
        )
        .unwrap()
        .logits
        .squeeze(0)
        .unwrap();
    let mut caches = model.new_caches();
    let start = 510;
    let (mut worst_mean, mut same_top) = (0f64, 0usize);
    model
        .forward(
            &Tensor::new(&input[..start], &dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            None,
            Some(&mut caches),
        )
        .unwrap();
    for (pos, &token) in input.iter().enumerate().take(n).skip(start) {
        let step = model
            .forward(
                &Tensor::new(&[token], &dev).unwrap().unsqueeze(0).unwrap(),
                None,
                Some(&mut caches),
            )
            .unwrap()
            .logits
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = full.get(pos).unwrap().to_vec1::<f32>().unwrap();
        let mean = step
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() as f64)
            .sum::<f64>()
            / want.len() as f64;
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
        };
        eprintln!(
            "position {pos}: mean |Δ logit| {mean:.5}, top-1 {} vs {}",
            argmax(&step),
            argmax(&want)
        );
        worst_mean = worst_mean.max(mean);
        same_top += usize::from(argmax(&step) == argmax(&want));
    }
    // The steps are not bit for bit the full pass (candle's K-quant products are not ours),
    // and once a last-bit difference flips an 8-bit activation rounding the logits move by
    // ~0.1-0.2 on average (position 517 here). A step that saw keys outside its window, or
    // missed some inside, is further off than that, and its top-1 changes.
    assert!(worst_mean < 0.5, "mean |Δ logit| up to {worst_mean}");
    assert!(
        same_top >= n - start - 1,
        "top-1 equal at {same_top} of {} positions",
        n - start
    );
}

/// The file has no `tokenizer.chat_template`; Gemma 3's own template renders the
/// conversation as `transformers`' `apply_chat_template` does (expected text rendered with
/// transformers 4.57's Jinja environment), and `<end_of_turn>` ends the model's turn.
#[test]
fn gemma_chat_template_renders_as_transformers() {
    use ferroformer::models::{ChatMessage, ChatTemplate};
    let template = ChatTemplate::from_gguf(gemma().tokenizer(), &gemma_path()).unwrap();
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", " Hi! "),
        ChatMessage::new("assistant", "Hello."),
        ChatMessage::new("user", "Name a sea."),
    ];
    assert_eq!(
        template.render(&messages, true).unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\n\
         Hello.<end_of_turn>\n<start_of_turn>user\nName a sea.<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    assert_eq!(template.end_of_turn_markers(), vec!["<end_of_turn>"]);
}
