//! The `ferroformer` binary end to end: pictures, inspection, and clear failures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferroformer"))
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run ferroformer")
}

/// Decodes a PNG and returns (width, height, number of distinct colours).
fn png_stats(path: &Path) -> (u32, u32, usize) {
    let img = image::open(path).expect("valid PNG").to_rgb8();
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort();
    colours.dedup();
    (img.width(), img.height(), colours.len())
}

#[test]
fn viz_positional_encoding_draws_a_heatmap() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pe.png");
    let o = run(&[
        "viz",
        "positional-encoding",
        "--d-model",
        "128",
        "--max-len",
        "100",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (w, h, colours) = png_stats(&out);
    // 128 columns and 100 rows of 4-pixel cells plus an 8-pixel margin on each side.
    assert_eq!((w, h), (128 * 4 + 16, 100 * 4 + 16));
    assert!(
        colours > 50,
        "heatmap should not be uniform: {colours} colours"
    );
}

#[test]
fn viz_attention_draws_one_panel_per_head() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("attn.png");
    let model = fixtures().join("tiny-bert");
    let o = run(&[
        "viz",
        "attention",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        "2,15,40,7,3",
        "--layer",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (w, h, colours) = png_stats(&out);
    // 4 heads in one row, 5 x 5 cells of 16 px, 8 px gaps.
    assert_eq!((w, h), (4 * 80 + 5 * 8, 80 + 2 * 8));
    assert!(
        colours > 10,
        "attention panels should not be uniform: {colours} colours"
    );
}

#[test]
fn inspect_json_counts_parameters() {
    let model = fixtures().join("tiny-gpt2");
    let o = run(&["inspect", model.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON document");
    assert_eq!(v["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(v["model_type"], "gpt2");
    // Tiny GPT-2: vocab 101, 32 positions, width 32, 2 layers, FFN 128, tied head:
    // wte 3232 + wpe 1024 + 2 * (ln 64 + c_attn 3168 + c_proj 1056 + ln 64 + c_fc 4224 + c_proj 4128) + ln_f 64.
    let per_layer = 64 + 32 * 96 + 96 + 32 * 32 + 32 + 64 + 32 * 128 + 128 + 128 * 32 + 32;
    let expected = 101 * 32 + 32 * 32 + 2 * per_layer + 64;
    assert_eq!(v["total_parameters"], expected);
    let modules = v["modules"].as_array().unwrap();
    let layer0 = modules
        .iter()
        .find(|m| m["name"] == "transformer.h.0")
        .unwrap();
    assert_eq!(layer0["parameters"], per_layer);
    assert_eq!(v["dtypes"]["f32"], expected);
}

#[test]
fn bad_input_is_a_clear_error_with_nonzero_exit() {
    let o = run(&["inspect", "/nonexistent/model"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/model")
            && err.contains("neither an existing file or directory nor a hub id"),
        "{err}"
    );

    // A truncated safetensors file is named as such.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("tiny-bert/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(fixtures().join("tiny-bert/model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let png = dir.path().join("a.png");
    let o = run(&[
        "viz",
        "attention",
        "--model",
        dir.path().to_str().unwrap(),
        "--ids",
        "1,2",
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("model.safetensors") && err.contains("not a valid safetensors file"),
        "{err}"
    );

    // Token ids outside the vocabulary.
    let o = run(&[
        "viz",
        "attention",
        "--model",
        fixtures().join("tiny-bert").to_str().unwrap(),
        "--ids",
        "1,500",
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("input_ids must be in 0..99"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
