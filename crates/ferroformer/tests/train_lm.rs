//! Language-model training end to end on a small corpus: the loss falls, a stopped and
//! resumed run equals an uninterrupted one, checkpoints load back, bad settings are clear
//! errors that overwrite nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device};
use ferroformer::generation::{generate_stream, GenerationConfig};
use ferroformer::models::auto::causal_lm_from_dir;
use ferroformer::train::tokenizer::{save_tokenizer, train_tokenizer, TokenizerKind, END_OF_TEXT};
use ferroformer::train::{train_lm, Preset, TrainConfig, TrainEvent};

const TEXT: &str = "ROMEO: But soft, what light through yonder window breaks?\n\
It is the east, and Juliet is the sun.\n\
JULIET: O Romeo, Romeo, wherefore art thou Romeo?\n\
Deny thy father and refuse thy name.\n";

fn setup(name: &str) -> (PathBuf, TrainConfig) {
    let dir = std::env::temp_dir().join(format!("ferroformer-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, TEXT.repeat(30)).unwrap();
    let tok = train_tokenizer(
        TokenizerKind::Char,
        200,
        std::slice::from_ref(&corpus),
        &[END_OF_TEXT.to_string()],
    )
    .unwrap();
    let tok_path = dir.join("tokenizer.json");
    save_tokenizer(&tok, &tok_path).unwrap();
    let cfg = TrainConfig {
        preset: Preset::Gpt2,
        data: vec![corpus],
        tokenizer: Some(tok_path),
        out: dir.join("run"),
        layers: 2,
        d_model: 32,
        heads: 4,
        context_length: 16,
        dropout: 0.1,
        batch_size: 4,
        lr: 3e-3,
        warmup_steps: 2,
        max_steps: 8,
        eval_every: 4,
        eval_windows: 8,
        save_every: 100,
        log_every: 1,
        seed: 7,
        ..TrainConfig::default()
    };
    (dir, cfg)
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v["loss"].as_f64()?)))
        .collect()
}

