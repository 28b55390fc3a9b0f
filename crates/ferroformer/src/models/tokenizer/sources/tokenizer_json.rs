//! A serialized fast tokenizer, `tokenizer.json`, as `PreTrainedTokenizerFast` loads it.

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::super::config::{json_kind, token_id, TokenizerFiles};
use super::Backend;
use crate::error::{Error, Result};

/// Loads `path`, with the configuration files of `dir` (normally its directory).
pub(super) fn load(path: &Path, dir: &Path) -> Result<Backend> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("invalid tokenizer JSON: {e}")))?;
    check_token_ids(path, &value)?;
    if let Some(post) = value.get("post_processor") {
        check_post_processor(path, post)?;
    }
    let tokenizer: Tokenizer = text
        .parse()
        .map_err(|e| Error::file(path, format!("invalid tokenizer: {e}")))?;
    let mut files = TokenizerFiles::read(dir, Some((path, &value)))?;
    files.set_family(files.family);
    // mBART, mBART-50 and NLLB: the saved post-processor holds one source language; the
    // codes let `src_lang` pick another.
    let spm = super::sentencepiece::fast_languages(&tokenizer, &files)?.map(|languages| {
        super::sentencepiece::SpmExtras {
            languages: Some(languages),
            ..Default::default()
        }
    });
    Ok(Backend {
        tokenizer,
        files,
        tokenizer_json: Some(value),
        converted: false,
        clean_up_default: false,
        spm,
    })
}

/// Checks that the ids of `added_tokens` and of the model's `{token: id}` vocabulary
/// (WordPiece, BPE, WordLevel) are `u32`s, so the error names the token; `tokenizers` would
/// only report a serde error with a line and column.
fn check_token_ids(path: &Path, json: &Value) -> Result<()> {
    if let Some(Value::Array(added)) = json.get("added_tokens") {
        for entry in added {
            let content = entry
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("<no content>");
            if let Some(id) = entry.get("id") {
                token_id(path, "`added_tokens`", content, id)?;
            }
        }
    }
    match json.get("model").and_then(|m| m.get("vocab")) {
        Some(Value::Object(vocab)) => {
            for (token, id) in vocab {
                token_id(path, "`model.vocab`", token, id)?;
            }
        }
        // Unigram's vocabulary is a list of [piece, score]: its ids are positions.
        Some(Value::Array(_)) | None => {}
        Some(other) => {
            return Err(Error::file(
                path,
                format!(
                    "`model.vocab`: expected an object {{token: id}} or a list, found {}",
                    json_kind(other)
                ),
            ))
        }
    }
    Ok(())
}

/// Checks what `tokenizers` accepts on load but panics on when encoding: a template (of a
/// `TemplateProcessing` post-processor, also inside a `Sequence`) that uses a special token
/// its `special_tokens` does not define, a special token with different numbers of ids and
/// tokens, or a single-text template that uses the second sequence (`$B`).
fn check_post_processor(path: &Path, post: &Value) -> Result<()> {
    match post.get("type").and_then(Value::as_str) {
        Some("Sequence") => {
            if let Some(Value::Array(processors)) = post.get("processors") {
                for p in processors {
                    check_post_processor(path, p)?;
                }
            }
            Ok(())
        }
        Some("TemplateProcessing") => {
            let specials = post.get("special_tokens").and_then(Value::as_object);
            for (name, special) in specials.into_iter().flatten() {
                let count = |key: &str| special.get(key).and_then(Value::as_array).map(Vec::len);
                if count("ids") != count("tokens") {
                    return Err(Error::file(
                        path,
                        format!(
                            "`post_processor`: special token `{name}` has {} ids but {} tokens",
                            count("ids").unwrap_or(0),
                            count("tokens").unwrap_or(0)
                        ),
                    ));
                }
            }
            for template in ["single", "pair"] {
                let pieces = post.get(template).and_then(Value::as_array);
                for piece in pieces.into_iter().flatten() {
                    if let Some(id) = piece
                        .get("SpecialToken")
                        .and_then(|t| t.get("id"))
                        .and_then(Value::as_str)
                    {
                        if !specials.is_some_and(|s| s.contains_key(id)) {
                            return Err(Error::file(
                                path,
                                format!(
                                    "`post_processor`: the {template} template uses the special \
                                     token `{id}`, which its `special_tokens` does not define"
                                ),
                            ));
                        }
                    }
                    let sequence = piece
                        .get("Sequence")
                        .and_then(|s| s.get("id"))
                        .and_then(Value::as_str);
                    if template == "single" && sequence == Some("B") {
                        return Err(Error::file(
                            path,
                            "`post_processor`: the single template uses the second sequence \
                             ($B), which a single text does not have",
                        ));
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
