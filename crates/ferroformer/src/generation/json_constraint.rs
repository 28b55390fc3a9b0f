//! Output constrained to one JSON object (the OpenAI API's `response_format:
//! {"type": "json_object"}`).
//!
//! [`JsonState`] is a pushdown automaton over bytes that accepts exactly the prefixes of a
//! JSON text whose top-level value is an object (RFC 8259: nested objects and arrays,
//! strings with every escape including `\uXXXX` and surrogate pairs, numbers without
//! leading zeros, `true` / `false` / `null`, whitespace), with valid UTF-8 inside strings.
//! [`TokenBytes`] holds every vocabulary entry's bytes, computed once per tokenizer (and
//! shared, behind an [`Arc`], by every sequence that uses it); [`JsonConstraint`] masks,
//! at each step, every token whose bytes would leave the output no longer a prefix of such a
//! text. End-of-sequence tokens are allowed once the object is complete, and nothing else
//! then. Given the tokens left (`max_new_tokens`), a token is also masked when the object
//! could no longer be closed in time, so a sequence that runs to its limit still ends with a
//! complete object (each closing byte costing one token, as in byte-level and
//! byte-fallback vocabularies, which hold every single byte).
//!
//! Tokens are handled as bytes, not text: a byte-level BPE token that is half of a UTF-8
//! character, or a byte-fallback token `<0xE2>`, advances the automaton by its raw bytes, so
//! a character split over tokens is accepted when it completes and invalid UTF-8 never is.

use std::sync::Arc;

use crate::error::{Error, Result};

/// Every vocabulary entry's bytes, as they appear in decoded text (`None` for special tokens
/// and entries that decode to nothing known: they are never allowed).
#[derive(Debug, Clone)]
pub struct TokenBytes {
    /// All tokens' bytes, end to end.
    data: Vec<u8>,
    /// Token `i`'s bytes are `data[spans[i].0..spans[i].1]`; `None` when not allowed.
    spans: Vec<Option<(u32, u32)>>,
    /// Tokens that can sit inside a string unchanged: complete UTF-8, no `"`, no backslash,
    /// no control character (the fast path of a step inside a string).
    plain: Vec<bool>,
    /// The allowed tokens by first byte, in increasing id order: outside strings most
    /// first bytes are refused at once, and their tokens are never looked at.
    by_first: Vec<Vec<u32>>,
}

impl TokenBytes {
    /// A table from each token's bytes (`None`: never allowed), indexed by token id.
    pub fn from_pieces(pieces: Vec<Option<Vec<u8>>>) -> Self {
        let mut data = Vec::new();
        let mut spans = Vec::with_capacity(pieces.len());
        let mut plain = Vec::with_capacity(pieces.len());
        let mut by_first = vec![Vec::new(); 256];
        for (id, p) in pieces.into_iter().enumerate() {
            match p {
                // An empty piece would let the model stall without writing anything.
                Some(b) if !b.is_empty() => {
                    by_first[b[0] as usize].push(id as u32);
                    let start = data.len() as u32;
                    data.extend_from_slice(&b);
                    spans.push(Some((start, data.len() as u32)));
                    plain.push(
                        std::str::from_utf8(&b).is_ok()
                            && b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\'),
                    );
                }
                _ => {
                    spans.push(None);
                    plain.push(false);
                }
            }
        }
        Self {
            data,
            spans,
            plain,
            by_first,
        }
    }

