//! A reader of the WordNet 3.0 database files (`index.*`, `data.*`, `*.exc`: Princeton's
//! `wndb(5WN)` format, as Debian's `wordnet-base` installs them under
//! `/usr/share/wordnet`), with NLTK's `morphy` and `synsets`, for METEOR's synonym stage.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// WordNet's parts of speech in NLTK's `POS_LIST` order, with their file suffixes.
const PARTS_OF_SPEECH: [(PartOfSpeech, &str); 4] = [
    (PartOfSpeech::Noun, "noun"),
    (PartOfSpeech::Verb, "verb"),
    (PartOfSpeech::Adjective, "adj"),
    (PartOfSpeech::Adverb, "adv"),
];

/// A WordNet part of speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartOfSpeech {
    /// `n`.
    Noun,
    /// `v`.
    Verb,
    /// `a` (satellites `s` included: they live in `data.adj`).
    Adjective,
    /// `r`.
    Adverb,
}

impl PartOfSpeech {
    fn slot(self) -> usize {
        match self {
            PartOfSpeech::Noun => 0,
            PartOfSpeech::Verb => 1,
            PartOfSpeech::Adjective => 2,
            PartOfSpeech::Adverb => 3,
        }
    }

    fn from_index_field(field: &str) -> Option<Self> {
        match field {
            "n" => Some(PartOfSpeech::Noun),
            "v" => Some(PartOfSpeech::Verb),
            "a" | "s" => Some(PartOfSpeech::Adjective),
            "r" => Some(PartOfSpeech::Adverb),
            _ => None,
        }
    }

    /// NLTK's `MORPHOLOGICAL_SUBSTITUTIONS`: suffix replacements tried on inflected forms.
    fn substitutions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            PartOfSpeech::Noun => &[
                ("s", ""),
                ("ses", "s"),
                ("ves", "f"),
                ("xes", "x"),
                ("zes", "z"),
                ("ches", "ch"),
                ("shes", "sh"),
                ("men", "man"),
                ("ies", "y"),
            ],
            PartOfSpeech::Verb => &[
                ("s", ""),
                ("ies", "y"),
                ("es", "e"),
                ("es", ""),
                ("ed", "e"),
                ("ed", ""),
                ("ing", "e"),
                ("ing", ""),
            ],
            PartOfSpeech::Adjective => &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
            PartOfSpeech::Adverb => &[],
        }
    }
}

/// A WordNet database loaded from a directory.
pub struct WordNet {
    dir: PathBuf,
    /// Lemma → synset offsets per part of speech (`index.*`).
    index: HashMap<String, [Vec<usize>; 4]>,
    /// Inflected form → base forms per part of speech (`*.exc`).
    exceptions: [HashMap<String, Vec<String>>; 4],
    /// The `data.*` files, addressed by byte offset.
    data: [String; 4],
}

impl WordNet {
    /// Reads the database in `dir` (the files `index.{noun,verb,adj,adv}`,
    /// `data.{noun,verb,adj,adv}` and `{noun,verb,adj,adv}.exc`).
    pub fn open(dir: &Path) -> Result<Self> {
        let read = |name: String| -> Result<String> {
            let path = dir.join(&name);
            std::fs::read_to_string(&path).map_err(|e| {
                Error::file(
                    &path,
                    format!("cannot read the WordNet file {name} ({e}); --wordnet expects a WordNet 3.0 database directory such as /usr/share/wordnet"),
                )
            })
        };
        let mut index: HashMap<String, [Vec<usize>; 4]> = HashMap::new();
        let mut exceptions: [HashMap<String, Vec<String>>; 4] = Default::default();
        let mut data: [String; 4] = Default::default();
        for (pos, suffix) in PARTS_OF_SPEECH {
            let name = format!("index.{suffix}");
            let text = read(name.clone())?;
            for (i, line) in text.lines().enumerate() {
                // License header lines start with a space.
                if line.starts_with(' ') || line.is_empty() {
                    continue;
                }
                let (lemma, offsets) = parse_index_line(line).ok_or_else(|| {
                    Error::file(
                        dir.join(&name),
                        format!("line {}: not a WordNet index entry", i + 1),
                    )
                })?;
                index.entry(lemma.to_string()).or_default()[pos.slot()] = offsets;
            }
            for line in read(format!("{suffix}.exc"))?.lines() {
                let mut terms = line.split_whitespace();
                if let Some(form) = terms.next() {
                    exceptions[pos.slot()]
                        .insert(form.to_string(), terms.map(String::from).collect());
                }
            }
            data[pos.slot()] = read(format!("data.{suffix}"))?;
        }
        Ok(WordNet {
            dir: dir.to_path_buf(),
            index,
            exceptions,
            data,
        })
    }

