//! What `transformers`' `PreTrainedTokenizerFast.__init__` (and the tokenizer class's
//! `__init__`) change once the backend exists: the configured tokens are added, the config's
//! `add_prefix_space`, `do_lower_case`, `strip_accents`, `trim_offsets` win over the
//! serialized pipeline, and the settings (sides, maximum length, clean-up) are read.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokenizers::{NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper};

use super::config::{add_config_tokens, Family, SPECIAL_NAMES};
use super::sources::Backend;
use super::{AutoTokenizer, Side};
use crate::error::{Error, Result};

/// Values above this mean "no maximum length" (`transformers`' `LARGE_INTEGER`; the sentinel
/// it writes for unlimited models is `VERY_LARGE_INTEGER` = 1e30).
const LARGE_INTEGER: f64 = 1e20;

/// What `PreTrainedTokenizerFast.__init__` (and the family's `__init__`) do after the
/// backend exists.
pub(super) fn finish(backend: Backend) -> Result<AutoTokenizer> {
    let Backend {
        mut tokenizer,
        files,
        tokenizer_json,
        converted,
        clean_up_default,
        spm,
    } = backend;
    let tokenizer_json = tokenizer_json.as_ref();
    let cfg = &files.config_path;
    // Truncation and padding saved in tokenizer.json only provide defaults for the
    // sides; every call sets its own.
    let saved_side = |section: &str| {
        tokenizer_json
            .and_then(|t| t.get(section))
            .and_then(|s| s.get("direction"))
            .and_then(Value::as_str)
            .and_then(Side::parse)
    };
    let side = |key: &str, saved: Option<Side>| -> Result<Side> {
        match files.config.get(key).and_then(Value::as_str) {
            Some(s) => Side::parse(s).ok_or_else(|| {
                Error::file(
                    cfg,
                    format!("`{key}` must be \"left\" or \"right\", got {s:?}"),
                )
            }),
            None => Ok(saved.unwrap_or_default()),
        }
    };
    let padding_side = side("padding_side", saved_side("padding"))?;
    let truncation_side = side("truncation_side", saved_side("truncation"))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| Error::Invalid(e.to_string()))?;

    if !converted {
        add_config_tokens(&mut tokenizer, &files);
    }

    let add_prefix_space = files.bool("add_prefix_space").unwrap_or(false);
    // Every fast tokenizer: the config's add_prefix_space wins over the pre-tokenizer's.
    if let Some(pre) = tokenizer.get_pre_tokenizer() {
        let mut state = serde_json::to_value(pre).map_err(|e| Error::file(cfg, e))?;
        if let Some(v) = state.get_mut("add_prefix_space") {
            if v.as_bool() != Some(add_prefix_space) {
                *v = Value::Bool(add_prefix_space);
                let pre: PreTokenizerWrapper =
                    serde_json::from_value(state).map_err(|e| Error::file(cfg, e))?;
                tokenizer.with_pre_tokenizer(Some(pre));
            }
        }
    }
    match files.family {
        // BertTokenizerFast: do_lower_case / strip_accents / tokenize_chinese_chars of the
        // config win over the serialized normalizer.
        Family::Bert => {
            if let Some(norm) = tokenizer.get_normalizer() {
                let mut state = serde_json::to_value(norm).map_err(|e| Error::file(cfg, e))?;
                let want = [
                    (
                        "lowercase",
                        Value::Bool(files.bool("do_lower_case").unwrap_or(true)),
                    ),
                    (
                        "strip_accents",
                        files
                            .config
                            .get("strip_accents")
                            .cloned()
                            .unwrap_or(Value::Null),
                    ),
                    (
                        "handle_chinese_chars",
                        Value::Bool(files.bool("tokenize_chinese_chars").unwrap_or(true)),
                    ),
                ];
                let differs = want
                    .iter()
                    .any(|(k, v)| state.get(*k).is_some_and(|cur| cur != v));
                if differs {
                    for (k, v) in want {
                        state[k] = v;
                    }
                    let norm: NormalizerWrapper =
                        serde_json::from_value(state).map_err(|e| Error::file(cfg, e))?;
                    tokenizer.with_normalizer(Some(norm));
                }
            }
        }
        // RobertaTokenizerFast: the config's add_prefix_space / trim_offsets win over the
        // post-processor's.
        Family::Roberta => {
            if let Some(post) = tokenizer.get_post_processor() {
                let mut state = serde_json::to_value(post).map_err(|e| Error::file(cfg, e))?;
                let trim_offsets = files.bool("trim_offsets").unwrap_or(true);
                let mut changed = false;
                for (k, want) in [
                    ("add_prefix_space", add_prefix_space),
                    ("trim_offsets", trim_offsets),
                ] {
                    if let Some(v) = state.get_mut(k) {
                        if v.as_bool() != Some(want) {
                            *v = Value::Bool(want);
                            changed = true;
                        }
                    }
                }
                if changed {
                    let post: PostProcessorWrapper =
                        serde_json::from_value(state).map_err(|e| Error::file(cfg, e))?;
                    tokenizer.with_post_processor(Some(post));
                }
            }
        }
        _ => {}
    }

    let model_max_length = match files
        .config
        .get("model_max_length")
        .or_else(|| files.config.get("max_len"))
    {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            // A length no usize holds (only possible between 2^64 and LARGE_INTEGER) is no
            // limit either.
            Some(x) if x > LARGE_INTEGER || x >= usize::MAX as f64 => None,
            Some(x) if x >= 0.0 && x.fract() == 0.0 => Some(x as usize),
            _ => {
                return Err(Error::file(
                    cfg,
                    format!("`model_max_length` must be a non-negative integer, got {v}"),
                ))
            }
        },
    };
    let clean_up_tokenization_spaces = files
        .bool("clean_up_tokenization_spaces")
        .unwrap_or(clean_up_default);
    let special = SPECIAL_NAMES
        .iter()
        .map(|n| (*n, files.token(n).map(|t| t.content.clone())))
        .collect();
    let all_special = files.all_special().into_iter().map(|t| t.content).collect();
    let spm = spm.unwrap_or_default();
    let target = match spm.target {
        Some(side) => Some(Box::new(finish(*side)?)),
        None => None,
    };
    Ok(AutoTokenizer {
        tokenizer,
        source: files.dir,
        special,
        all_special,
        model_max_length,
        padding_side,
        truncation_side,
        clean_up_tokenization_spaces,
        languages: spm.languages,
        target,
        slow_decode: spm.slow_decode.map(Arc::new),
        vocab_lookup: spm.vocab_lookup.map(Arc::new),
        truncating: Mutex::new(Vec::new()),
    })
}
