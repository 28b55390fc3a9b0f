//! Tokenizer loading: a directory of arbitrary tokenizer files (`tokenizer.json`,
//! `tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json`, `vocab.txt`,
//! `vocab.json` + `merges.txt`) through `AutoTokenizer::from_dir`, then encoding and
//! decoding a text (and a pair) with options taken from the input.
//!
//! Input: an options byte, then framed records (see `ferroformer_fuzz`); ids 0..=6 are the
//! files above, 7 the text and 8 the second text of a pair.
#![no_main]

use ferroformer::models::{AutoTokenizer, EncodeOptions, PaddingStrategy, TruncationStrategy};
use libfuzzer_sys::fuzz_target;

/// The files a record can be, by id (then the two texts).
const FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let records = ferroformer_fuzz::records(rest, FILES.len() + 2);
    let dir = ferroformer_fuzz::scratch_dir();
    for record in &records {
        if let Some(name) = FILES.get(record.id) {
            ferroformer_fuzz::write(dir.path(), name, record.bytes);
        }
    }
    let tokenizer = AutoTokenizer::from_dir(dir.path());
    ferroformer_fuzz::report("AutoTokenizer::from_dir", &tokenizer);
    let Ok(tokenizer) = tokenizer else {
        return;
    };
    let text = ferroformer_fuzz::last(&records, FILES.len())
        .map(String::from_utf8_lossy)
        .unwrap_or_else(|| "Hello world! [MASK] héllo 123".into());
    let pair = ferroformer_fuzz::last(&records, FILES.len() + 1).map(String::from_utf8_lossy);

    // Options from the flags byte: bounded lengths only (a caller asking for padding to a
    // billion tokens gets a billion tokens).
    let opts = EncodeOptions {
        add_special_tokens: flags & 1 == 1,
        truncation: match (flags >> 1) & 3 {
            0 => TruncationStrategy::None,
            1 => TruncationStrategy::LongestFirst,
            2 => TruncationStrategy::OnlyFirst,
            _ => TruncationStrategy::OnlySecond,
        },
        max_length: match (flags >> 3) & 3 {
            0 => None,
            n => Some(usize::from(n) * 4),
        },
        stride: usize::from((flags >> 5) & 1) * 2,
        return_overflowing_tokens: flags & 0x40 != 0,
        padding: if flags & 0x80 != 0 {
            PaddingStrategy::Longest
        } else {
            PaddingStrategy::None
        },
    };
    let encodings = match &pair {
        Some(pair) => tokenizer.encode_pair(&text, pair, &opts),
        None => tokenizer.encode(&text, &opts),
    };
    ferroformer_fuzz::report("encode", &encodings);
    if let Ok(encodings) = encodings {
        for e in &encodings {
            let _ = tokenizer.decode(&e.ids, false);
            let _ = tokenizer.decode(&e.ids, true);
            let _ = tokenizer.convert_ids_to_tokens(&e.ids);
        }
    }
    let _ = tokenizer.encode_batch(&[&text, "a b c"], &EncodeOptions::default());
    let _ = tokenizer.all_special_ids();
    let _ = tokenizer.num_special_tokens_to_add(true);
    let _ = tokenizer.decode(&[0, 1, 2, u32::MAX], false);
});