    /// NLTK's `_morphy(form, pos)`: the base forms of `form` in the database — the form
    /// itself and its exception-list entries, or else one round of suffix substitutions.
    pub fn morphy(&self, form: &str, pos: PartOfSpeech) -> Vec<String> {
        let mut candidates = vec![form.to_string()];
        match self.exceptions[pos.slot()].get(form) {
            Some(bases) => candidates.extend(bases.iter().cloned()),
            None => {
                for (old, new) in pos.substitutions() {
                    if let Some(stem) = form.strip_suffix(old) {
                        candidates.push(format!("{stem}{new}"));
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        candidates
            .into_iter()
            .filter(|c| {
                self.index
                    .get(c)
                    .is_some_and(|offsets| !offsets[pos.slot()].is_empty())
                    && seen.insert(c.clone())
            })
            .collect()
    }

    /// The lemma names of every synset of `word` in every part of speech (NLTK's
    /// `{l.name() for s in wordnet.synsets(word) for l in s.lemmas()}`), as the data files
    /// spell them (case kept, adjective markers like `(a)` removed).
    pub fn synonyms(&self, word: &str) -> Result<HashSet<String>> {
        let word = word.to_lowercase();
        let mut names = HashSet::new();
        for (pos, suffix) in PARTS_OF_SPEECH {
            for form in self.morphy(&word, pos) {
                let Some(offsets) = self.index.get(&form) else {
                    continue;
                };
                for &offset in &offsets[pos.slot()] {
                    let line = self.data[pos.slot()]
                        .get(offset..)
                        .and_then(|rest| rest.lines().next())
                        .ok_or_else(|| self.bad_offset(suffix, offset))?;
                    names.extend(
                        parse_lemma_names(line, offset)
                            .ok_or_else(|| self.bad_offset(suffix, offset))?,
                    );
                }
            }
        }
        Ok(names)
    }

    fn bad_offset(&self, suffix: &str, offset: usize) -> Error {
        Error::file(
            self.dir.join(format!("data.{suffix}")),
            format!("no synset at byte offset {offset}, which index.{suffix} names"),
        )
    }
}

/// `lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...`
fn parse_index_line(line: &str) -> Option<(&str, Vec<usize>)> {
    let mut fields = line.split_whitespace();
    let lemma = fields.next()?;
    PartOfSpeech::from_index_field(fields.next()?)?;
    let synsets: usize = fields.next()?.parse().ok()?;
    let pointers: usize = fields.next()?.parse().ok()?;
    for _ in 0..pointers {
        fields.next()?;
    }
    fields.next()?; // sense_cnt
    fields.next()?; // tagsense_cnt
    let offsets = (0..synsets)
        .map(|_| fields.next()?.parse().ok())
        .collect::<Option<Vec<usize>>>()?;
    Some((lemma, offsets))
}

/// The words of a `data.*` line: `offset lex_filenum ss_type w_cnt word lex_id ...`,
/// checking that the line is the synset at `offset`.
fn parse_lemma_names(line: &str, offset: usize) -> Option<Vec<String>> {
    let mut fields = line.split_whitespace();
    if fields.next()?.parse::<usize>().ok()? != offset {
        return None;
    }
    fields.next()?; // lex_filenum
    fields.next()?; // ss_type
    let count = usize::from_str_radix(fields.next()?, 16).ok()?;
    (0..count)
        .map(|_| {
            let word = fields.next()?;
            fields.next()?; // lex_id
                            // Adjectives may carry a syntactic marker: `word(a)`, `(p)`, `(ip)`.
            let name = match word
                .strip_suffix(')')
                .and_then(|w| w.rfind('(').map(|i| &w[..i]))
            {
                Some(stripped) => stripped,
                None => word,
            };
            Some(name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_and_data_lines() {
        let (lemma, offsets) = parse_index_line("dog n 2 3 @ ~ + 2 1 02084071 10114209  ").unwrap();
        assert_eq!((lemma, offsets), ("dog", vec![2084071, 10114209]));
        let names = parse_lemma_names(
            "00001740 00 a 02 able(a) 0 unable 0 000 | (usually followed by `to')",
            1740,
        )
        .unwrap();
        assert_eq!(names, ["able", "unable"]);
        assert!(parse_lemma_names("00001740 00 a 01 able 0 | x", 99).is_none());
    }
}
