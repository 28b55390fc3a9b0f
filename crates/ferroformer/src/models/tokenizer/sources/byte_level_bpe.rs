//! A byte-level BPE vocabulary, `vocab.json` + `merges.txt`
//! (`convert_slow_tokenizer.RobertaConverter` / `GPT2Converter`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
// Both models take an `ahash` map; the BPE alias names it without a direct `ahash` dependency.
use tokenizers::models::bpe::{Vocab as TokenMap, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{DecoderWrapper, PostProcessorWrapper, Tokenizer};

use super::super::config::{add_config_tokens, json_kind, token_id, Family, TokenizerFiles};
use super::{special_with_id, template, Backend};
use crate::error::{Error, Result};

/// Builds a byte-level BPE tokenizer from `vocab_json` and `merges_txt`, with the
/// configuration files of `dir`. Without a configured class, the tokenizer is RoBERTa's when
/// its special tokens are `<s>` / `</s>`, else GPT-2's.
pub(super) fn load(vocab_json: &Path, merges_txt: &Path, dir: &Path) -> Result<Backend> {
    let mut files = TokenizerFiles::read(dir, None)?;
    let family = match files.family {
        Family::Other if looks_like_roberta(&files, vocab_json)? => Family::Roberta,
        Family::Other => Family::Gpt2,
        f => f,
    };
    files.set_family(family);
    let tokenizer = bpe_from_vocab(vocab_json, merges_txt, &files)?;
    // As for WordPiece: the slow class's default (true only for BertTokenizer).
    let clean_up_default = files.family == Family::Bert;
    Ok(Backend {
        tokenizer,
        files,
        tokenizer_json: None,
        converted: true,
        clean_up_default,
        spm: None,
    })
}

/// Whether a byte-level BPE directory without a known class is RoBERTa-style: its special
/// tokens (configured, else found in the vocabulary) are `<s>` / `</s>`.
fn looks_like_roberta(files: &TokenizerFiles, vocab_json: &Path) -> Result<bool> {
    let content = |n: &str| files.token(n).map(|t| t.content.as_str());
    if content("cls").or(content("bos")).is_some() || content("sep").or(content("eos")).is_some() {
        return Ok(content("cls").or(content("bos")) == Some("<s>")
            && content("sep").or(content("eos")) == Some("</s>"));
    }
    let vocab = read_bpe_vocab(vocab_json)?;
    Ok(vocab.contains_key("<s>") && vocab.contains_key("</s>"))
}

/// `vocab.json`: `{token: id}`. An id that is not a `u32` is an error naming the token.
fn read_bpe_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("invalid vocabulary: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::file(
            path,
            format!(
                "invalid vocabulary: expected an object {{token: id}}, found {}",
                json_kind(&value)
            ),
        ));
    };
    map.iter()
        .map(|(token, id)| Ok((token.clone(), token_id(path, "vocabulary", token, id)?)))
        .collect()
}

/// `merges.txt` as the slow GPT-2/RoBERTa tokenizers read it: the first line (`#version`) and
/// the last (empty after the final newline) are dropped, each other line is a pair.
fn read_merges(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let body = if lines.len() >= 2 {
        &lines[1..lines.len() - 1]
    } else {
        &[][..]
    };
    let mut seen = HashSet::new();
    let mut merges = Vec::with_capacity(body.len());
    for (i, line) in body.iter().enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [a, b] = parts[..] else {
            return Err(Error::file(
                path,
                format!("line {}: expected two tokens, found {line:?}", i + 2),
            ));
        };
        // A repeated merge keeps its first rank (`dict(zip(merges, range(...)))` keys).
        if seen.insert((a, b)) {
            merges.push((a.to_string(), b.to_string()));
        }
    }
    Ok(merges)
}

/// `convert_slow_tokenizer.RobertaConverter` / `GPT2Converter`.
fn bpe_from_vocab(
    vocab_json: &Path,
    merges_txt: &Path,
    files: &TokenizerFiles,
) -> Result<Tokenizer> {
    let vocab = read_bpe_vocab(vocab_json)?;
    let merges = read_merges(merges_txt)?;
    let model = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<TokenMap>(), merges)
        .build()
        .map_err(|e| {
            Error::file(
                merges_txt,
                format!("cannot build BPE from {}: {e}", vocab_json.display()),
            )
        })?;
    let add_prefix_space = files.bool("add_prefix_space").unwrap_or(false);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(
        ByteLevel::default().add_prefix_space(add_prefix_space),
    ));
    tokenizer.with_decoder(Some(DecoderWrapper::from(ByteLevelDecoder::default())));
    add_config_tokens(&mut tokenizer, files);
    let post: PostProcessorWrapper = if files.family == Family::Roberta {
        let cls = special_with_id(&tokenizer, files, "cls", vocab_json)?;
        let sep = special_with_id(&tokenizer, files, "sep", vocab_json)?;
        RobertaProcessing::new(sep, cls)
            .trim_offsets(true)
            .add_prefix_space(add_prefix_space)
            .into()
    } else if files.bool("add_bos_token").unwrap_or(false) {
        let bos = special_with_id(&tokenizer, files, "bos", vocab_json)?;
        template(
            format!("{}:0 $A:0", bos.0),
            format!("{}:0 $A:0 $B:1", bos.0),
            vec![bos],
        )
        .map_err(|e| Error::file(vocab_json, format!("cannot build the BOS template: {e}")))?
        .into()
    } else {
        // GPT-2 adds no special tokens; trim_offsets=false makes this a no-op, as in Python.
        ByteLevel::default().trim_offsets(false).into()
    };
    tokenizer.with_post_processor(Some(post));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_skip_header_and_last_line() {
        let dir = std::env::temp_dir().join(format!("ferroformer-merges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("merges.txt");
        std::fs::write(&p, "#version: 0.2\na b\nab c\na b\n").unwrap();
        let m = read_merges(&p).unwrap();
        assert_eq!(m, vec![("a".into(), "b".into()), ("ab".into(), "c".into())]);
        std::fs::write(&p, "#version: 0.2\na b c\n").unwrap();
        let err = read_merges(&p).unwrap_err().to_string();
        assert!(
            err.contains("merges.txt") && err.contains("line 2"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