    /// Each of `vocab_size` token ids' bytes under `tokenizer` (ids past the tokenizer's
    /// vocabulary are never allowed).
    ///
    /// Byte-level BPE tokens (a `ByteLevel` decoder: GPT-2, Llama 3, Qwen, SmolLM) map each
    /// character back to its byte, as that decoder does; SentencePiece tokens (`Metaspace`,
    /// or `Replace` of `▁`) turn `▁` into a space, and with `ByteFallback` a `<0xHH>` token is
    /// the byte `HH`. Any other decoder: the token decoded alone, when that is valid text.
    /// Special tokens are never allowed (the end-of-sequence tokens are handled apart).
    pub fn from_tokenizer(tokenizer: &tokenizers::Tokenizer, vocab_size: usize) -> Self {
        let mut kinds = Vec::new();
        if let Some(d) = tokenizer.get_decoder() {
            if let Ok(v) = serde_json::to_value(d) {
                decoder_kinds(&v, &mut kinds);
            }
        }
        let has = |k: &str| kinds.iter().any(|x| x == k);
        let byte_level = has("ByteLevel");
        let metaspace = has("Metaspace") || has("Replace");
        let byte_fallback = has("ByteFallback");
        let special: std::collections::HashSet<u32> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let unicode_to_byte = if byte_level {
            gpt2_unicode_to_byte()
        } else {
            Default::default()
        };
        let pieces = (0..vocab_size as u32)
            .map(|id| {
                if special.contains(&id) {
                    return None;
                }
                let token = tokenizer.id_to_token(id)?;
                if byte_level {
                    // As the ByteLevel decoder: a token with a character outside the map
                    // (an added token) stands for its own text.
                    let mapped: Option<Vec<u8>> = token
                        .chars()
                        .map(|c| unicode_to_byte.get(&c).copied())
                        .collect();
                    return Some(mapped.unwrap_or_else(|| token.into_bytes()));
                }
                if byte_fallback {
                    if let Some(b) = fallback_byte(&token) {
                        return Some(vec![b]);
                    }
                }
                if metaspace {
                    return Some(token.replace('\u{2581}', " ").into_bytes());
                }
                let text = tokenizer.decode(&[id], false).ok()?;
                (!text.contains('\u{FFFD}')).then(|| text.into_bytes())
            })
            .collect();
        Self::from_pieces(pieces)
    }

    /// Number of token ids.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the table has no token.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Token `id`'s bytes, `None` when it is never allowed.
    pub fn get(&self, id: u32) -> Option<&[u8]> {
        let (a, b) = (*self.spans.get(id as usize)?)?;
        Some(&self.data[a as usize..b as usize])
    }
}

/// The `type` of a decoder and of every decoder inside it (a `Sequence`).
fn decoder_kinds(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(t) = m.get("type").and_then(|t| t.as_str()) {
                out.push(t.to_string());
            }
            for x in m.values() {
                decoder_kinds(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| decoder_kinds(x, out)),
        _ => {}
    }
}

/// `<0xHH>`'s byte.
fn fallback_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// GPT-2's byte-to-character map, reversed: printable bytes stand for themselves, the
/// others for the characters from U+0100 on, in byte order.
fn gpt2_unicode_to_byte() -> std::collections::HashMap<char, u8> {
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0u32..256 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
        let c = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        if let Some(c) = char::from_u32(c) {
            map.insert(c, b as u8);
        }
    }
    map
}

/// Where a `\u` escape is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    /// Not in an escape.
    None,
    /// After a backslash.
    Backslash,
    /// `left` hex digits to go, `val` those read; `low`: this one must be a low surrogate.
    Hex { left: u8, val: u16, low: bool },
    /// After a high surrogate: its low half's backslash must follow.
    LowBackslash,
    /// After a high surrogate's backslash: its `u` must follow.
    LowU,
}

/// A number's part being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

/// The automaton's state apart from its stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the top-level `{`.
    Start,
    /// A value must come (after `:` or an array's `,`).
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After an object's `,`: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the closing bracket.
    After,
    /// In a string (`key`: an object's key). `utf8`: continuation bytes still due, and
    /// the range the next one must lie in.
    Str {
        key: bool,
        esc: Esc,
        utf8: u8,
        lo: u8,
        hi: u8,
    },
    /// In a number.
    Num(Num),
    /// In `true` (0), `false` (1) or `null` (2), `at` bytes read.
    Lit { word: u8, at: u8 },
    /// The object is complete.
    Done,
}

const WORDS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// The open containers (`true`: an object), as the automaton sees them.
trait Stack {
    fn top(&self) -> Option<bool>;
    fn push(&mut self, object: bool);
    fn pop(&mut self) -> Option<bool>;
    fn depth(&self) -> usize;
}

impl Stack for Vec<bool> {
    fn top(&self) -> Option<bool> {
        self.last().copied()
    }
    fn push(&mut self, object: bool) {
        Vec::push(self, object)
    }
    fn pop(&mut self) -> Option<bool> {
        Vec::pop(self)
    }
    fn depth(&self) -> usize {
        self.len()
    }
}

