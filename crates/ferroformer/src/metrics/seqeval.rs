//! Entity-level scores of tag sequences as the `seqeval` package computes them, and the
//! whole result of Hugging Face `evaluate`'s `seqeval` metric ([`report`]).
//!
//! Two ways of reading entities, as `seqeval.metrics.classification_report` has them:
//!
//! - the default mode (conlleval's chunking, [`entities`]): `B-`/`I-`/`E-`/`S-` prefixes,
//!   an `I-` after `O` or after another type starts an entity, any other prefix is an
//!   entity boundary; an entity is `(type, start, end)` over the sentences laid end to end;
//! - the strict mode (`mode="strict"`, `seqeval.scheme`): the tags must follow a scheme
//!   (IOB1, IOB2, IOE1, IOE2, IOBES, BILOU; detected from the references when none is given,
//!   as `seqeval.scheme.auto_detect` does), a tag with a prefix the scheme does not allow is
//!   an error, and only well-formed chunks count.
//!
//! A predicted entity counts only when its type and both ends equal a reference entity's.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::{Error, Result};

/// `overall_precision`, `overall_recall`, `overall_f1`, `overall_accuracy` as `evaluate`'s
/// `seqeval` names them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeqevalScores {
    /// Correct entities / predicted entities (0 when nothing is predicted).
    pub overall_precision: f64,
    /// Correct entities / reference entities (0 when there are none).
    pub overall_recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub overall_f1: f64,
    /// Correct tags / tags.
    pub overall_accuracy: f64,
}

/// The tag's prefix and its entity type as `seqeval.get_entities` splits it: without
/// `suffix` the first character and what follows the first `-` (`B-PER` → `B`, `PER`);
/// with `suffix` the last character and what precedes the last `-` (`PER-B`). An empty
/// type is `_`.
fn split_tag(tag: &str, suffix: bool) -> (char, &str) {
    let (prefix, type_) = if suffix {
        let Some(last) = tag.chars().next_back() else {
            return ('O', "_");
        };
        let rest = &tag[..tag.len() - last.len_utf8()];
        (last, rest.rsplit_once('-').map_or(rest, |(t, _)| t))
    } else {
        let mut chars = tag.chars();
        let Some(first) = chars.next() else {
            return ('O', "_");
        };
        let rest = chars.as_str();
        (first, rest.split_once('-').map_or(rest, |(_, t)| t))
    };
    (prefix, if type_.is_empty() { "_" } else { type_ })
}

fn end_of_chunk(prev: char, tag: char, prev_type: &str, type_: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_type != type_)
}

fn start_of_chunk(prev: char, tag: char, prev_type: &str, type_: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != type_)
}

/// The entities of tagged sentences as `(type, start, end)` (inclusive ends) over the
/// sentences joined with an `O` between them, as `seqeval.metrics.sequence_labeling
/// .get_entities` returns them.
pub fn entities<S: AsRef<str>>(sentences: &[Vec<S>]) -> Vec<(String, usize, usize)> {
    entities_with(sentences, false)
}

/// [`entities`], with the prefix at the end of each tag when `suffix` (`PER-B`).
fn entities_with<S: AsRef<str>>(sentences: &[Vec<S>], suffix: bool) -> Vec<(String, usize, usize)> {
    let mut tags: Vec<&str> = Vec::new();
    for s in sentences {
        tags.extend(s.iter().map(AsRef::as_ref));
        tags.push("O");
    }
    tags.push("O");
    let (mut prev, mut prev_type, mut begin) = ('O', "", 0usize);
    let mut out = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let (t, ty) = split_tag(tag, suffix);
        if end_of_chunk(prev, t, prev_type, ty) {
            out.push((prev_type.to_string(), begin, i - 1));
        }
        if start_of_chunk(prev, t, prev_type, ty) {
            begin = i;
        }
        prev = t;
        prev_type = ty;
    }
    out
}

