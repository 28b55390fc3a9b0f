//! Chat templates: the Jinja template a chat model ships with, rendered as `transformers`'
//! `apply_chat_template(..., tokenize=False)` renders it.
//!
//! The template comes from a GGUF file's `tokenizer.chat_template`, or from a checkpoint
//! directory (`chat_template.jinja`, `chat_template.json`, or the `chat_template` entry of
//! `tokenizer_config.json`, in `transformers`' order of priority). It is rendered with
//! [`minijinja`] set up like `transformers`' sandboxed Jinja environment:
//!
//! - `trim_blocks` and `lstrip_blocks` on, the template's final newline dropped;
//! - the context: `messages`, `add_generation_prompt`, `tools` and `documents` (`none` unless
//!   given, as `transformers` passes them), the tokenizer's special tokens (`bos_token`,
//!   `eos_token`, ...) and any extra keyword arguments; JSON objects keep their keys in the
//!   order given (serde_json's `preserve_order`), so `tojson` prints a tool schema as Python
//!   prints the same dict;
//! - Jinja2's `iterable` test (`none` is not iterable), so `tools is iterable and tools |
//!   length > 0` is false without tools, as in Python;
//! - `raise_exception(message)` (rendering fails with an error carrying the message),
//!   `strftime_now(format)`, and `transformers`' `tojson` filter (`json.dumps` with
//!   `ensure_ascii=False`, `indent`, `separators`, `sort_keys`);
//! - Python's string, list and dict methods (`.strip()`, `.startswith()`, `.items()`, ...,
//!   from `minijinja-contrib`'s `pycompat`), `{% break %}` / `{% continue %}`, and values
//!   printed as Python's `str()` prints them (`True`, `None`, `['a', 1]`);
//! - `{% generation %}` blocks (used by `transformers` to find assistant tokens) render
//!   their body.
//!
//! ```
//! use ferroformer::models::{ChatMessage, ChatTemplate};
//!
//! # fn main() -> ferroformer::Result<()> {
//! let template = ChatTemplate::new(
//!     "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
//!      {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
//! )?;
//! let text = template.render(&[ChatMessage::user("Hi!")], true)?;
//! assert_eq!(text, "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, State, Value};
use serde::{Deserialize, Serialize};

use super::gguf_tokenizer::GgufTokenizer;
use super::tokenizer::AutoTokenizer;
use crate::error::{Error, Result};

/// One message of a conversation (`{"role": ..., "content": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, or whatever roles the template knows.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message of any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Tokens that end an assistant turn in common chat formats (ChatML, Llama 3, Phi-3,
/// Gemma). When a template writes one of them, generation should stop there too.
pub const END_OF_TURN_MARKERS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_turn|>",
    "<|endofturn|>",
];

/// Prefix of the detail of the error `raise_exception` raises, to tell it from other
/// rendering errors.
const RAISED: &str = "raise_exception: ";

/// The name the template is registered under (it shows in syntax errors).
const NAME: &str = "chat_template";

