//! Labelled examples for fine-tuning classifiers, read from CSV, TSV or JSONL files: a text
//! column, an optional second text (pairs: premise and hypothesis), and a label column whose
//! values are label names or ids. The label set seen in training, sorted, becomes the model's
//! `id2label`.
//!
//! Errors name the file, the line and the column: a missing or empty label, a text that is
//! not a string, a label in evaluation data that training never saw.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Which columns (CSV/TSV header names, JSONL fields) hold what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The text.
    pub text: String,
    /// The second text of a pair, if the task has pairs.
    pub text_pair: Option<String>,
    /// The label.
    pub label: String,
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The text.
    pub text: String,
    /// The second text of a pair.
    pub text_pair: Option<String>,
    /// The label as written (an id is kept as its decimal text).
    pub label: String,
    /// Where it came from: the file and the line its record starts on (1-based).
    pub file: PathBuf,
    /// Line number (1-based).
    pub line: usize,
}

/// A file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
    /// Tab-separated values with a header row (same quoting).
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

impl DataFormat {
    /// `.csv`, `.tsv`/`.tab`, `.jsonl`/`.json`/`.ndjson`; anything else is an error naming the
    /// file.
    pub fn of(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "csv" => Ok(Self::Csv),
            "tsv" | "tab" => Ok(Self::Tsv),
            "jsonl" | "json" | "ndjson" => Ok(Self::Jsonl),
            _ => Err(Error::file(
                path,
                format!("unknown data format `.{ext}`: expected a .csv, .tsv or .jsonl file"),
            )),
        }
    }
}

/// An error about line `line` of `path`.
pub(crate) fn at(path: &Path, line: usize, what: String) -> Error {
    Error::file(path, format!("line {line}: {what}"))
}

/// Reads every example of a CSV, TSV or JSONL file.
pub fn read_examples(path: &Path, columns: &Columns) -> Result<Vec<Example>> {
    let format = DataFormat::of(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format!(
                "not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let examples = match format {
        DataFormat::Jsonl => read_jsonl(path, &text, columns)?,
        DataFormat::Csv => read_delimited(path, &text, b',', columns)?,
        DataFormat::Tsv => read_delimited(path, &text, b'\t', columns)?,
    };
    if examples.is_empty() {
        return Err(Error::file(path, "holds no examples"));
    }
    Ok(examples)
}

/// The non-blank lines of a JSON Lines file as objects, each with its line number (from 1);
/// a line that is not a JSON object is an error naming the file and the line.
pub(crate) fn jsonl_objects<'a>(
    path: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(usize, serde_json::Map<String, serde_json::Value>)>> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(move |(i, line)| {
            let n = i + 1;
            match serde_json::from_str(line) {
                Ok(serde_json::Value::Object(obj)) => Ok((n, obj)),
                Ok(v) => Err(at(path, n, format!("expected a JSON object, found {v}"))),
                Err(e) => Err(at(path, n, format!("not a JSON object: {e}"))),
            }
        })
}

fn read_jsonl(path: &Path, text: &str, columns: &Columns) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for record in jsonl_objects(path, text) {
        let (n, obj) = record?;
        let text_of = |col: &str| -> Result<String> {
            match obj.get(col) {
                None => Err(at(
                    path,
                    n,
                    format!(
                        "no column `{col}` (the record has {:?})",
                        obj.keys().collect::<Vec<_>>()
                    ),
                )),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(at(
                    path,
                    n,
                    format!("column `{col}`: expected a string, found {other}"),
                )),
            }
        };
        let label = match obj.get(&columns.label) {
            None => {
                return Err(at(
                    path,
                    n,
                    format!(
                        "no label column `{}` (the record has {:?})",
                        columns.label,
                        obj.keys().collect::<Vec<_>>()
                    ),
                ))
            }
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(x)) if x.is_u64() || x.is_i64() => x.to_string(),
            Some(other) => {
                return Err(at(
                    path,
                    n,
                    format!(
                        "label column `{}`: expected a label name or an integer id, found {other}",
                        columns.label
                    ),
                ))
            }
        };
        out.push(example(
            path,
            n,
            columns,
            text_of(&columns.text)?,
            columns.text_pair.as_deref().map(text_of).transpose()?,
            label,
        )?);
    }
    Ok(out)
}

fn example(
    path: &Path,
    line: usize,
    columns: &Columns,
    text: String,
    text_pair: Option<String>,
    label: String,
) -> Result<Example> {
    if label.trim().is_empty() {
        return Err(at(
            path,
            line,
            format!("label column `{}` is empty", columns.label),
        ));
    }
    Ok(Example {
        text,
        text_pair,
        label: label.trim().to_string(),
        file: path.to_path_buf(),
        line,
    })
}