/// Micro-averaged entity precision, recall and F1 and the tag accuracy of `predictions`
/// against `references` (sentences of tags, same lengths).
pub fn seqeval<S: AsRef<str>>(
    predictions: &[Vec<S>],
    references: &[Vec<S>],
) -> Result<SeqevalScores> {
    if predictions.len() != references.len() {
        return Err(Error::Invalid(format!(
            "seqeval: {} predicted sentences but {} references",
            predictions.len(),
            references.len()
        )));
    }
    let (mut correct, mut total) = (0usize, 0usize);
    for (i, (p, r)) in predictions.iter().zip(references).enumerate() {
        if p.len() != r.len() {
            return Err(Error::Invalid(format!(
                "seqeval: sentence {i} has {} predicted tags but {} reference tags",
                p.len(),
                r.len()
            )));
        }
        correct += p
            .iter()
            .zip(r)
            .filter(|(a, b)| a.as_ref() == b.as_ref())
            .count();
        total += r.len();
    }
    let pred: BTreeSet<_> = entities(predictions).into_iter().collect();
    let gold: BTreeSet<_> = entities(references).into_iter().collect();
    let tp = pred.intersection(&gold).count() as f64;
    let ratio = |a: f64, b: usize| if b == 0 { 0.0 } else { a / b as f64 };
    let precision = ratio(tp, pred.len());
    let recall = ratio(tp, gold.len());
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Ok(SeqevalScores {
        overall_precision: precision,
        overall_recall: recall,
        overall_f1: f1,
        overall_accuracy: ratio(correct as f64, total),
    })
}

// ------------------------------------------------------------------ evaluate's seqeval

/// A tagging scheme of `seqeval.scheme` (the strict mode's rules of what starts, continues
/// and ends an entity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `I-` everywhere; `B-` only between two entities of one type.
    Iob1,
    /// `B-` starts every entity (CoNLL-2003 as the hub ships it).
    Iob2,
    /// `I-` everywhere; `E-` only between two entities of one type.
    Ioe1,
    /// `E-` ends every entity.
    Ioe2,
    /// `B-` begin, `I-` inside, `E-` end, `S-` single-token entity.
    Iobes,
    /// `B-` begin, `I-` inside, `L-` last, `U-` unit-length entity.
    Bilou,
}

impl Scheme {
    /// Every scheme, by `seqeval.scheme`'s class names.
    pub const ALL: [(&'static str, Scheme); 6] = [
        ("IOB1", Scheme::Iob1),
        ("IOB2", Scheme::Iob2),
        ("IOE1", Scheme::Ioe1),
        ("IOE2", Scheme::Ioe2),
        ("IOBES", Scheme::Iobes),
        ("BILOU", Scheme::Bilou),
    ];

    /// `seqeval.scheme`'s class name.
    pub fn name(self) -> &'static str {
        Scheme::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("", |(n, _)| n)
    }
}

impl std::str::FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Scheme::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, scheme)| *scheme)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown scheme `{s}`: expected one of IOB1, IOB2, IOE1, IOE2, IOBES, BILOU"
                ))
            })
    }
}

/// What a score with a zero denominator is (`seqeval`'s `zero_division`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroDivision {
    /// `"warn"`: 0 (seqeval also warns; we do not).
    #[default]
    Warn,
    /// 0.
    Zero,
    /// 1.
    One,
}

impl ZeroDivision {
    fn value(self) -> f64 {
        match self {
            ZeroDivision::Warn | ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
        }
    }
}

impl std::str::FromStr for ZeroDivision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "warn" => Ok(ZeroDivision::Warn),
            "0" => Ok(ZeroDivision::Zero),
            "1" => Ok(ZeroDivision::One),
            other => Err(Error::Invalid(format!(
                "unknown zero division `{other}`: expected warn, 0 or 1"
            ))),
        }
    }
}

/// The arguments of `evaluate`'s `seqeval` that change its result. `sample_weight` is not
/// one: seqeval accepts it but never uses it for these averages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqevalOptions {
    /// `mode="strict"`: read entities by a scheme instead of conlleval's chunking.
    pub strict: bool,
    /// The scheme of the strict mode (`None`: detected from the references, which must
    /// then be IOB2, IOE2, IOBES or BILOU). seqeval ignores a scheme outside the strict
    /// mode, so [`report`] refuses one there rather than ignore it silently.
    pub scheme: Option<Scheme>,
    /// The prefix is the tag's last character (`PER-B`).
    pub suffix: bool,
    /// The value of a score whose denominator is 0.
    pub zero_division: ZeroDivision,
}

/// Precision, recall, F1 and the number of reference entities of one entity type.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TypeScores {
    /// Correct entities of the type / predicted ones.
    pub precision: f64,
    /// Correct entities of the type / reference ones.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
    /// Reference entities of the type (seqeval's support).
    pub number: usize,
}