/// A compiled chat template with the special tokens it is rendered with.
#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    origin: String,
    env: Environment<'static>,
    special_tokens: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("special_tokens", &self.special_tokens)
            .field("source", &self.source)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error names the line.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        Self::with_origin(source.into(), "the chat template".into())
    }

    fn with_origin(source: String, origin: String) -> Result<Self> {
        let mut env = Environment::new();
        // `transformers`: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True),
        // keep_trailing_newline left False.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(false)
                .build()
                .map_err(|e| Error::Invalid(format!("chat template syntax settings: {e}")))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson);
        env.add_test("iterable", is_iterable);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        let compiled = rewrite_generation_tags(&source).into_owned();
        env.add_template_owned(NAME, compiled)
            .map_err(|e| Error::Invalid(format!("{origin} does not compile: {}", describe(&e))))?;
        Ok(Self {
            source,
            origin,
            env,
            special_tokens: serde_json::Map::new(),
        })
    }

    /// Sets a special token the template can read (`bos_token`, `eos_token`, `pad_token`,
    /// ...), as `transformers` passes the tokenizer's `special_tokens_map`.
    pub fn with_special_token(mut self, name: &str, value: impl Into<String>) -> Self {
        self.special_tokens
            .insert(name.to_string(), serde_json::Value::String(value.into()));
        self
    }

    /// The chat template of a GGUF file (`tokenizer.chat_template`), with its BOS and EOS
    /// tokens; `model` names the file in errors. A file without a template is an error saying
    /// so.
    pub fn from_gguf(tokenizer: &GgufTokenizer, model: &Path) -> Result<Self> {
        let source = tokenizer.chat_template().ok_or_else(|| {
            Error::file(
                model,
                "no chat template found: the GGUF metadata has no `tokenizer.chat_template`; \
                 this model cannot chat (use `generate` with a plain prompt instead)",
            )
        })?;
        let origin = if source == super::gguf_tokenizer::GEMMA3_CHAT_TEMPLATE {
            format!(
                "Gemma 3's chat template (built in: {} has no `tokenizer.chat_template`)",
                model.display()
            )
        } else {
            format!(
                "the chat template of {} (GGUF `tokenizer.chat_template`)",
                model.display()
            )
        };
        let mut t = Self::with_origin(source.to_string(), origin)?;
        let vocab = tokenizer.tokenizer();
        for (name, id) in [
            ("bos_token", tokenizer.bos_token_id()),
            ("eos_token", tokenizer.eos_token_id()),
        ] {
            if let Some(token) = id.and_then(|id| vocab.id_to_token(id)) {
                t = t.with_special_token(name, token);
            }
        }
        Ok(t)
    }

    /// The chat template of a checkpoint directory, as `transformers` finds it:
    /// `chat_template.jinja`, else `chat_template.json` (`{"chat_template": ...}`), else
    /// `tokenizer_config.json`'s `chat_template` (a string, or a list of
    /// `{"name", "template"}` of which `default` is taken). The special tokens come from
    /// `tokenizer` (the directory's [`AutoTokenizer`]). No template is an error naming the
    /// directory and the places looked at.
    pub fn from_dir(dir: &Path, tokenizer: &AutoTokenizer) -> Result<Self> {
        let (source, origin) = find_template(dir)?;
        let mut t = Self::with_origin(source, origin)?;
        for (name, token) in [
            ("bos_token", tokenizer.bos_token()),
            ("eos_token", tokenizer.eos_token()),
            ("unk_token", tokenizer.unk_token()),
            ("sep_token", tokenizer.sep_token()),
            ("pad_token", tokenizer.pad_token()),
            ("cls_token", tokenizer.cls_token()),
            ("mask_token", tokenizer.mask_token()),
        ] {
            if let Some(token) = token {
                t = t.with_special_token(name, token);
            }
        }
        Ok(t)
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from (for messages).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The value of a special token the template is rendered with (`"bos_token"`, ...).
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens.get(name).and_then(|v| v.as_str())
    }

    /// The end-of-turn tokens of [`END_OF_TURN_MARKERS`] that the template writes (for
    /// example `<|im_end|>` in ChatML): generation should stop at them.
    pub fn end_of_turn_markers(&self) -> Vec<&'static str> {
        END_OF_TURN_MARKERS
            .iter()
            .copied()
            .filter(|m| self.source.contains(m))
            .collect()
    }

    /// Renders a conversation; with `add_generation_prompt`, the text ends with the header
    /// of the assistant's next turn (where generation starts).
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let messages = serde_json::to_value(messages)
            .map_err(|e| Error::Invalid(format!("cannot convert the messages: {e}")))?;
        self.render_json(&messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// Renders messages given as JSON (any fields: `tool_calls`, `name`, ... as the template
    /// reads them), with extra keyword arguments (`tools`, `documents`, or anything the
    /// template uses), as `apply_chat_template(messages, add_generation_prompt=...,
    /// **kwargs)`.
    pub fn render_json(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        if !messages.is_array() {
            return Err(Error::Invalid(format!(
                "chat messages must be a list of {{\"role\", \"content\"}} objects, found {messages}"
            )));
        }
        let mut ctx = serde_json::Map::new();
        ctx.insert("tools".into(), serde_json::Value::Null);
        ctx.insert("documents".into(), serde_json::Value::Null);
        ctx.extend(
            self.special_tokens
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        ctx.extend(kwargs.iter().map(|(k, v)| (k.clone(), v.clone())));
        ctx.insert("messages".into(), messages.clone());
        ctx.insert(
            "add_generation_prompt".into(),
            serde_json::Value::Bool(add_generation_prompt),
        );
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| Error::Invalid(format!("{}: {}", self.origin, describe(&e))))?;
        template
            .render(Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| self.render_error(&e))
    }

    fn render_error(&self, e: &minijinja::Error) -> Error {
        // `raise_exception` anywhere below (a macro, an include) surfaces as the first error
        // of the chain whose detail carries the marker.
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(m) = err.downcast_ref::<minijinja::Error>() {
                if let Some(msg) = m.detail().and_then(|d| d.strip_prefix(RAISED)) {
                    return Error::Invalid(format!(
                        "{} refused the conversation: {msg}",
                        self.origin
                    ));
                }
            }
            cur = err.source();
        }
        Error::Invalid(format!("cannot render {}: {}", self.origin, describe(e)))
    }
}