/// Splits delimited text into records of fields, each with the line it starts on. Fields
/// may be quoted with `"` (a doubled `""` inside is one quote; quoted fields may hold the
/// delimiter and newlines).
fn parse_delimited(path: &Path, text: &str, delim: u8) -> Result<Vec<(usize, Vec<String>)>> {
    let bytes = text.as_bytes();
    let mut records = Vec::new();
    let (mut fields, mut field) = (Vec::new(), Vec::<u8>::new());
    let (mut line, mut start_line) = (1usize, 1usize);
    let (mut i, mut quoted, mut at_field_start) = (0usize, false, true);
    let mut record_has_content = false;
    while i < bytes.len() {
        let c = bytes[i];
        if quoted {
            if c == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    quoted = false;
                }
            } else {
                if c == b'\n' {
                    line += 1;
                }
                field.push(c);
            }
        } else if c == b'"' && at_field_start {
            quoted = true;
            record_has_content = true;
        } else if c == delim {
            fields.push(String::from_utf8_lossy(&field).into_owned());
            field.clear();
            record_has_content = true;
            at_field_start = true;
            i += 1;
            continue;
        } else if c == b'\n' || c == b'\r' {
            if c == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            if record_has_content || !field.is_empty() {
                fields.push(String::from_utf8_lossy(&field).into_owned());
                records.push((start_line, std::mem::take(&mut fields)));
            }
            field.clear();
            line += 1;
            start_line = line;
            record_has_content = false;
            at_field_start = true;
            i += 1;
            continue;
        } else {
            field.push(c);
            record_has_content = true;
        }
        at_field_start = false;
        i += 1;
    }
    if quoted {
        return Err(at(
            path,
            start_line,
            "a quoted field is never closed".into(),
        ));
    }
    if record_has_content || !field.is_empty() {
        fields.push(String::from_utf8_lossy(&field).into_owned());
        records.push((start_line, fields));
    }
    Ok(records)
}

fn read_delimited(path: &Path, text: &str, delim: u8, columns: &Columns) -> Result<Vec<Example>> {
    let records = parse_delimited(path, text.strip_prefix('\u{feff}').unwrap_or(text), delim)?;
    let Some(((_, header), rows)) = records.split_first() else {
        return Ok(Vec::new());
    };
    let column = |name: &str, what: &str| -> Result<usize> {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            at(
                path,
                1,
                format!("no {what} column `{name}` in the header (columns: {header:?})"),
            )
        })
    };
    let text_col = column(&columns.text, "text")?;
    let pair_col = columns
        .text_pair
        .as_deref()
        .map(|c| column(c, "text-pair"))
        .transpose()?;
    let label_col = column(&columns.label, "label")?;
    let mut out = Vec::with_capacity(rows.len());
    for (line, fields) in rows {
        if fields.len() != header.len() {
            return Err(at(
                path,
                *line,
                format!(
                    "{} fields, but the header has {} columns",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        out.push(example(
            path,
            *line,
            columns,
            fields[text_col].clone(),
            pair_col.map(|c| fields[c].clone()),
            fields[label_col].clone(),
        )?);
    }
    Ok(out)
}

/// The label set of a training set, sorted (numerically when every label is an integer id,
/// so that ids keep their values), in class-id order.
pub fn label_set(examples: &[Example]) -> Vec<String> {
    sorted_labels(examples.iter().map(|e| e.label.as_str()))
}

/// The distinct labels of `labels`, sorted as [`label_set`] sorts them.
pub fn sorted_labels<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = labels.collect();
    let mut labels: Vec<String> = set.into_iter().map(str::to_string).collect();
    if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
        labels.sort_by_key(|l| l.parse::<i64>().unwrap_or(0));
    }
    labels
}

/// The class id of every example; a label outside `labels` is an error naming the file,
/// the line and the column.
pub fn label_ids(
    examples: &[Example],
    labels: &[String],
    label_column: &str,
) -> Result<Vec<usize>> {
    examples
        .iter()
        .map(|e| {
            labels.iter().position(|l| *l == e.label).ok_or_else(|| {
                at(
                    &e.file,
                    e.line,
                    format!(
                        "label column `{label_column}`: label `{}` does not occur in the training data (labels: {labels:?})",
                        e.label
                    ),
                )
            })
        })
        .collect()
}

/// Splits off a seeded random `fraction` of `examples` for evaluation:
/// `(train, eval)`, each in file order.
pub fn split_off<T>(examples: Vec<T>, fraction: f64, seed: u64) -> Result<(Vec<T>, Vec<T>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::config(
            "val_fraction",
            format!("must be in [0, 1), found {fraction}"),
        ));
    }
    let n = examples.len();
    let n_eval = ((n as f64) * fraction).round() as usize;
    if fraction > 0.0 && (n_eval == 0 || n_eval == n) {
        return Err(Error::config(
            "val_fraction",
            format!("{fraction} of {n} examples leaves an empty training or evaluation set"),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut is_eval = vec![false; n];
    for &i in &order[..n_eval] {
        is_eval[i] = true;
    }
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (e, flag) in examples.into_iter().zip(is_eval) {
        if flag {
            eval.push(e);
        } else {
            train.push(e);
        }
    }
    Ok((train, eval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_delimiters_and_newlines() {
        let text = "text,label\n\"a, \"\"quoted\"\"\nline\",pos\nplain,neg\r\n\n";
        let rows = parse_delimited(Path::new("x.csv"), text, b',').unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[1],
            (2, vec!["a, \"quoted\"\nline".to_string(), "pos".into()])
        );
        assert_eq!(rows[2], (4, vec!["plain".to_string(), "neg".into()]));
    }

    #[test]
    fn integer_labels_sort_numerically() {
        let ex = |l: &str| Example {
            text: String::new(),
            text_pair: None,
            label: l.into(),
            file: PathBuf::new(),
            line: 1,
        };
        let labels = label_set(&[ex("10"), ex("2"), ex("0")]);
        assert_eq!(labels, ["0", "2", "10"]);
        let labels = label_set(&[ex("pos"), ex("neg"), ex("pos")]);
        assert_eq!(labels, ["neg", "pos"]);
    }
}