/// `evaluate.load("seqeval").compute(...)`: one entry per entity type found in the
/// predictions or the references (sorted by name), then the micro averages and the tag
/// accuracy. Serializes to the metric's dict, keys in its order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeqevalReport {
    /// The scores of each entity type.
    #[serde(flatten)]
    pub types: BTreeMap<String, TypeScores>,
    /// Micro-averaged precision over every type.
    pub overall_precision: f64,
    /// Micro-averaged recall.
    pub overall_recall: f64,
    /// Micro-averaged F1.
    pub overall_f1: f64,
    /// Correct tags / tags.
    pub overall_accuracy: f64,
}

/// Entity sets of one side, by type: (sentence, start, end) in the strict mode, (start,
/// end) over the joined sentences (sentence 0) in the default mode.
type EntitySets = BTreeMap<String, BTreeSet<(usize, usize, usize)>>;

/// A tag's prefix as a bit of `seqeval.scheme.Prefix`.
const P_I: u8 = 1;
const P_O: u8 = 2;
const P_B: u8 = 4;
const P_E: u8 = 8;
const P_S: u8 = 16;
const P_U: u8 = 32;
const P_L: u8 = 64;
const P_ANY: u8 = 127;

/// `seqeval.scheme.Tag`: the two types equal, differ, or either.
#[derive(Clone, Copy)]
enum TagCond {
    Same,
    Diff,
    Any,
}

/// (previous prefixes, current prefixes, type condition).
type Pattern = (u8, u8, TagCond);

/// A scheme's allowed prefixes and its start, inside and end patterns, as
/// `seqeval.scheme` writes them.
struct Rules {
    allowed: u8,
    start: &'static [Pattern],
    inside: &'static [Pattern],
    end: &'static [Pattern],
}

fn rules(scheme: Scheme) -> Rules {
    use TagCond::{Any, Diff, Same};
    match scheme {
        Scheme::Iob1 => Rules {
            allowed: P_I | P_O | P_B,
            start: &[
                (P_O, P_I, Any),
                (P_I, P_I, Diff),
                (P_B, P_I, Any),
                (P_I, P_B, Same),
                (P_B, P_B, Same),
            ],
            inside: &[(P_B, P_I, Same), (P_I, P_I, Same)],
            end: &[
                (P_I, P_I, Diff),
                (P_I, P_O, Any),
                (P_I, P_B, Any),
                (P_B, P_O, Any),
                (P_B, P_I, Diff),
                (P_B, P_B, Same),
            ],
        },
        Scheme::Ioe1 => Rules {
            allowed: P_I | P_O | P_E,
            start: &[
                (P_O, P_I, Any),
                (P_I, P_I, Diff),
                (P_E, P_I, Any),
                (P_E, P_E, Same),
            ],
            inside: &[(P_I, P_I, Same), (P_I, P_E, Same)],
            end: &[
                (P_I, P_I, Diff),
                (P_I, P_O, Any),
                (P_I, P_E, Diff),
                (P_E, P_I, Same),
                (P_E, P_E, Same),
            ],
        },
        Scheme::Iob2 => Rules {
            allowed: P_I | P_O | P_B,
            start: &[(P_ANY, P_B, Any)],
            inside: &[(P_B, P_I, Same), (P_I, P_I, Same)],
            end: &[
                (P_I, P_O, Any),
                (P_I, P_I, Diff),
                (P_I, P_B, Any),
                (P_B, P_O, Any),
                (P_B, P_I, Diff),
                (P_B, P_B, Any),
            ],
        },
        Scheme::Ioe2 => Rules {
            allowed: P_I | P_O | P_E,
            start: &[
                (P_O, P_I, Any),
                (P_O, P_E, Any),
                (P_E, P_I, Any),
                (P_E, P_E, Any),
                (P_I, P_I, Diff),
                (P_I, P_E, Diff),
            ],
            inside: &[(P_I, P_E, Same), (P_I, P_I, Same)],
            end: &[(P_E, P_ANY, Any)],
        },
        Scheme::Iobes => Rules {
            allowed: P_I | P_O | P_B | P_E | P_S,
            start: &[(P_ANY, P_B, Any), (P_ANY, P_S, Any)],
            inside: &[
                (P_B, P_I, Same),
                (P_B, P_E, Same),
                (P_I, P_I, Same),
                (P_I, P_E, Same),
            ],
            end: &[(P_S, P_ANY, Any), (P_E, P_ANY, Any)],
        },
        Scheme::Bilou => Rules {
            allowed: P_B | P_I | P_L | P_O | P_U,
            start: &[(P_ANY, P_B, Any), (P_ANY, P_U, Any)],
            inside: &[
                (P_B, P_I, Same),
                (P_B, P_L, Same),
                (P_I, P_I, Same),
                (P_I, P_L, Same),
            ],
            end: &[(P_U, P_ANY, Any), (P_L, P_ANY, Any)],
        },
    }
}