/// A minijinja error with its kind, detail and line of the template.
fn describe(e: &minijinja::Error) -> String {
    let mut s = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        let _ = write!(s, " (line {line})");
    }
    let mut cur = std::error::Error::source(e);
    while let Some(inner) = cur {
        let _ = write!(s, ": {inner}");
        cur = inner.source();
    }
    s
}

/// Finds a directory's chat template in `transformers`' order; returns it and where it was.
fn find_template(dir: &Path) -> Result<(String, String)> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let text = std::fs::read_to_string(&jinja).map_err(|e| Error::file(&jinja, e))?;
        return Ok((text, jinja.display().to_string()));
    }
    let read_json = super::tokenizer::read_json;
    let json = dir.join("chat_template.json");
    if let Some(v) = read_json(&json)? {
        if let Some(t) = v.get("chat_template") {
            return Ok((template_entry(t, &json)?, json.display().to_string()));
        }
    }
    let config = dir.join("tokenizer_config.json");
    if let Some(v) = read_json(&config)? {
        if let Some(t) = v.get("chat_template").filter(|t| !t.is_null()) {
            return Ok((
                template_entry(t, &config)?,
                format!("the chat template of {}", config.display()),
            ));
        }
    }
    Err(Error::file(
        dir,
        "no chat template found (looked for chat_template.jinja, chat_template.json and a \
         `chat_template` entry in tokenizer_config.json); this model cannot chat (use \
         `generate` with a plain prompt instead)",
    ))
}

/// A `chat_template` value: a string, or a list of named templates (`default` is taken).
fn template_entry(v: &serde_json::Value, path: &Path) -> Result<String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(items) => {
            let mut names = Vec::new();
            for item in items {
                let name = item.get("name").and_then(|n| n.as_str());
                let template = item.get("template").and_then(|t| t.as_str());
                match (name, template) {
                    (Some("default"), Some(t)) => return Ok(t.to_string()),
                    (Some(n), Some(_)) => names.push(n.to_string()),
                    _ => return Err(Error::file(
                        path,
                        "`chat_template`: a list entry must be {\"name\": ..., \"template\": ...}",
                    )),
                }
            }
            Err(Error::file(
                path,
                format!(
                    "`chat_template` holds several templates but none named `default` (found: {})",
                    names.join(", ")
                ),
            ))
        }
        other => Err(Error::file(
            path,
            format!("`chat_template` must be a string or a list of named templates, found {other}"),
        )),
    }
}