/// A stack seen through the changes one token makes: the base's first `keep` entries, then
/// `extra` — so that trying a token costs no copy of the stack.
struct Overlay<'a> {
    base: &'a [bool],
    keep: usize,
    extra: &'a mut Vec<bool>,
}

impl Stack for Overlay<'_> {
    fn top(&self) -> Option<bool> {
        match self.extra.last() {
            Some(&x) => Some(x),
            None => self.keep.checked_sub(1).map(|i| self.base[i]),
        }
    }
    fn push(&mut self, object: bool) {
        self.extra.push(object)
    }
    fn pop(&mut self) -> Option<bool> {
        match self.extra.pop() {
            Some(x) => Some(x),
            None => {
                self.keep = self.keep.checked_sub(1)?;
                Some(self.base[self.keep])
            }
        }
    }
    fn depth(&self) -> usize {
        self.keep + self.extra.len()
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn hex(b: u8) -> Option<u16> {
    (b as char).to_digit(16).map(|d| d as u16)
}

fn string(key: bool) -> Mode {
    Mode::Str {
        key,
        esc: Esc::None,
        utf8: 0,
        lo: 0,
        hi: 0,
    }
}

/// The mode after a complete value.
fn value_done(stack: &impl Stack) -> Mode {
    if stack.depth() == 0 {
        Mode::Done
    } else {
        Mode::After
    }
}

/// The mode after `b` starts a value, `None` when no value starts with it.
fn begin_value(b: u8, stack: &mut impl Stack) -> Option<Mode> {
    Some(match b {
        b'{' => {
            stack.push(true);
            Mode::ObjectFirst
        }
        b'[' => {
            stack.push(false);
            Mode::ArrayFirst
        }
        b'"' => string(false),
        b'-' => Mode::Num(Num::Minus),
        b'0' => Mode::Num(Num::Zero),
        b'1'..=b'9' => Mode::Num(Num::Int),
        b't' => Mode::Lit { word: 0, at: 1 },
        b'f' => Mode::Lit { word: 1, at: 1 },
        b'n' => Mode::Lit { word: 2, at: 1 },
        _ => return None,
    })
}

/// Closes the innermost container with `b` when it is its closing bracket.
fn close(b: u8, stack: &mut impl Stack) -> Option<Mode> {
    let want = match b {
        b'}' => true,
        b']' => false,
        _ => return None,
    };
    if stack.top()? != want {
        return None;
    }
    stack.pop();
    Some(value_done(stack))
}

/// The mode after byte `b`, `None` when `b` makes the output no JSON-object prefix.
fn step(mode: Mode, b: u8, stack: &mut impl Stack) -> Option<Mode> {
    match mode {
        Mode::Start => match b {
            _ if is_ws(b) => Some(mode),
            b'{' => {
                stack.push(true);
                Some(Mode::ObjectFirst)
            }
            _ => None,
        },
        Mode::Value => {
            if is_ws(b) {
                Some(mode)
            } else {
                begin_value(b, stack)
            }
        }
        Mode::ArrayFirst => match b {
            _ if is_ws(b) => Some(mode),
            b']' => close(b, stack),
            _ => begin_value(b, stack),
        },
        Mode::ObjectFirst => match b {
            _ if is_ws(b) => Some(mode),
            b'"' => Some(string(true)),
            b'}' => close(b, stack),
            _ => None,
        },
        Mode::Key => match b {
            _ if is_ws(b) => Some(mode),
            b'"' => Some(string(true)),
            _ => None,
        },
        Mode::Colon => match b {
            _ if is_ws(b) => Some(mode),
            b':' => Some(Mode::Value),
            _ => None,
        },
        Mode::After => match b {
            _ if is_ws(b) => Some(mode),
            b',' => Some(if stack.top()? { Mode::Key } else { Mode::Value }),
            b'}' | b']' => close(b, stack),
            _ => None,
        },
        Mode::Str {
            key,
            esc,
            utf8,
            lo,
            hi,
        } => string_step(key, esc, utf8, lo, hi, b, stack),
        Mode::Num(n) => {
            let next = match (n, b) {
                (Num::Minus, b'0') => Some(Num::Zero),
                (Num::Minus, b'1'..=b'9') => Some(Num::Int),
                (Num::Int, b'0'..=b'9') => Some(Num::Int),
                (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
                (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
                (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::E),
                (Num::E, b'+' | b'-') => Some(Num::ESign),
                (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Some(Num::Exp),
                _ => None,
            };
            match next {
                Some(n) => Some(Mode::Num(n)),
                // A complete number ends here and `b` belongs to what follows it (a digit
                // after a lone `0` does not: no leading zeros).
                None if matches!(n, Num::Zero | Num::Int | Num::Frac | Num::Exp) => {
                    step(value_done(stack), b, stack)
                }
                None => None,
            }
        }
        Mode::Lit { word, at } => {
            let w = WORDS[word as usize];
            if w[at as usize] != b {
                return None;
            }
            Some(if at as usize + 1 == w.len() {
                value_done(stack)
            } else {
                Mode::Lit { word, at: at + 1 }
            })
        }
        Mode::Done => None,
    }
}

fn string_step(
    key: bool,
    esc: Esc,
    utf8: u8,
    lo: u8,
    hi: u8,
    b: u8,
    stack: &mut impl Stack,
) -> Option<Mode> {
    let with = |esc: Esc, utf8: u8, lo: u8, hi: u8| {
        Some(Mode::Str {
            key,
            esc,
            utf8,
            lo,
            hi,
        })
    };
    if utf8 > 0 {
        return if (lo..=hi).contains(&b) {
            with(Esc::None, utf8 - 1, 0x80, 0xBF)
        } else {
            None
        };
    }
    match esc {
        Esc::Backslash => match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => with(Esc::None, 0, 0, 0),
            b'u' => with(
                Esc::Hex {
                    left: 4,
                    val: 0,
                    low: false,
                },
                0,
                0,
                0,
            ),
            _ => None,
        },
        Esc::LowBackslash if b == b'\\' => with(Esc::LowU, 0, 0, 0),
        Esc::LowU if b == b'u' => with(
            Esc::Hex {
                left: 4,
                val: 0,
                low: true,
            },
            0,
            0,
            0,
        ),
        Esc::LowBackslash | Esc::LowU => None,
        Esc::Hex { left, val, low } => {
            let val = (val << 4) | hex(b)?;
            let read = 5 - left;
            // Surrogates are checked as soon as their leading digits show (serde_json and
            // most parsers refuse a lone one): no prefix is accepted that cannot complete.
            let ok = match (low, read) {
                (true, 1) => val == 0xD,
                (true, 2) => (0xDC..=0xDF).contains(&val),
                (false, 2) => !(0xDC..=0xDF).contains(&val),
                _ => true,
            };
            if !ok {
                return None;
            }
            if left > 1 {
                return with(
                    Esc::Hex {
                        left: left - 1,
                        val,
                        low,
                    },
                    0,
                    0,
                    0,
                );
            }
            let high = !low && (0xD800..=0xDBFF).contains(&val);
            with(if high { Esc::LowBackslash } else { Esc::None }, 0, 0, 0)
        }
        Esc::None => match b {
            b'"' => Some(if key { Mode::Colon } else { value_done(stack) }),
            b'\\' => with(Esc::Backslash, 0, 0, 0),
            0..=0x1F => None,
            0x20..=0x7F => with(Esc::None, 0, 0, 0),
            0xC2..=0xDF => with(Esc::None, 1, 0x80, 0xBF),
            0xE0 => with(Esc::None, 2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => with(Esc::None, 2, 0x80, 0xBF),
            0xED => with(Esc::None, 2, 0x80, 0x9F),
            0xF0 => with(Esc::None, 3, 0x90, 0xBF),
            0xF1..=0xF3 => with(Esc::None, 3, 0x80, 0xBF),
            0xF4 => with(Esc::None, 3, 0x80, 0x8F),
            _ => None,
        },
    }
}

/// Bytes that complete the output at least, from `mode` with `depth` open containers.
fn close_cost(mode: Mode, depth: usize) -> usize {
    let own = match mode {
        Mode::Start => 2,
        Mode::Value | Mode::Num(Num::Minus | Num::Dot | Num::E | Num::ESign) => 1,
        Mode::Key => 4,
        Mode::Colon => 2,
        Mode::Str { key, esc, utf8, .. } => {
            let esc = match esc {
                Esc::None => 0,
                Esc::Backslash => 1,
                Esc::LowBackslash => 6,
                Esc::LowU => 5,
                Esc::Hex { left, val, low } => {
                    // A high surrogate (known from its first two digits) needs its low half.
                    let read = 4 - left as u32;
                    let high =
                        !low && read >= 2 && (0xD8..=0xDB).contains(&(val >> (4 * (read - 2))));
                    left as usize + if high { 6 } else { 0 }
                }
            };
            utf8 as usize + esc + 1 + if key { 2 } else { 0 }
        }
        Mode::Lit { word, at } => WORDS[word as usize].len() - at as usize,
        Mode::ArrayFirst | Mode::ObjectFirst | Mode::After | Mode::Num(_) | Mode::Done => 0,
    };
    own + depth
}

/// A JSON-object prefix being read, byte by byte (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonState {
    stack: Vec<bool>,
    mode: Mode,
}

impl Default for JsonState {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonState {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self {
            stack: Vec::new(),
            mode: Mode::Start,
        }
    }

    /// Reads `bytes`; `false` (and the state unchanged) when they would make the output no
    /// prefix of a JSON object.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut stack = self.stack.clone();
        let mut mode = self.mode;
        for &b in bytes {
            match step(mode, b, &mut stack) {
                Some(m) => mode = m,
                None => return false,
            }
        }
        self.stack = stack;
        self.mode = mode;
        true
    }

    /// Whether the object is complete (only the end of the output may follow).
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Open objects and arrays.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// Bytes it takes at least to complete the object from here.
    pub fn bytes_to_close(&self) -> usize {
        close_cost(self.mode, self.stack.len())
    }

    /// Whether `bytes` would keep the output a prefix, and the bytes to complete it then;
    /// `scratch` is reused between calls, so that trying a token allocates nothing.
    fn try_bytes(&self, bytes: &[u8], scratch: &mut Vec<bool>) -> Option<usize> {
        scratch.clear();
        let mut stack = Overlay {
            base: &self.stack,
            keep: self.stack.len(),
            extra: scratch,
        };
        let mut mode = self.mode;
        for &b in bytes {
            mode = step(mode, b, &mut stack)?;
        }
        Some(close_cost(mode, stack.depth()))
    }
}

/// One sequence's JSON constraint: the automaton, the token table, and the tokens that end
/// the sequence (see the module documentation).
#[derive(Debug, Clone)]
pub struct JsonConstraint {
    table: Arc<TokenBytes>,
    state: JsonState,
    eos: Vec<u32>,
    scratch: Vec<bool>,
    allowed: Vec<u32>,
}

impl JsonConstraint {
    /// A constraint over `table`'s tokens, ended by `eos` (at least one token).
    pub fn new(table: Arc<TokenBytes>, eos: &[u32]) -> Result<Self> {
        if eos.is_empty() {
            return Err(Error::Invalid(
                "JSON output needs an end-of-sequence token to end the object with; the \
                 model has none"
                    .into(),
            ));
        }
        Ok(Self {
            table,
            state: JsonState::new(),
            eos: eos.to_vec(),
            scratch: Vec::new(),
            allowed: Vec::new(),
        })
    }

    /// The automaton.
    pub fn state(&self) -> &JsonState {
        &self.state
    }

    /// Whether the object is complete.
    pub fn is_complete(&self) -> bool {
        self.state.is_complete()
    }

    /// The tokens allowed next when `remaining` tokens at most are left (this one
    /// included; `None`: no limit), in increasing order.
    pub fn allowed(&mut self, remaining: Option<usize>) -> &[u32] {
        self.allowed.clear();
        if self.state.is_complete() {
            self.allowed.extend_from_slice(&self.eos);
            self.allowed.sort_unstable();
            return &self.allowed;
        }
        // After this token, the object must still close with one byte a token and leave
        // room for the end-of-sequence token.
        let budget = remaining.map(|r| r.saturating_sub(2));
        self.collect(budget);
        if self.allowed.is_empty() && budget.is_some() {
            // Too few tokens to complete anything: keep to valid JSON at least.
            self.collect(None);
        }
        &self.allowed
    }

    fn collect(&mut self, budget: Option<usize>) {
        let t = &*self.table;
        let in_plain_string = matches!(
            self.state.mode,
            Mode::Str {
                esc: Esc::None,
                utf8: 0,
                ..
            }
        );
        let fits = |c: Option<usize>| c.is_some_and(|c| budget.is_none_or(|r| c <= r));
        if in_plain_string {
            let cost_here = self.state.bytes_to_close();
            for id in 0..t.len() {
                let Some((a, b)) = t.spans[id] else { continue };
                let cost = if t.plain[id] {
                    // Text inside a string leaves the automaton where it is.
                    Some(cost_here)
                } else {
                    self.state
                        .try_bytes(&t.data[a as usize..b as usize], &mut self.scratch)
                };
                if fits(cost) {
                    self.allowed.push(id as u32);
                }
            }
            return;
        }
        for first in 0..=255u8 {
            let ids = &t.by_first[first as usize];
            if ids.is_empty() || self.state.try_bytes(&[first], &mut self.scratch).is_none() {
                continue;
            }
            for &id in ids {
                let Some((a, b)) = t.spans[id as usize] else {
                    continue;
                };
                let cost = self
                    .state
                    .try_bytes(&t.data[a as usize..b as usize], &mut self.scratch);
                if fits(cost) {
                    self.allowed.push(id);
                }
            }
        }
        self.allowed.sort_unstable();
    }

    /// Sets every score but the allowed tokens' to `-inf` (see [`JsonConstraint::allowed`]).
    /// When every allowed token was already at `-inf` (another processor banned them), they
    /// get 0, so that the output still ends as JSON.
    pub fn mask(&mut self, scores: &mut [f32], remaining: Option<usize>) {
        let allowed = self.allowed(remaining);
        let mut kept: Vec<(u32, f32)> = allowed
            .iter()
            .filter_map(|&i| scores.get(i as usize).map(|&s| (i, s)))
            .collect();
        if kept.is_empty() {
            // Nothing of the vocabulary fits (a table for another model): end the sequence.
            kept = self.eos.iter().map(|&e| (e, 0.0)).collect();
        }
        if kept.iter().all(|(_, s)| *s == f32::NEG_INFINITY) {
            kept.iter_mut().for_each(|(_, s)| *s = 0.0);
        }
        scores.iter_mut().for_each(|s| *s = f32::NEG_INFINITY);
        for (i, s) in kept {
            if let Some(x) = scores.get_mut(i as usize) {
                *x = s;
            }
        }
    }

    /// Moves past `token`; `false` (state unchanged) when it was not allowed.
    pub fn advance(&mut self, token: u32) -> bool {
        if self.eos.contains(&token) {
            return self.state.is_complete();
        }
        match self.table.get(token) {
            Some(bytes) => self.state.feed(bytes),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> bool {
        JsonState::new().feed(s.as_bytes())
    }

    fn complete(s: &str) -> bool {
        let mut st = JsonState::new();
        st.feed(s.as_bytes()) && st.is_complete()
    }

    #[test]
    fn accepts_prefixes_of_objects() {
        for s in [
            "",
            "  \n{",
            "{\"a\"",
            "{\"a\": 1",
            "{\"a\": [1, 2, {\"b\": null}], \"c\": tr",
            "{\"k\": -0.5e+3",
            "{\"k\": -0.5E-3}",
            "{\"k\": 0",
            "{\"k\": 10.25",
            "{\"s\": \"a\\\"b\\\\c\\/\\b\\f\\n\\r\\t\\u00e9",
            "{\"s\": \"\\uD83D\\uDE00\"",
            "{\"s\": \"h\u{e9}llo \u{1F600}\"}",
            "{\"a\":{\"b\":{\"c\":[[[]]]}}}",
            "{\"a\": false, \"b\": true, \"c\": null}",
        ] {
            assert!(prefix(s), "{s:?} is a JSON-object prefix");
        }
        assert!(complete("{}"));
        assert!(complete(" { \"a\" : [ 1 , -0.5e+3 , \"x\" ] }"));
        assert!(complete("{\"a\":{\"b\":[1,{\"c\":\"d\"}]}}"));
        assert!(!complete("{\"a\": 1"));
        assert!(!complete("{\"a\": [1]"));
    }

    #[test]
    fn rejects_what_json_does_not_allow() {
        for s in [
            "[",                        // top level must be an object
            "\"a\"",                    // likewise
            "1",                        // likewise
            "{a",                       // keys are strings
            "{\"a\" 1",                 // missing colon
            "{\"a\": 01",               // leading zero
            "{\"a\": -01",              // likewise
            "{\"a\": 1.}",              // a dot needs digits
            "{\"a\": .5",               // a number starts with a digit or minus
            "{\"a\": 1e}",              // an exponent needs digits
            "{\"a\": +1",               // no plus sign
            "{\"a\": 1,}",              // trailing comma
            "{\"a\": [1,]",             // likewise
            "{\"a\": [1}",              // mismatched bracket
            "{\"a\": tru }",            // broken literal
            "{\"a\": True",             // literals are lowercase
            "{\"a\": \"\\x\"",          // unknown escape
            "{\"a\": \"\\u12G",         // bad hex digit
            "{\"a\": \"\\uDE00",        // lone low surrogate
            "{\"a\": \"\\uD83D\"",      // high surrogate without its low half
            "{\"a\": \"\\uD83D\\u0041", // high surrogate followed by no low one
            "{\"a\": \"\n",             // raw control character in a string
            "{}}",                      // nothing after the object
            "{} ",                      // not even whitespace
            "{\"a\": 1 2",              // two values
            "{\"a\": nan",
        ] {
            assert!(!prefix(s), "{s:?} is no JSON-object prefix");
        }
    }

    #[test]
    fn checks_utf8_inside_strings_byte_by_byte() {
        let mut st = JsonState::new();
        assert!(st.feed(b"{\"a\": \""));
        // "é" split over two feeds is fine.
        assert!(st.feed(&[0xC3]));
        assert!(st.feed(&[0xA9]));
        // A lone continuation byte, an overlong form, a surrogate code point, bytes past
        // U+10FFFF are not.
        for bad in [
            &[0x80][..],
            &[0xC0, 0x80],
            &[0xE0, 0x80, 0x80],
            &[0xED, 0xA0, 0x80],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0xFF],
            &[0xC3, 0x41],
        ] {
            assert!(!st.clone().feed(bad), "{bad:x?}");
        }
        // Non-ASCII bytes outside a string are never JSON.
        assert!(!prefix("{\u{e9}"));
        assert!(st.feed("\u{1F600}\"}".as_bytes()));
        assert!(st.is_complete());
    }

    #[test]
    fn bytes_to_close_is_what_completion_takes() {
        for (s, tail) in [
            ("", "{}"),
            ("{", "}"),
            ("{\"a", "\":0}"),
            ("{\"a\"", ":0}"),
            ("{\"a\":", "0}"),
            ("{\"a\":[", "]}"),
            ("{\"a\":[1,", "0]}"),
            ("{\"a\":1,", "\"\":0}"),
            ("{\"a\":-", "0}"),
            ("{\"a\":1.", "0}"),
            ("{\"a\":1e+", "0}"),
            ("{\"a\":fa", "lse}"),
            ("{\"a\":\"\\", "n\"}"),
            ("{\"a\":\"\\u0", "000\"}"),
            ("{\"a\":\"\\uD8", "00\\uDC00\"}"),
            ("{\"a\":\"\\uD83D", "\\uDC00\"}"),
        ] {
            let mut st = JsonState::new();
            assert!(st.feed(s.as_bytes()), "{s:?}");
            assert_eq!(st.bytes_to_close(), tail.len(), "{s:?}");
            let whole = format!("{s}{tail}");
            assert!(complete(&whole), "{whole:?}");
            serde_json::from_str::<serde_json::Value>(&whole).unwrap();
        }
        // Inside a character: its missing continuation bytes, the quote, the brace.
        let mut st = JsonState::new();
        assert!(st.feed(&[b'{', b'"', b'a', b'"', b':', b'"', 0xE2]));
        assert_eq!(st.bytes_to_close(), 4);
    }

    fn table(pieces: &[&str]) -> Arc<TokenBytes> {
        Arc::new(TokenBytes::from_pieces(
            pieces.iter().map(|p| Some(p.as_bytes().to_vec())).collect(),
        ))
    }

    #[test]
    fn masks_tokens_and_allows_eos_only_at_the_end() {
        // Token 0 is the end of sequence (its own bytes do not matter).
        let t = table(&["</s>", "{", "}", "\"a\"", ":", "1", "x", "{}", " "]);
        let mut c = JsonConstraint::new(t, &[0]).unwrap();
        assert_eq!(c.allowed(None), &[1, 7, 8]);
        assert!(c.advance(1));
        assert_eq!(c.allowed(None), &[2, 3, 8]);
        assert!(!c.advance(0), "no end of sequence inside the object");
        assert!(!c.advance(6));
        for tok in [3, 4, 5] {
            assert!(c.advance(tok));
        }
        assert_eq!(c.allowed(None), &[2, 5, 8]);
        // With two tokens left (this one and the end), only the closing brace fits.
        assert_eq!(c.allowed(Some(2)), &[2]);
        assert!(c.advance(2));
        assert!(c.is_complete());
        assert_eq!(c.allowed(None), &[0]);
        let mut scores = vec![1.0; 9];
        c.mask(&mut scores, None);
        assert_eq!(scores[0], 1.0);
        assert!(scores[1..].iter().all(|s| *s == f32::NEG_INFINITY));
    }

    #[test]
    fn byte_level_and_byte_fallback_vocabularies_map_to_bytes() {
        // A byte-level BPE: "Ġ" is a space, "Ã" + "©" the two bytes of "é", each its own token.
        let bl = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[
            {"id":5,"content":"<|end|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
            "normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},
            "post_processor":null,"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
            "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,
            "fuse_unk":false,"byte_fallback":false,"ignore_merges":false,
            "vocab":{"{":0,"Ġ\"":1,"Ã":2,"©":3,"Ċ":4,"<|end|>":5},"merges":[]}}"#;
        let tok = tokenizers::Tokenizer::from_bytes(bl.as_bytes()).unwrap();
        let t = TokenBytes::from_tokenizer(&tok, 7);
        assert_eq!(t.get(0), Some(&b"{"[..]));
        assert_eq!(t.get(1), Some(&b" \""[..]));
        assert_eq!(t.get(2), Some(&[0xC3][..]));
        assert_eq!(t.get(3), Some(&[0xA9][..]));
        assert_eq!(t.get(4), Some(&b"\n"[..]));
        assert_eq!(t.get(5), None, "special tokens are never allowed");
        assert_eq!(t.get(6), None, "past the tokenizer's vocabulary");
        // A SentencePiece vocabulary with byte fallback.
        let sp = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":null,"post_processor":null,
            "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},
              {"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
            "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,
            "fuse_unk":false,"byte_fallback":true,"ignore_merges":false,
            "vocab":{"▁{":0,"<0xC3>":1,"<0xA9>":2,"ab":3},"merges":[]}}"#;
        let tok = tokenizers::Tokenizer::from_bytes(sp.as_bytes()).unwrap();
        let t = TokenBytes::from_tokenizer(&tok, 4);
        assert_eq!(t.get(0), Some(&b" {"[..]));
        assert_eq!(t.get(1), Some(&[0xC3][..]));
        assert_eq!(t.get(2), Some(&[0xA9][..]));
        assert_eq!(t.get(3), Some(&b"ab"[..]));
        // The split character is accepted once whole, never half of it before a quote.
        let mut c = JsonConstraint::new(
            Arc::new(TokenBytes::from_pieces(vec![
                Some(b"{\"a\":\"".to_vec()),
                Some(vec![0xC3]),
                Some(vec![0xA9]),
                Some(b"\"}".to_vec()),
                None,
            ])),
            &[4],
        )
        .unwrap();
        assert!(c.advance(0));
        assert_eq!(c.allowed(None), &[1, 3]);
        assert!(c.advance(1));
        assert_eq!(c.allowed(None), &[2], "only the continuation byte");
        assert!(c.advance(2));
        assert!(c.advance(3));
        assert!(c.is_complete());
    }
}
