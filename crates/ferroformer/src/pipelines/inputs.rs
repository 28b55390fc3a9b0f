//! Reading pipeline inputs from text: one input per non-blank line, where a line holding a
//! JSON object is a JSONL record (`{"text": ...}` or `{"question": ..., "context": ...}`).
//!
//! The command line reads `-` (stdin) and `--input-file` with these functions; they live in
//! the library so that every caller (and the fuzz target `pipeline_inputs`) reads inputs the
//! same way.

use std::io::Read;
use std::path::Path;

use super::PipelineInput;
use crate::error::{Error, Result};

/// Parses `text` into pipeline inputs: one per non-blank line, a line starting with `{`
/// (after leading blanks) read as a JSONL record, any other line as a plain text (kept as
/// written, blanks included). `source` names where the text came from (a file, "stdin") in
/// error messages, which also give the line number.
pub fn parse_inputs(text: &str, source: &str) -> Result<Vec<PipelineInput>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('{') {
            let input: PipelineInput = serde_json::from_str(trimmed).map_err(|e| {
                Error::Invalid(format!(
                    "{source}, line {}: a JSON line must be {{\"text\": ...}} or \
                     {{\"question\": ..., \"context\": ...}} ({e})",
                    n + 1
                ))
            })?;
            out.push(input);
        } else {
            out.push(PipelineInput::text(line));
        }
    }
    Ok(out)
}

/// Reads all of `reader` and parses it with [`parse_inputs`]. Text that is not UTF-8 is an
/// error naming `source` and the byte offset where the bad sequence starts.
pub fn read_inputs(mut reader: impl Read, source: &str) -> Result<Vec<PipelineInput>> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Invalid(format!("reading inputs from {source}: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::Invalid(format!(
            "{source}: inputs must be UTF-8 text; invalid byte sequence at byte {}",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse_inputs(&text, source)
}

/// Reads the input file at `path` with [`read_inputs`]; errors name the file.
pub fn read_inputs_file(path: &Path) -> Result<Vec<PipelineInput>> {
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    read_inputs(std::io::BufReader::new(file), &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_jsonl_records_mix() {
        let text = "first text\n\n  {\"text\": \"second\"}\n{\"question\": \"q?\", \"context\": \"c\"}\r\n  indented  \n";
        let inputs = parse_inputs(text, "test").unwrap();
        assert_eq!(
            inputs,
            vec![
                PipelineInput::text("first text"),
                PipelineInput::text("second"),
                PipelineInput::question("q?", "c"),
                PipelineInput::text("  indented  "),
            ]
        );
    }

    #[test]
    fn bad_json_line_names_source_and_line() {
        let err = parse_inputs("ok\n{\"txt\": 1}\n", "inputs.jsonl")
            .unwrap_err()
            .to_string();
        assert!(err.contains("inputs.jsonl, line 2"), "{err}");
    }

    #[test]
    fn non_utf8_is_an_error_with_the_offset() {
        let err = read_inputs(&b"abc\xff\xfe"[..], "stdin")
            .unwrap_err()
            .to_string();
        assert!(err.contains("stdin") && err.contains("byte 3"), "{err}");
    }

    #[test]
    fn deeply_nested_json_line_is_an_error_not_a_stack_overflow() {
        // serde_json stops at 128 levels; a fuzzer-made line of 10 000 `[` must stay an error.
        let line = format!("{{\"text\": {}}}", "[".repeat(10_000));
        assert!(parse_inputs(&line, "stdin").is_err());
    }
}