/// `{% generation %}` ... `{% endgeneration %}` (`transformers`' assistant-mask extension)
/// become `{% if true %}` ... `{% endif %}`, keeping their whitespace control.
fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match parse_generation_tag(tag) {
            Some((len, open, pre, post)) => {
                let body = if open { " if true " } else { " endif " };
                out.push_str("{%");
                out.push_str(pre);
                out.push_str(body);
                out.push_str(post);
                out.push_str("%}");
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A `{%[-+] (end)generation [-+]%}` tag at the start of `tag`: its length, whether it
/// opens, and its whitespace-control marks.
fn parse_generation_tag(tag: &str) -> Option<(usize, bool, &str, &str)> {
    let mut i = 2;
    let bytes = tag.as_bytes();
    let pre = match bytes.get(i) {
        Some(b'-') | Some(b'+') => {
            i += 1;
            &tag[i - 1..i]
        }
        _ => "",
    };
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    let word_start = i;
    while bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        i += 1;
    }
    let open = match &tag[word_start..i] {
        "generation" => true,
        "endgeneration" => false,
        _ => return None,
    };
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    let post = match bytes.get(i) {
        Some(b'-') | Some(b'+') => {
            i += 1;
            &tag[i - 1..i]
        }
        _ => "",
    };
    tag[i..]
        .starts_with("%}")
        .then_some((i + 2, open, pre, post))
}

/// `raise_exception(message)`: stops rendering with the template's message.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

/// `strftime_now(format)`: the current date and time (UTC) in a `strftime` format
/// (`%d %b %Y` and the other common directives).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, secs)
}

/// Formats the UTC time `secs` seconds after the Unix epoch.
pub(crate) fn strftime(format: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (h, mi, s) = (tod / 3600, tod % 3600 / 60, tod % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_march = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_march + 2) / 153;
    let d = doy_march - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('d') => write!(out, "{d:02}"),
            Some('e') => write!(out, "{d:2}"),
            Some('m') => write!(out, "{m:02}"),
            Some('Y') => write!(out, "{y}"),
            Some('y') => write!(out, "{:02}", y.rem_euclid(100)),
            Some('b') => write!(out, "{}", &month[..3]),
            Some('B') => write!(out, "{month}"),
            Some('a') => write!(out, "{}", &DAYS[weekday][..3]),
            Some('A') => write!(out, "{}", DAYS[weekday]),
            Some('H') => write!(out, "{h:02}"),
            Some('I') => write!(out, "{:02}", (h + 11) % 12 + 1),
            Some('p') => write!(out, "{}", if h < 12 { "AM" } else { "PM" }),
            Some('M') => write!(out, "{mi:02}"),
            Some('S') => write!(out, "{s:02}"),
            Some('j') => write!(out, "{yday:03}"),
            Some('F') => write!(out, "{y}-{m:02}-{d:02}"),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// Prints values as Python's `str()` does: `True`, `None`, `['a', 1]`, `{'k': 1.0}`.
fn python_formatter(
    out: &mut minijinja::Output,
    _state: &mut State,
    value: &Value,
) -> std::result::Result<(), minijinja::Error> {
    let text = match value.kind() {
        ValueKind::Undefined => return Ok(()),
        ValueKind::String => {
            return out
                .write_str(value.as_str().unwrap_or_default())
                .map_err(fmt_err)
        }
        _ => python_str(value)?,
    };
    out.write_str(&text).map_err(fmt_err)
}

fn fmt_err(_: std::fmt::Error) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::WriteFailure, "cannot write the rendered text")
}

/// Python's `str(value)`.
fn python_str(value: &Value) -> std::result::Result<String, minijinja::Error> {
    Ok(match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        _ => python_repr(value)?,
    })
}

/// Python's `repr(value)` for the values templates handle.
fn python_repr(value: &Value) -> std::result::Result<String, minijinja::Error> {
    Ok(match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.into(),
        ValueKind::Number if !value.is_integer() => match f64::try_from(value.clone()) {
            Ok(f) => python_float(f),
            Err(_) => value.to_string(),
        },
        ValueKind::String => python_string_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<String> = value
                .try_iter()?
                .map(|v| python_repr(&v))
                .collect::<std::result::Result<_, _>>()?;
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let mut items = Vec::new();
            for k in value.try_iter()? {
                let v = value.get_item(&k)?;
                items.push(format!("{}: {}", python_repr(&k)?, python_repr(&v)?));
            }
            format!("{{{}}}", items.join(", "))
        }
        _ => value.to_string(),
    })
}

