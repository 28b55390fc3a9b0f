//! The training data reader: a corpus of arbitrary `.txt` and `.jsonl` files (and an
//! arbitrary `manifest.json` already in the token cache) through `tokenize_corpus` with a
//! character tokenizer, then the token files it wrote through `TokenFile` and
//! `WindowSampler`, and `TokenFile::open` on arbitrary bytes.
//!
//! Input: framed records (see `ferroformer_fuzz`): 0 `a.txt`, 1 `b.jsonl`, 2 `docs/c.txt`,
//! 3 the cache's `manifest.json`, 4 a raw token file, 5 options (byte 0: lossy + whether
//! `docs/` is the validation set, byte 1: end-of-text id, byte 2: validation fraction,
//! byte 3: context length, the rest: the JSONL text field).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ferroformer::train::data::{tokenize_corpus, CorpusOptions, TokenFile, WindowSampler};
use libfuzzer_sys::fuzz_target;
use tokenizers::Tokenizer;

fn char_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        include_str!("../../tests/fixtures/tokenizers/char.json")
            .parse()
            .expect("char.json is a tokenizer")
    })
}

/// Reads every token and draws a few batches, as training does.
fn sample(tokens: &TokenFile, context_length: usize) {
    let Ok(sampler) = WindowSampler::new(tokens.len(), context_length, 7) else {
        return;
    };
    for step in 0..3 {
        let (inputs, labels) = sampler.batch(tokens.tokens(), step, 2);
        assert_eq!(inputs.len(), labels.len());
        let _ = sampler.epoch(step, 2);
    }
    let _ = sampler.sequential_batches(tokens.tokens(), 3, 4);
}

fuzz_target!(|data: &[u8]| {
    let records = ferroformer_fuzz::records(data, 6);
    let scratch = ferroformer_fuzz::scratch_dir();
    let root = scratch.path();
    std::fs::create_dir(root.join("docs")).expect("scratch dir is writable");
    std::fs::create_dir(root.join("cache")).expect("scratch dir is writable");
    let names = [
        "a.txt",
        "b.jsonl",
        "docs/c.txt",
        "cache/manifest.json",
        "tokens.bin",
    ];
    for record in &records {
        if let Some(name) = names.get(record.id) {
            ferroformer_fuzz::write(root, name, record.bytes);
        }
    }

    if let Ok(tokens) = TokenFile::open(&root.join("tokens.bin")) {
        sample(&tokens, 4);
    }

    let options = ferroformer_fuzz::last(&records, 5).unwrap_or(&[]);
    let byte = |i: usize| options.get(i).copied().unwrap_or(0);
    let text_field = match options.get(4..) {
        Some(field) if !field.is_empty() => String::from_utf8_lossy(field).into_owned(),
        _ => "text".to_string(),
    };
    let opts = CorpusOptions {
        text_field,
        lossy: byte(0) & 1 == 1,
        end_of_text: (byte(1) != 0).then(|| u32::from(byte(1)) - 1),
        val_fraction: f64::from(byte(2)) / 256.0,
        val_files: if byte(0) & 2 != 0 {
            vec![root.join("docs")]
        } else {
            Vec::new()
        },
    };
    let context_length = usize::from(byte(3) % 16);
    let inputs: Vec<PathBuf> = vec![root.to_path_buf()];
    let out = root.join("cache");
    let split = tokenize_corpus(&inputs, char_tokenizer(), &opts, &out);
    ferroformer_fuzz::report("tokenize_corpus", &split);
    if let Ok(split) = split {
        sample(&split.train, context_length);
        sample(&split.val, context_length);
        // The second run reuses the cache and must give the same tokens.
        let again = tokenize_corpus(&inputs, char_tokenizer(), &opts, &out)
            .expect("the cache just written is reused");
        assert_eq!(split.train.tokens(), again.train.tokens());
        assert_eq!(split.val.tokens(), again.val.tokens());
    }
});