fn quiet(_: &TrainEvent) {}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let (dir, cfg) = setup("resume");
    let never = AtomicBool::new(false);
    // Uninterrupted.
    train_lm(&cfg, false, &never, &mut quiet).unwrap();
    let full = losses(&cfg.out);
    assert_eq!(full.len(), 8);
    assert!(full[7].1 < full[0].1, "loss should fall: {full:?}");

    // Stopped after step 3 (as Ctrl-C does), then resumed.
    let mut cfg2 = cfg.clone();
    cfg2.out = dir.join("run2");
    let stop = AtomicBool::new(false);
    let mut stopper = |e: &TrainEvent| {
        if let TrainEvent::Step { step: 3, .. } = e {
            stop.store(true, Ordering::SeqCst);
        }
    };
    train_lm(&cfg2, false, &stop, &mut stopper).unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cfg2.out.join("training_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 3, "the interrupted run saved at step 3");
    train_lm(&cfg2, true, &never, &mut quiet).unwrap();
    let resumed = losses(&cfg2.out);
    assert_eq!(resumed.len(), full.len());
    for ((s1, a), (s2, b)) in full.iter().zip(&resumed) {
        assert_eq!(s1, s2);
        assert!((a - b).abs() <= 1e-5, "step {s1}: {a} vs {b}");
    }
    // The final weights are the same too.
    let w1 =
        candle_core::safetensors::load(cfg.out.join("model.safetensors"), &Device::Cpu).unwrap();
    let w2 =
        candle_core::safetensors::load(cfg2.out.join("model.safetensors"), &Device::Cpu).unwrap();
    for (name, t) in &w1 {
        let d = common::max_abs_diff(t, &w2[name]);
        assert!(d <= 1e-6, "{name} differs by {d}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoints_reload_and_generate_for_every_preset() {
    for preset in [Preset::Course, Preset::Gpt2, Preset::Llama] {
        let (dir, mut cfg) = setup(&format!("{preset:?}"));
        cfg.preset = preset;
        cfg.max_steps = 3;
        cfg.dropout = 0.0;
        train_lm(&cfg, false, &AtomicBool::new(false), &mut quiet).unwrap();
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "generation_config.json",
            "training_state.json",
            "loss.png",
        ] {
            assert!(cfg.out.join(f).is_file(), "{preset:?}: missing {f}");
        }
        let model = causal_lm_from_dir(&cfg.out, DType::F32, &Device::Cpu).unwrap();
        let greedy = GenerationConfig::greedy(5);
        let run = || {
            generate_stream(&model, &[3, 4, 5], &greedy, None, |_| Ok(true))
                .unwrap()
                .tokens
        };
        let (a, b) = (run(), run());
        assert_eq!(a.len(), 5);
        assert_eq!(a, b, "greedy decoding is deterministic");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn bad_settings_are_clear_errors_and_overwrite_nothing() {
    let (dir, cfg) = setup("errors");
    // Unknown key, with a suggestion.
    let mut c = cfg.clone();
    let err = c.set("d-modle", "64").unwrap_err().to_string();
    assert!(
        err.contains("d-modle") && err.contains("did you mean `d_model`"),
        "{err}"
    );
    let toml = dir.join("run.toml");
    std::fs::write(&toml, "layers = 2\nlearning_rate = 0.1\n").unwrap();
    let err = TrainConfig::from_toml_file(&toml).unwrap_err().to_string();
    assert!(
        err.contains("learning_rate") && err.contains("run.toml"),
        "{err}"
    );

    // An empty corpus.
    let mut c = cfg.clone();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    c.data = vec![empty];
    c.out = dir.join("run-empty");
    let err = train_lm(&c, false, &AtomicBool::new(false), &mut quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty corpus"), "{err}");

    // A file that is not UTF-8.
    let mut c = cfg.clone();
    let bad = dir.join("latin1.txt");
    std::fs::write(&bad, b"caf\xe9 au lait\n").unwrap();
    c.data = vec![bad];
    c.out = dir.join("run-bad");
    let err = train_lm(&c, false, &AtomicBool::new(false), &mut quiet)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("latin1.txt") && err.contains("byte offset 3"),
        "{err}"
    );

    // Resuming with a model that does not match the checkpoint; then starting over an existing run.
    let mut c = cfg.clone();
    c.max_steps = 2;
    train_lm(&c, false, &AtomicBool::new(false), &mut quiet).unwrap();
    let before = std::fs::read(c.out.join("model.safetensors")).unwrap();
    let mut bigger = c.clone();
    bigger.context_length = 32;
    let err = train_lm(&bigger, true, &AtomicBool::new(false), &mut quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("different model configuration"), "{err}");
    let err = train_lm(&c, false, &AtomicBool::new(false), &mut quiet)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already holds a training run") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        before,
        std::fs::read(c.out.join("model.safetensors")).unwrap(),
        "nothing overwritten"
    );

    // Sampling settings.
    let model = causal_lm_from_dir(&c.out, DType::F32, &Device::Cpu).unwrap();
    for (cfg, what) in [
        (
            GenerationConfig {
                top_p: 1.5,
                ..GenerationConfig::greedy(5)
            },
            "top_p",
        ),
        (
            GenerationConfig {
                temperature: -1.0,
                ..GenerationConfig::greedy(5)
            },
            "temperature",
        ),
    ] {
        let err = generate_stream(&model, &[1], &cfg, None, |_| Ok(true))
            .unwrap_err()
            .to_string();
        assert!(err.contains(what), "{err}");
    }
    // A prompt longer than the model's context.
    let long = vec![1u32; 40];
    let err = generate_stream(&model, &long, &GenerationConfig::greedy(5), None, |_| {
        Ok(true)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("40 tokens long") && err.contains("context is 16"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sampling_is_reproducible_from_a_seed() {
    use ferroformer::generation::logits::sample;
    use ferroformer::generation::LogitsProcessor;
    use rand::SeedableRng;
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 50) as f32 * 0.1).collect();
    let draw = |seed: u64, top_k: usize, top_p: f64| {
        let cfg = GenerationConfig {
            do_sample: true,
            temperature: 0.8,
            top_k,
            top_p,
            seed,
            ..GenerationConfig::default()
        };
        cfg.validate().unwrap();
        let proc = LogitsProcessor::new(&cfg, 0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..20)
            .map(|_| {
                let mut scores = logits.clone();
                proc.warp(&mut scores);
                sample(&scores, &mut rng)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(1, 0, 1.0), draw(1, 0, 1.0));
    assert_ne!(draw(1, 0, 1.0), draw(2, 0, 1.0));
    // top_k = 1 is greedy.
    let best = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32;
    assert!(draw(3, 1, 1.0).iter().all(|&t| t == best));
    // A tiny top_p keeps only the most likely token.
    assert!(draw(4, 0, 1e-6).iter().all(|&t| t == best));
    // top_k = 3 never leaves the three most likely tokens.
    let mut order: Vec<usize> = (0..50).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let top3: Vec<u32> = order[..3].iter().map(|&i| i as u32).collect();
    let threshold = logits[order[2]];
    assert!(
        draw(5, 3, 1.0)
            .iter()
            .all(|&t| logits[t as usize] >= threshold),
        "{top3:?}"
    );
}

/// AdamW equals `torch.optim.AdamW` (fixture from scripts/reference/optim_fixtures.py): five
/// steps with a changing learning rate, a decayed matrix and an undecayed vector, ending at the
/// same parameters and moments within 1e-6.
#[test]
fn adamw_matches_pytorch() {
    use candle_core::{Tensor, Var};
    use ferroformer::train::optim::{AdamW, AdamWConfig};
    use std::collections::HashMap;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/adamw.safetensors");
    let f = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let vars: HashMap<String, Var> = ["w", "b"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Var::from_tensor(&f[&format!("{n}0")]).unwrap(),
            )
        })
        .collect();
    let cfg = AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut opt = AdamW::new(&vars, cfg).unwrap();
    let (decayed, plain) = opt.groups();
    assert_eq!((decayed, plain), (vec!["w"], vec!["b"]));
    let lrs = f["lr"].to_vec1::<f64>().unwrap();
    for (t, lr) in lrs.iter().enumerate() {
        let grads: HashMap<String, Tensor> = ["w", "b"]
            .iter()
            .map(|n| (n.to_string(), f[&format!("g{n}{t}")].clone()))
            .collect();
        opt.step(&grads, *lr).unwrap();
    }
    let max_diff = common::max_abs_diff;
    for n in ["w", "b"] {
        let got = vars[n].as_tensor();
        let d = max_diff(got, &f[&format!("{n}5")]);
        assert!(d <= 1e-6, "{n} after 5 steps: max abs diff {d:e}");
        assert!(
            max_diff(got, &f[&format!("{n}0")]) > 1e-4,
            "{n} did not move"
        );
    }
    let state = opt.state_tensors();
    for key in ["m.w", "v.w", "m.b", "v.b"] {
        let d = max_diff(&state[key], &f[key]);
        assert!(d <= 1e-6, "{key}: max abs diff {d:e}");
    }
}
