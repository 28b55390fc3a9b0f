//! Tool calls parsed back out of a generated answer, for the formats chat templates
//! define: Hermes / Qwen (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, any
//! number of them) and Llama 3.1 (the whole answer one JSON object `{"name": ...,
//! "parameters": {...}}`, optionally after `<|python_tag|>`). The answer becomes the
//! OpenAI message's `tool_calls` (arguments as a JSON string), and the text before the
//! first call its `content`.

use serde_json::{json, Value};

/// `(content, tool_calls)` when the text holds tool calls, else `None`.
pub fn parse(text: &str) -> Option<(Option<String>, Vec<Value>)> {
    hermes(text).or_else(|| llama3(text))
}

fn call(name: &str, arguments: &Value) -> Value {
    let arguments = match arguments {
        Value::String(s) => s.clone(),
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    };
    json!({
        "id": format!("call_{:016x}", rand::random::<u64>()),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    })
}

fn from_object(v: &Value) -> Option<Value> {
    let name = v.get("name")?.as_str()?;
    let args = v
        .get("arguments")
        .or_else(|| v.get("parameters"))
        .unwrap_or(&Value::Null);
    Some(call(name, args))
}

fn hermes(text: &str) -> Option<(Option<String>, Vec<Value>)> {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let first = text.find(OPEN)?;
    let mut calls = Vec::new();
    let mut rest = &text[first..];
    while let Some(start) = rest.find(OPEN) {
        let body = &rest[start + OPEN.len()..];
        // The answer may end (length, or a stop token) before the closing tag.
        let (inner, next) = match body.find(CLOSE) {
            Some(end) => (&body[..end], &body[end + CLOSE.len()..]),
            None => (body, ""),
        };
        let v: Value = serde_json::from_str(inner.trim()).ok()?;
        calls.push(from_object(&v)?);
        rest = next;
    }
    let content = text[..first].trim();
    Some(((!content.is_empty()).then(|| content.to_string()), calls))
}

fn llama3(text: &str) -> Option<(Option<String>, Vec<Value>)> {
    let t = text.trim();
    let t = t.strip_prefix("<|python_tag|>").unwrap_or(t).trim();
    if !t.starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(t).ok()?;
    if v.get("parameters").is_none() && v.get("arguments").is_none() {
        return None;
    }
    Some((None, vec![from_object(&v)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Value) -> Value {
        serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn hermes_calls_with_content_before() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>\n<tool_call>{\"name\": \"time\", \"arguments\": {}}</tool_call>";
        let (content, calls) = parse(text).unwrap();
        assert_eq!(content.as_deref(), Some("Let me check."));
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(args(&calls[0]), json!({"city": "Paris", "unit": "c"}));
        assert_eq!(calls[1]["function"]["name"], "time");
        assert_eq!(calls[0]["type"], "function");
        // Key order of the arguments is the model's.
        assert_eq!(
            calls[0]["function"]["arguments"],
            "{\"city\":\"Paris\",\"unit\":\"c\"}"
        );
    }

    #[test]
    fn an_unclosed_last_call_still_parses() {
        let (content, calls) =
            parse("<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": 1}}").unwrap();
        assert_eq!(content, None);
        assert_eq!(args(&calls[0]), json!({"x": 1}));
    }

    #[test]
    fn llama3_json_call() {
        let (content, calls) = parse(
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
        )
        .unwrap();
        assert_eq!(content, None);
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(args(&calls[0]), json!({"city": "Oslo"}));
    }

    #[test]
    fn plain_answers_and_broken_calls_are_not_tool_calls() {
        assert!(parse("The weather is fine.").is_none());
        assert!(parse("{\"a\": 1}").is_none());
        assert!(parse("<tool_call>not json</tool_call>").is_none());
    }
}