/// Python's `repr(str)`: single quotes unless the text holds one and no double quote.
fn python_string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr(float)`: the shortest round-trip digits, `1.0` for integral values,
/// exponent notation below 1e-4 and from 1e16 (`1e+16`, `2.5e-05`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{f:e}");
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", e.abs())
    }
}

/// Jinja2's `iterable` test: `none` is not iterable there (minijinja iterates it as empty),
/// so `tools is iterable and tools | length > 0` (Qwen3-Coder's templates) is false for the
/// `tools=None` that `transformers` passes when a conversation has no tools, instead of
/// taking the length of `none`.
fn is_iterable(v: &Value) -> bool {
    !v.is_none() && v.try_iter().is_ok()
}

/// `transformers`' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)` (Jinja's own escapes HTML characters; this one does
/// not).
fn tojson(
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        Some(v) => Some(v),
        None => indent,
    };
    let indent: Option<String> = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) if v.is_integer() => Some(" ".repeat(v.as_i64().unwrap_or(0).max(0) as usize)),
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().into()),
        Some(v) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: indent must be a number or a string, found {v}"),
            ))
        }
    };
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let (item_sep, key_sep) = match kwargs.get::<Option<Value>>("separators")? {
        Some(seps) if !seps.is_none() => {
            let parts: Vec<Value> = seps.try_iter()?.collect();
            match (
                parts.first().and_then(|v| v.as_str()),
                parts.get(1).and_then(|v| v.as_str()),
            ) {
                (Some(a), Some(b)) if parts.len() == 2 => (a.to_string(), b.to_string()),
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    kwargs.assert_all_used()?;
    let opts = JsonOptions {
        indent,
        item_sep,
        key_sep,
        ensure_ascii,
        sort_keys,
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from(out))
}

struct JsonOptions {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn write_json(
    out: &mut String,
    value: &Value,
    o: &JsonOptions,
    level: usize,
) -> std::result::Result<(), minijinja::Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = &o.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    };
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => {
            let f = f64::try_from(value.clone())?;
            out.push_str(&if f.is_nan() {
                "NaN".to_string()
            } else if f.is_infinite() {
                if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
            } else {
                python_float(f)
            });
        }
        ValueKind::String => json_string(out, value.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, level + 1);
                write_json(out, item, o, level + 1)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                keys.sort_by_key(|k| python_str(k).unwrap_or_default());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, level + 1);
                let key = match k.kind() {
                    ValueKind::String => k.as_str().unwrap_or_default().to_string(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => if k.is_true() { "true" } else { "false" }.into(),
                    _ => python_str(k)?,
                };
                json_string(out, &key, o.ensure_ascii);
                out.push_str(&o.key_sep);
                write_json(out, &value.get_item(k)?, o, level + 1)?;
            }
            newline(out, level);
            out.push('}');
        }
        other => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {other} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// A JSON string as Python's `json.dumps` writes it.
fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_plain_blocks() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation %}b{% endgeneration -%}c{% if x %}"),
            "a{%- if true %}b{% endif -%}c{% if x %}"
        );
        assert_eq!(
            rewrite_generation_tags("{{ generation }}"),
            "{{ generation }}"
        );
    }

    #[test]
    fn strftime_matches_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(
            strftime("%d %b %Y %H:%M:%S %A %j %%", t),
            "29 Feb 2024 13:05:09 Thursday 060 %"
        );
        assert_eq!(strftime("%F %a %B %y", 0), "1970-01-01 Thu January 70");
    }

    #[test]
    fn floats_print_like_python() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.25, "0.25"),
            (21.5, "21.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (2.5e-5, "2.5e-05"),
            (0.0001, "0.0001"),
            (-3.0, "-3.0"),
        ] {
            assert_eq!(python_float(f), s);
        }
    }
}