/// A tag as `seqeval.scheme.Token` reads it: its prefix bit and its type (what is left
/// once the prefix is cut and `-` stripped from both ends; `_` when nothing is).
#[derive(Clone, Copy)]
struct Token<'a> {
    prefix: u8,
    type_: &'a str,
}

const OUTSIDE: Token<'static> = Token {
    prefix: P_O,
    type_: "_",
};

/// The prefix letters of `seqeval.scheme.Prefix`, in the order error messages list them.
const PREFIX_LETTERS: [(char, u8); 7] = [
    ('I', P_I),
    ('O', P_O),
    ('B', P_B),
    ('E', P_E),
    ('S', P_S),
    ('U', P_U),
    ('L', P_L),
];

fn prefix_names(mask: u8) -> String {
    PREFIX_LETTERS
        .iter()
        .filter(|(_, bit)| mask & bit != 0)
        .map(|(c, _)| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_token(tag: &str, suffix: bool) -> std::result::Result<Token<'_>, String> {
    let letter = if suffix {
        tag.chars().next_back()
    } else {
        tag.chars().next()
    };
    let Some(letter) = letter else {
        return Err("an empty tag".into());
    };
    let Some(&(_, prefix)) = PREFIX_LETTERS.iter().find(|(c, _)| *c == letter) else {
        return Err(format!(
            "tag `{tag}` has prefix `{letter}`; the strict mode knows the prefixes {}",
            prefix_names(P_ANY)
        ));
    };
    let rest = if suffix {
        &tag[..tag.len() - letter.len_utf8()]
    } else {
        &tag[letter.len_utf8()..]
    };
    let type_ = rest.trim_matches('-');
    Ok(Token {
        prefix,
        type_: if type_.is_empty() { "_" } else { type_ },
    })
}

fn matches_any(patterns: &[Pattern], prev: Token, cur: Token) -> bool {
    patterns.iter().any(|&(p, c, cond)| {
        prev.prefix & p != 0
            && cur.prefix & c != 0
            && match cond {
                TagCond::Any => true,
                TagCond::Same => prev.type_ == cur.type_,
                TagCond::Diff => prev.type_ != cur.type_,
            }
    })
}

/// The entities of one sentence by `scheme`, as `seqeval.scheme.Tokens.entities` walks
/// it: `(type, start, end)` with `end` exclusive. A tag whose prefix the scheme does not
/// allow is an error naming its position.
fn strict_entities(
    tags: &[impl AsRef<str>],
    scheme: Scheme,
    suffix: bool,
) -> std::result::Result<Vec<(&str, usize, usize)>, String> {
    let rules = rules(scheme);
    let mut tokens = tags
        .iter()
        .enumerate()
        .map(|(k, t)| parse_token(t.as_ref(), suffix).map_err(|e| format!("tag {}: {e}", k + 1)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    tokens.push(OUTSIDE);
    let n = tags.len();
    let mut out = Vec::new();
    let (mut i, mut prev) = (0usize, OUTSIDE);
    while i < tokens.len() {
        let token = tokens[i];
        if token.prefix & rules.allowed == 0 {
            return Err(format!(
                "tag {} (`{}`) has a prefix {} does not allow (it allows {})",
                i + 1,
                tags[i].as_ref(),
                scheme.name(),
                prefix_names(rules.allowed)
            ));
        }
        if matches_any(rules.start, prev, token) {
            // `Tokens._forward`: the entity goes on while tokens are inside it.
            let mut inside_prev = token;
            let mut end = n.saturating_sub(1);
            for (j, &next) in tokens.iter().enumerate().skip(i + 1) {
                if matches_any(rules.inside, inside_prev, next) {
                    inside_prev = next;
                } else {
                    end = j;
                    break;
                }
            }
            if end >= 1 && matches_any(rules.end, tokens[end - 1], tokens[end]) {
                out.push((token.type_, i, end));
            }
            // `end` is past `i` whenever the loop broke; seqeval's fallback (never reached:
            // the closing `O` is inside no entity) would not advance, so step over it.
            i = end.max(i + 1);
        } else {
            i += 1;
        }
        prev = tokens[i - 1];
    }
    Ok(out)
}

/// `seqeval.scheme.auto_detect` on the references: the scheme whose prefix sets include
/// exactly the prefixes found (the strict mode's scheme when none is named); an error
/// when none does.
pub fn detect_scheme<S: AsRef<str>>(references: &[Vec<S>], suffix: bool) -> Result<Scheme> {
    let mut found = 0u8;
    for (i, sentence) in references.iter().enumerate() {
        for (k, tag) in sentence.iter().enumerate() {
            let token = parse_token(tag.as_ref(), suffix).map_err(|e| {
                Error::Invalid(format!("reference sequence {}, tag {}: {e}", i + 1, k + 1))
            })?;
            found |= token.prefix;
        }
    }
    let sets = |list: &[u8]| list.contains(&found);
    let (i, o, b, e, s, u, l) = (P_I, P_O, P_B, P_E, P_S, P_U, P_L);
    if sets(&[i | o | b, i | b, b | o, b]) {
        Ok(Scheme::Iob2)
    } else if sets(&[i | o | e, i | e, e | o, e]) {
        Ok(Scheme::Ioe2)
    } else if sets(&[
        i | o | b | e | s,
        i | b | e | s,
        i | o | b | e,
        o | b | e | s,
        i | b | e,
        b | e | s,
        o | b | e,
        b | e,
        s,
    ]) {
        Ok(Scheme::Iobes)
    } else if sets(&[
        i | o | b | l | u,
        i | b | l | u,
        i | o | b | l,
        o | b | l | u,
        i | b | l,
        b | l | u,
        o | b | l,
        b | l,
        u,
    ]) {
        Ok(Scheme::Bilou)
    } else {
        Err(Error::Invalid(format!(
            "the strict mode cannot detect the scheme of the references (prefixes found: {}; \
             seqeval detects IOB2, IOE2, IOBES and BILOU); name it with --scheme",
            if found == 0 {
                "none".to_string()
            } else {
                prefix_names(found)
            }
        )))
    }
}

/// The entity sets of one side under `options`.
fn entity_sets<S: AsRef<str>>(
    sentences: &[Vec<S>],
    side: &str,
    scheme: Option<Scheme>,
    suffix: bool,
) -> Result<EntitySets> {
    let mut sets = EntitySets::new();
    match scheme {
        Some(scheme) => {
            for (i, sentence) in sentences.iter().enumerate() {
                let found = strict_entities(sentence, scheme, suffix)
                    .map_err(|e| Error::Invalid(format!("{side} sequence {}, {e}", i + 1)))?;
                for (type_, start, end) in found {
                    sets.entry(type_.to_string())
                        .or_default()
                        .insert((i, start, end));
                }
            }
        }
        None => {
            for (type_, start, end) in entities_with(sentences, suffix) {
                sets.entry(type_).or_default().insert((0, start, end));
            }
        }
    }
    Ok(sets)
}

/// Checks one sequence of tags as the options read it, without scoring: an empty tag,
/// and in the strict mode with a named scheme a prefix the scheme does not allow, is an
/// error naming the tag's 1-based position.
pub fn check_sequence<S: AsRef<str>>(
    tags: &[S],
    options: &SeqevalOptions,
) -> std::result::Result<(), String> {
    if let Some(k) = tags.iter().position(|t| t.as_ref().is_empty()) {
        return Err(format!(
            "tag {} is empty; a tag is O or a prefixed type",
            k + 1
        ));
    }
    if let (true, Some(scheme)) = (options.strict, options.scheme) {
        strict_entities(tags, scheme, options.suffix)?;
    }
    Ok(())
}

/// `seqeval`'s `_prf_divide`: `a / b`, or the zero-division value when `b` is 0.
fn divide(a: usize, b: usize, zero: ZeroDivision) -> f64 {
    if b == 0 {
        zero.value()
    } else {
        a as f64 / b as f64
    }
}

/// `(1 + β²)·p·r / (β²·p + r)` with β = 1, 0 when the denominator is.
fn f1(p: f64, r: f64) -> f64 {
    let denominator = p + r;
    if denominator == 0.0 {
        0.0
    } else {
        2.0 * p * r / denominator
    }
}

/// `evaluate`'s `seqeval` metric: `seqeval.metrics.classification_report` of the
/// predictions against the references (per type and micro average) and
/// `seqeval.metrics.accuracy_score`.
///
/// Errors, where seqeval raises: different numbers of sequences or of tags in a pair,
/// no tags at all (the accuracy divides by zero), an empty tag, in the strict mode a tag
/// outside the scheme or references whose scheme cannot be detected. A scheme outside
/// the strict mode is refused too: seqeval would ignore it.
pub fn report<S: AsRef<str>>(
    predictions: &[Vec<S>],
    references: &[Vec<S>],
    options: &SeqevalOptions,
) -> Result<SeqevalReport> {
    if predictions.len() != references.len() {
        return Err(Error::Invalid(format!(
            "seqeval: {} predicted sequences but {} reference sequences",
            predictions.len(),
            references.len()
        )));
    }
    if let (false, Some(scheme)) = (options.strict, options.scheme) {
        return Err(Error::Invalid(format!(
            "seqeval reads a scheme ({}) only in the strict mode (--mode strict); the default \
             mode chunks as conlleval does and would ignore it",
            scheme.name()
        )));
    }
    let (mut correct, mut total) = (0usize, 0usize);
    for (i, (p, r)) in predictions.iter().zip(references).enumerate() {
        if p.len() != r.len() {
            return Err(Error::Invalid(format!(
                "seqeval: sequence {} has {} predicted tags but {} reference tags",
                i + 1,
                p.len(),
                r.len()
            )));
        }
        for (side, seq) in [("prediction", p), ("reference", r)] {
            if let Some(k) = seq.iter().position(|t| t.as_ref().is_empty()) {
                return Err(Error::Invalid(format!(
                    "{side} sequence {}, tag {} is empty; a tag is O or a prefixed type",
                    i + 1,
                    k + 1
                )));
            }
        }
        correct += p
            .iter()
            .zip(r)
            .filter(|(a, b)| a.as_ref() == b.as_ref())
            .count();
        total += r.len();
    }
    if total == 0 {
        return Err(Error::Invalid(
            "seqeval: the sequences hold no tags; the accuracy needs at least one".into(),
        ));
    }
    let scheme = match (options.strict, options.scheme) {
        (true, Some(scheme)) => Some(scheme),
        (true, None) => Some(detect_scheme(references, options.suffix)?),
        (false, _) => None,
    };
    let gold = entity_sets(references, "reference", scheme, options.suffix)?;
    let pred = entity_sets(predictions, "prediction", scheme, options.suffix)?;
    let names: BTreeSet<&String> = gold.keys().chain(pred.keys()).collect();
    let empty = BTreeSet::new();
    let zero = options.zero_division;
    let mut types = BTreeMap::new();
    let (mut tp_all, mut pred_all, mut gold_all) = (0usize, 0usize, 0usize);
    for name in names {
        let g = gold.get(name).unwrap_or(&empty);
        let p = pred.get(name).unwrap_or(&empty);
        let tp = g.intersection(p).count();
        let precision = divide(tp, p.len(), zero);
        let recall = divide(tp, g.len(), zero);
        types.insert(
            name.clone(),
            TypeScores {
                precision,
                recall,
                f1: f1(precision, recall),
                number: g.len(),
            },
        );
        tp_all += tp;
        pred_all += p.len();
        gold_all += g.len();
    }
    let precision = divide(tp_all, pred_all, zero);
    let recall = divide(tp_all, gold_all, zero);
    Ok(SeqevalReport {
        types,
        overall_precision: precision,
        overall_recall: recall,
        overall_f1: f1(precision, recall),
        overall_accuracy: correct as f64 / total as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    /// `seqeval`'s own docstring examples.
    #[test]
    fn docstring_examples() {
        assert_eq!(
            entities(&[s(&["B-PER", "I-PER", "O", "B-LOC"])]),
            [("PER".to_string(), 0, 1), ("LOC".to_string(), 3, 3)]
        );
        let gold = [
            s(&["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"]),
            s(&["B-PER", "I-PER", "O"]),
        ];
        let pred = [
            s(&["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"]),
            s(&["B-PER", "I-PER", "O"]),
        ];
        let r = seqeval(&pred, &gold).unwrap();
        assert_eq!(
            (r.overall_precision, r.overall_recall, r.overall_f1),
            (0.5, 0.5, 0.5)
        );
        assert_eq!(r.overall_accuracy, 0.8);
    }
}
