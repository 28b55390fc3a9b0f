//! BERT's WordPiece vocabulary, `vocab.txt` (`convert_slow_tokenizer.BertConverter`).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
// Both models take an `ahash` map; the BPE alias names it without a direct `ahash` dependency.
use tokenizers::models::bpe::Vocab as TokenMap;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{DecoderWrapper, Tokenizer};

use super::super::config::{add_config_tokens, Family, TokenizerFiles};
use super::{special_with_id, template, Backend};
use crate::error::{Error, Result};

/// Builds a WordPiece tokenizer from `vocab_txt`, with the configuration files of `dir`; the
/// class defaults to `BertTokenizer`.
pub(super) fn load(vocab_txt: &Path, dir: &Path) -> Result<Backend> {
    let mut files = TokenizerFiles::read(dir, None)?;
    files.set_family(match files.family {
        Family::Other => Family::Bert,
        f => f,
    });
    let tokenizer = wordpiece_from_vocab(vocab_txt, &files)?;
    // A slow tokenizer converted to a fast one carries the slow class's defaults, and
    // BertTokenizer (unlike BertTokenizerFast) defaults `clean_up_tokenization_spaces`
    // to true.
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

/// `vocab.txt`: one token per line, the line number is the id (a repeated token keeps its
/// last line, as `BertTokenizer.load_vocab` does).
fn read_wordpiece_vocab(path: &Path) -> Result<Vec<(String, u32)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    // Only "\n" ends a line (Python strips just that), so "\r" stays part of a token.
    text.split_terminator('\n')
        .enumerate()
        .map(|(line, token)| Ok((token.to_string(), line_id(path, line, token)?)))
        .collect()
}

/// The id of the token on line `line` (0-based): token ids are `u32`, so a vocabulary
/// longer than that is an error rather than ids that wrap around.
fn line_id(path: &Path, line: usize, token: &str) -> Result<u32> {
    u32::try_from(line).map_err(|_| {
        Error::file(
            path,
            format!(
                "line {}: token `{token}` would get id {line}, which does not fit in a u32 \
                 token id (at most {})",
                line + 1,
                u32::MAX
            ),
        )
    })
}

/// `convert_slow_tokenizer.BertConverter`.
fn wordpiece_from_vocab(vocab_txt: &Path, files: &TokenizerFiles) -> Result<Tokenizer> {
    let vocab: HashMap<String, u32> = read_wordpiece_vocab(vocab_txt)?.into_iter().collect();
    let unk = files.token("unk").map_or("[UNK]", |t| t.content.as_str());
    let model = WordPiece::builder()
        .vocab(vocab.into_iter().collect::<TokenMap>())
        .unk_token(unk.to_string())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| Error::file(vocab_txt, e))?;
    let mut tokenizer = Tokenizer::new(model);
    let strip_accents = match files.config.get("strip_accents") {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    };
    tokenizer.with_normalizer(Some(BertNormalizer::new(
        true,
        files.bool("tokenize_chinese_chars").unwrap_or(true),
        strip_accents,
        files.bool("do_lower_case").unwrap_or(true),
    )));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_decoder(Some(DecoderWrapper::from(WordPieceDecoder::new(
        "##".into(),
        true,
    ))));
    // The template needs the ids of [CLS]/[SEP] as the finished vocabulary has them, so it
    // is built after the configured tokens are added (see `finish`); add them here first.
    add_config_tokens(&mut tokenizer, files);
    let cls = special_with_id(&tokenizer, files, "cls", vocab_txt)?;
    let sep = special_with_id(&tokenizer, files, "sep", vocab_txt)?;
    let template = template(
        format!("{}:0 $A:0 {}:0", cls.0, sep.0),
        format!("{}:0 $A:0 {}:0 $B:1 {}:1", cls.0, sep.0, sep.0),
        vec![cls, sep],
    )
    .map_err(|e| Error::file(vocab_txt, format!("cannot build the BERT template: {e}")))?;
    tokenizer.with_post_processor(Some(template));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn ids_past_u32_are_an_error_naming_the_file_line_and_token() {
        let path = Path::new("some/vocab.txt");
        assert_eq!(line_id(path, 7, "hello").unwrap(), 7);
        assert_eq!(line_id(path, u32::MAX as usize, "last").unwrap(), u32::MAX);
        let too_far = u32::MAX as usize + 1;
        let err = line_id(path, too_far, "overflow").unwrap_err().to_string();
        assert!(
            err.contains("some/vocab.txt")
                && err.contains("`overflow`")
                && err.contains(&too_far.to_string()),
            "{err}"
        );
    }
}
