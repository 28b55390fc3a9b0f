//! `ferroformer serve` over HTTP: the built binary is started on a free loopback port with
//! the tiny fixture models (tests/fixtures/serve-llama: a random Llama with a character-level
//! tokenizer and a ChatML template; tests/fixtures/encoders/bert-base for embeddings) and
//! driven with a plain HTTP client.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Starts the server with the chat model `llama` and the encoder `bert`, plus `extra`
    /// flags; waits until it listens.
    fn start(extra: &[&str]) -> Self {
        let llama = fixtures().join("serve-llama");
        let bert = fixtures().join("encoders/bert-base");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferroformer"))
            .args(["serve", "--port", "0", "--model"])
            .arg(&llama)
            .args(["--alias", "llama", "--model"])
            .arg(&bert)
            .args(["--alias", "bert"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.strip_prefix("serving on ") {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server says where it listens");
        Self { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Status, body, Retry-After.
    fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, String, Option<String>) {
        let mut req = ureq::post(&self.url(path)).set("Content-Type", "application/json");
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        answer(req.send_string(body))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, b, _) = self.post_raw(path, &body.to_string(), None);
        (
            s,
            serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: {e}: {b}")),
        )
    }

    fn ok(&self, path: &str, body: &Value) -> Value {
        let (s, v) = self.post(path, body);
        assert_eq!(s, 200, "{path}: {v}");
        v
    }

    fn get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut req = ureq::get(&self.url(path));
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let (s, b, _) = answer(req.call());
        (s, b)
    }

    /// The `data:` payloads of a streamed answer, `[DONE]` included.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let r = ureq::post(&self.url(path))
            .send_string(&body.to_string())
            .expect("stream starts");
        assert_eq!(r.header("Content-Type"), Some("text/event-stream"));
        BufReader::new(r.into_reader())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("data: ").map(String::from))
            .collect()
    }

    /// A metric's value.
    fn metric(&self, name: &str, key: Option<&str>) -> f64 {
        let (s, text) = self.get("/metrics", key);
        assert_eq!(s, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, String, Option<String>) {
    match r {
        Ok(r) => {
            let s = r.status();
            let ra = r.header("Retry-After").map(String::from);
            (s, r.into_string().unwrap_or_default(), ra)
        }
        Err(ureq::Error::Status(s, r)) => {
            let ra = r.header("Retry-After").map(String::from);
            (s, r.into_string().unwrap_or_default(), ra)
        }
        Err(e) => panic!("transport error: {e}"),
    }
}

fn chat(content: &str, extra: Value) -> Value {
    let mut b = json!({"model": "llama", "messages": [{"role": "user", "content": content}]});
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

/// The error object of an error answer, checked for OpenAI's shape.
fn error_of(v: &Value) -> &Value {
    let e = &v["error"];
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "no `{k}` in {v}");
    }
    assert!(!e["message"].as_str().unwrap_or("").is_empty(), "{v}");
    e
}

#[test]
fn chat_completion_whole_and_streamed() {
    let s = Server::start(&[]);
    let v = s.ok(
        "/v1/chat/completions",
        &chat("hi there", json!({"max_tokens": 12, "temperature": 0})),
    );
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "llama");
    let c = &v["choices"][0];
    assert_eq!(c["message"]["role"], "assistant");
    // "<|im_start|>" "user\n" "hi there" "<|im_end|>" "\n" "<|im_start|>" "assistant\n":
    // 1 + 5 + 8 + 1 + 1 + 1 + 10 tokens with the character-level tokenizer.
    assert_eq!(v["usage"]["prompt_tokens"], 27);
    let n = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(v["usage"]["total_tokens"].as_u64().unwrap(), 27 + n, "{v}");
    let finish = c["finish_reason"].as_str().unwrap();
    assert!(
        (finish == "length" && n == 12) || (finish == "stop" && n <= 12),
        "{v}"
    );
    let text = c["message"]["content"].as_str().unwrap().to_string();

    let chunks = s.stream(
        "/v1/chat/completions",
        &chat(
            "hi there",
            json!({"max_tokens": 12, "temperature": 0, "stream": true,
                   "stream_options": {"include_usage": true}}),
        ),
    );
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"));
    let parsed: Vec<Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = parsed
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed, text,
        "greedy: the stream says what the whole answer says"
    );
    let finishes: Vec<&Value> = parsed
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![&json!(finish)]);
    let usage = &parsed.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"].as_u64(), Some(n));
    assert_eq!(parsed.last().unwrap()["choices"], json!([]));
}

#[test]
fn json_object_output() {
    // tests/fixtures/serve-json-llama: the same random weights with a vocabulary that holds
    // the JSON punctuation; left alone it writes no JSON.
    let json_llama = fixtures().join("serve-json-llama");
    let s = Server::start(&["--model", json_llama.to_str().unwrap(), "--alias", "jl"]);
    let body = |extra: Value| {
        let mut b = json!({"model": "jl",
                           "messages": [{"role": "user", "content": "a json object please"}],
                           "max_tokens": 40});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let content = |v: &Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let is_object = |t: &str| matches!(serde_json::from_str::<Value>(t), Ok(Value::Object(_)));
    let free = s.ok("/v1/chat/completions", &body(json!({"temperature": 0})));
    assert!(!is_object(&content(&free)), "{free}");
    let fmt = json!({"type": "json_object"});
    let v = s.ok(
        "/v1/chat/completions",
        &body(json!({"temperature": 0, "response_format": fmt})),
    );
    assert!(is_object(&content(&v)), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    // Sampled and streamed, several choices, a stop string that must not cut the object.
    let chunks = s.stream(
        "/v1/chat/completions",
        &body(
            json!({"temperature": 1.2, "seed": 3, "n": 3, "stream": true, "stop": [":"],
                     "response_format": fmt}),
        ),
    );
    let mut texts = vec![String::new(); 3];
    for c in &chunks[..chunks.len() - 1] {
        let c: Value = serde_json::from_str(c).unwrap();
        for ch in c["choices"].as_array().unwrap() {
            if let Some(t) = ch["delta"]["content"].as_str() {
                texts[ch["index"].as_u64().unwrap() as usize].push_str(t);
            }
        }
    }
    for t in &texts {
        assert!(is_object(t), "{t:?}");
    }
    // `text` is accepted; `json_schema` is refused by name.
    s.ok(
        "/v1/chat/completions",
        &body(json!({"max_tokens": 2, "response_format": {"type": "text"}})),
    );
    let (st, e) = s.post(
        "/v1/chat/completions",
        &body(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})),
    );
    assert_eq!(st, 400, "{e}");
    let e = error_of(&e);
    assert_eq!(e["param"], "response_format");
    assert!(
        e["message"].as_str().unwrap().contains("`json_schema`"),
        "{e}"
    );
}

#[test]
fn sampling_options_logprobs_n_and_stop() {
    let s = Server::start(&[]);
    let body = |seed: u64| {
        chat(
            "tell me",
            json!({"max_tokens": 16, "temperature": 1.3, "top_p": 0.9, "seed": seed, "n": 3,
                   "presence_penalty": 0.5, "frequency_penalty": 0.5,
                   "logprobs": true, "top_logprobs": 3}),
        )
    };
    let a = s.ok("/v1/chat/completions", &body(7));
    let b = s.ok("/v1/chat/completions", &body(7));
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message"]["content"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts(&a).len(), 3);
    assert_eq!(texts(&a), texts(&b), "same seed, same samples");
    for c in a["choices"].as_array().unwrap() {
        let lp = c["logprobs"]["content"].as_array().unwrap();
        assert!(!lp.is_empty());
        for t in lp {
            let top = t["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 3);
            // Alternatives best first, all log-probabilities <= 0.
            let l: Vec<f64> = top.iter().map(|x| x["logprob"].as_f64().unwrap()).collect();
            assert!(l.windows(2).all(|w| w[0] >= w[1]) && l[0] <= 0.0, "{t}");
        }
    }
    // logit_bias: +100 on one token makes greedy pick it every time.
    let v = s.ok(
        "/v1/chat/completions",
        &chat(
            "hi",
            json!({"max_tokens": 5, "temperature": 0, "logit_bias": {"31": 100}}),
        ),
    );
    // Token 31 is "z" in the fixture's vocabulary.
    assert_eq!(v["choices"][0]["message"]["content"], "zzzzz");
    // A stop string cuts the text before it and ends with finish_reason stop.
    let v = s.ok(
        "/v1/chat/completions",
        &chat(
            "hi",
            json!({"max_tokens": 8, "temperature": 0, "logit_bias": {"31": 100}, "stop": "zzz"}),
        ),
    );
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn completions_prompts_echo_and_generate_parity() {
    let s = Server::start(&[]);
    let v = s.ok(
        "/v1/completions",
        &json!({"model": "llama", "prompt": ["the cat", "a dog"], "max_tokens": 6,
                "temperature": 0, "echo": true, "n": 2}),
    );
    assert_eq!(v["object"], "text_completion");
    let ch = v["choices"].as_array().unwrap();
    assert_eq!(ch.len(), 4);
    assert!(ch[0]["text"].as_str().unwrap().starts_with("the cat"));
    assert!(ch[2]["text"].as_str().unwrap().starts_with("a dog"));
    assert_eq!(ch[0]["text"], ch[1]["text"], "greedy: n copies agree");
    assert_eq!(v["usage"]["prompt_tokens"], 7 + 5);
    // Token-id prompts, and the same greedy text `ferroformer generate` writes.
    let ids = s.ok("/tokenize", &json!({"prompt": "the cat"}))["tokens"].clone();
    let v2 = s.ok(
        "/v1/completions",
        &json!({"prompt": ids, "max_tokens": 6, "temperature": 0, "logprobs": 0}),
    );
    let text = v2["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(
        format!("the cat{text}"),
        ch[0]["text"].as_str().unwrap(),
        "token ids and text give the same answer"
    );
    // The tokens `ferroformer generate` writes (it keeps special tokens in its text).
    let tokens: String = v2["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(["generate", "--model"])
        .arg(fixtures().join("serve-llama"))
        .args(["--max-new-tokens", "6", "--greedy", "the cat"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = String::from_utf8_lossy(&out.stdout);
    assert_eq!(cli.trim_end_matches('\n'), format!("the cat{tokens}"));
    // Streamed completions.
    let chunks = s.stream(
        "/v1/completions",
        &json!({"prompt": "the cat", "max_tokens": 6, "temperature": 0, "stream": true}),
    );
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str::<Value>(c).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(String::from))
        .collect();
    assert_eq!(streamed, text);
    // `suffix` is refused clearly.
    let (st, e) = s.post("/v1/completions", &json!({"prompt": "a", "suffix": "b"}));
    assert_eq!(st, 400);
    assert_eq!(error_of(&e)["param"], "suffix");
}

#[test]
fn batched_requests_get_the_tokens_they_get_alone() {
    let s = Server::start(&["--max-concurrent-sequences", "8"]);
    let prompts: Vec<String> = (0..8)
        .map(|i| "abcdefghijklmnopqrstuvwxyz"[..3 + 2 * i].to_string())
        .collect();
    let body = |p: &str, n: usize| json!({"prompt": p, "max_tokens": 10 + 3 * n, "temperature": 0, "logprobs": 1});
    let alone: Vec<Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| s.ok("/v1/completions", &body(p, i))["choices"][0].clone())
        .collect();
    let steps_before = s.metric("ferroformer_decode_steps_total", None);
    let rows_before = s.metric("ferroformer_decode_step_rows_total", None);
    let together: Vec<Value> = std::thread::scope(|sc| {
        let handles: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s = &s;
                let b = body(p, i);
                sc.spawn(move || s.ok("/v1/completions", &b)["choices"][0].clone())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a["text"], t["text"], "prompt {i}");
        assert_eq!(
            a["logprobs"]["tokens"], t["logprobs"]["tokens"],
            "prompt {i}"
        );
    }
    // They did share steps: more rows than steps.
    let steps = s.metric("ferroformer_decode_steps_total", None) - steps_before;
    let rows = s.metric("ferroformer_decode_step_rows_total", None) - rows_before;
    assert!(
        rows > steps,
        "rows {rows}, steps {steps}: nothing was batched"
    );
}

#[test]
fn embeddings_match_transformers_mean_pooling() {
    let s = Server::start(&[]);
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("pipelines/feature-extraction.json")).unwrap(),
    )
    .unwrap();
    let case = &reference["cases"][0];
    assert_eq!(case["model"], "bert-base");
    let text = case["inputs"][0].as_str().unwrap();
    // transformers' token features of the text, averaged over its tokens.
    let tokens = case["expected"][0][0].as_array().unwrap();
    let dim = tokens[0].as_array().unwrap().len();
    let mean: Vec<f64> = (0..dim)
        .map(|d| tokens.iter().map(|t| t[d].as_f64().unwrap()).sum::<f64>() / tokens.len() as f64)
        .collect();
    let v = s.ok(
        "/v1/embeddings",
        &json!({"model": "bert", "input": [text, "another one"]}),
    );
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let got: Vec<f64> = v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), dim);
    for (g, w) in got.iter().zip(&mean) {
        assert!((g - w).abs() < 1e-4, "{g} vs {w}");
    }
    // The usage counts the tokens transformers ran, [CLS] and [SEP] included.
    let one = s.ok("/v1/embeddings", &json!({"model": "bert", "input": text}));
    assert_eq!(
        one["usage"]["prompt_tokens"].as_u64(),
        Some(tokens.len() as u64)
    );
    // base64: the same floats, little-endian f32.
    let b = s.ok(
        "/v1/embeddings",
        &json!({"model": "bert", "input": text, "encoding_format": "base64"}),
    );
    let bytes = base64_decode(b["data"][0]["embedding"].as_str().unwrap());
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats.len(), dim);
    for (f, g) in floats.iter().zip(&got) {
        assert!((*f as f64 - g).abs() < 1e-6);
    }
    let (st, e) = s.post(
        "/v1/embeddings",
        &json!({"model": "bert", "input": "x", "dimensions": 8}),
    );
    assert_eq!(st, 400);
    assert_eq!(error_of(&e)["param"], "dimensions");
    let (st, _) = s.post(
        "/v1/embeddings",
        &json!({"model": "bert", "input": "x", "encoding_format": "hex"}),
    );
    assert_eq!(st, 400);
}

fn base64_decode(s: &str) -> Vec<u8> {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = table.iter().position(|&t| t == c).expect("base64 digit") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn models_tokenize_detokenize_health_pipeline() {
    let s = Server::start(&[]);
    let (st, body) = s.get("/v1/models", None);
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["llama", "bert"]);
    assert_eq!(v["data"][0]["max_model_len"], 128);
    let t = s.ok("/tokenize", &json!({"model": "llama", "prompt": "hi!"}));
    // h, i, ! in the fixture's vocabulary.
    assert_eq!(t["tokens"], json!([13, 14, 45]));
    let d = s.ok(
        "/detokenize",
        &json!({"model": "llama", "tokens": [2, 13, 14, 3]}),
    );
    assert_eq!(d["prompt"], "<|im_start|>hi<|im_end|>");
    assert_eq!(s.get("/health", None).0, 200);
    // The pipeline endpoint answers what `ferroformer pipeline --json` prints.
    let p = s.ok(
        "/pipeline/feature-extraction",
        &json!({"model": "bert", "inputs": ["hello world", "bye"], "parameters": {"pooling": "mean", "normalize": true}}),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(["pipeline", "feature-extraction", "--model"])
        .arg(fixtures().join("encoders/bert-base"))
        .args([
            "--pooling",
            "mean",
            "--normalize",
            "--json",
            "hello world",
            "bye",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p, cli);
    let (st, e) = s.post("/pipeline/no-such-task", &json!({"inputs": "x"}));
    assert_eq!(st, 404, "{e}");
    error_of(&e);
}

#[test]
fn pipeline_text_generation_runs_in_the_scheduler_and_answers_as_the_cli() {
    let s = Server::start(&[]);
    let steps_before = s.metric("ferroformer_decode_steps_total", None);
    let p = s.ok(
        "/pipeline/text-generation",
        &json!({"model": "llama", "inputs": ["hello there", "a b c"],
                "parameters": {"max_new_tokens": 10}}),
    );
    // The scheduler decoded them (the pipeline alone counts no steps).
    assert!(s.metric("ferroformer_decode_steps_total", None) > steps_before);
    let out = Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(["pipeline", "text-generation", "--model"])
        .arg(fixtures().join("serve-llama"))
        .args(["--max-new-tokens", "10", "--json", "hello there", "a b c"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p, cli);
    let cont = s.ok(
        "/pipeline/text-generation",
        &json!({"model": "llama", "inputs": "hello there",
                "parameters": {"max_new_tokens": 10, "return_full_text": false}}),
    );
    let full = cli[0][0]["generated_text"].as_str().unwrap();
    assert_eq!(
        format!(
            "hello there{}",
            cont[0][0]["generated_text"].as_str().unwrap()
        ),
        full
    );
    // Beam search is not the scheduler's: the pipeline runs it, as before.
    let beams = s.ok(
        "/pipeline/text-generation",
        &json!({"model": "llama", "inputs": "hello",
                "parameters": {"max_new_tokens": 4, "num_beams": 2}}),
    );
    assert!(beams[0][0]["generated_text"]
        .as_str()
        .unwrap()
        .starts_with("hello"));
}

#[test]
fn every_error_status() {
    let s = Server::start(&["--max-tokens-cap", "50", "--payload-limit", "2000"]);
    let check = |status: u16, path: &str, body: &str, param: Option<&str>| {
        let (st, b, _) = s.post_raw(path, body, None);
        assert_eq!(st, status, "{path} {body}: {b}");
        let v: Value = serde_json::from_str(&b).unwrap_or_else(|_| panic!("not JSON: {b}"));
        let e = error_of(&v);
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{b}");
        }
    };
    let chat_path = "/v1/chat/completions";
    check(400, chat_path, "{not json", None);
    check(400, chat_path, "[1, 2]", None);
    check(400, chat_path, r#"{"messages": "hi"}"#, Some("messages"));
    check(
        400,
        chat_path,
        r#"{"messages": [{"content": "x"}]}"#,
        Some("messages[0].role"),
    );
    let m = r#""messages": [{"role": "user", "content": "x"}]"#;
    check(
        400,
        chat_path,
        &format!(r#"{{{m}, "temperature": "hot"}}"#),
        Some("temperature"),
    );
    check(
        400,
        chat_path,
        &format!(r#"{{{m}, "temperature": 3}}"#),
        Some("temperature"),
    );
    check(
        400,
        chat_path,
        &format!(r#"{{{m}, "max_tokens": 51}}"#),
        Some("max_tokens"),
    );
    check(400, chat_path, &format!(r#"{{{m}, "n": 0}}"#), Some("n"));
    check(
        400,
        chat_path,
        &format!(r#"{{{m}, "logit_bias": {{"x": 1}}}}"#),
        Some("logit_bias"),
    );
    check(
        400,
        chat_path,
        &format!(r#"{{{m}, "response_format": {{"type": "yaml"}}}}"#),
        Some("response_format"),
    );
    // A prompt longer than the 128-token context.
    let long = "a".repeat(200);
    let (st, b, _) = s.post_raw(
        "/v1/completions",
        &json!({"prompt": long}).to_string(),
        None,
    );
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("context_length_exceeded"), "{b}");
    let (st, b, _) = s.post_raw(
        "/v1/completions",
        &json!({"prompt": "abc", "max_tokens": 50, "model": "llama"}).to_string(),
        None,
    );
    assert_eq!(st, 200, "{b}");
    check(
        404,
        chat_path,
        &format!(r#"{{{m}, "model": "gpt-4"}}"#),
        Some("model"),
    );
    check(404, "/v1/nothing", "{}", None);
    check(
        413,
        "/v1/completions",
        &json!({"prompt": "a".repeat(3000)}).to_string(),
        None,
    );
    check(
        400,
        "/v1/embeddings",
        r#"{"model": "llama", "input": "x"}"#,
        Some("model"),
    );
    check(
        400,
        "/v1/chat/completions",
        r#"{"model": "bert", "messages": []}"#,
        Some("model"),
    );
    // Never a 500 for bad input.
    let (_, metrics) = s.get("/metrics", None);
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
}

#[test]
fn api_key_guards_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "s3cret\n").unwrap();
    let s = Server::start(&["--api-key-file", key_file.to_str().unwrap()]);
    let body = json!({"prompt": "ab", "max_tokens": 2}).to_string();
    for key in [None, Some("wrong"), Some("s3cre"), Some("s3cret!")] {
        let (st, b, _) = s.post_raw("/v1/completions", &body, key);
        assert_eq!(st, 401, "{key:?}: {b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(error_of(&v)["type"], "authentication_error");
    }
    assert_eq!(s.get("/v1/models", None).0, 401);
    assert_eq!(s.get("/metrics", None).0, 401);
    assert_eq!(s.get("/health", None).0, 200);
    let (st, b, _) = s.post_raw("/v1/completions", &body, Some("s3cret"));
    assert_eq!(st, 200, "{b}");
    assert_eq!(s.get("/v1/models", Some("s3cret")).0, 200);
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let s = Server::start(&[
        "--max-concurrent-sequences",
        "1",
        "--max-queue",
        "1",
        "--step-delay-ms",
        "20",
    ]);
    let body = json!({"prompt": "ab", "max_tokens": 40, "temperature": 0}).to_string();
    let results: Vec<(u16, String, Option<String>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..5)
            .map(|_| sc.spawn(|| s.post_raw("/v1/completions", &body, None)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let full: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(!full.is_empty(), "{results:?}");
    for (_, b, retry) in &full {
        assert_eq!(retry.as_deref(), Some("1"));
        let v: Value = serde_json::from_str(b).unwrap();
        assert_eq!(error_of(&v)["code"], "queue_full");
    }
    assert!(results.iter().any(|r| r.0 == 200), "{results:?}");
    assert!(
        results.iter().all(|r| r.0 == 200 || r.0 == 429),
        "{results:?}"
    );
}

#[test]
fn a_client_that_leaves_cancels_its_sequence() {
    let s = Server::start(&["--step-delay-ms", "30"]);
    let body = json!({"prompt": "ab", "max_tokens": 100, "temperature": 0, "stream": true});
    {
        let r = ureq::post(&s.url("/v1/completions"))
            .send_string(&body.to_string())
            .unwrap();
        let mut reader = BufReader::new(r.into_reader());
        let mut line = String::new();
        // Two chunks arrive, then the client hangs up.
        let mut chunks = 0;
        while chunks < 2 {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.starts_with("data: ") {
                chunks += 1;
            }
        }
        drop(reader);
    }
    let t0 = Instant::now();
    loop {
        let cancelled = s.metric("ferroformer_sequences_cancelled_total", None);
        let running = s.metric("ferroformer_running_sequences", None);
        if cancelled >= 1.0 && running == 0.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "not cancelled: {cancelled} cancelled, {running} running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Far fewer than the 100 tokens asked for, and the cache is freed.
    assert!(s.metric("ferroformer_generated_tokens_total", None) < 60.0);
    assert_eq!(s.metric("ferroformer_kv_cache_bytes", None), 0.0);
    assert_eq!(s.metric("ferroformer_sequences_finished_total", None), 0.0);
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_0() {
    let mut s = Server::start(&["--step-delay-ms", "20"]);
    let url = s.url("/v1/completions");
    let pid = s.child.id();
    let h = std::thread::spawn(move || {
        let r = ureq::post(&url)
            .send_string(
                &json!({"prompt": "ab", "max_tokens": 30, "temperature": 0,
                        "logit_bias": {"31": 100}})
                .to_string(),
            )
            .unwrap();
        r.into_string().unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let body: Value = serde_json::from_str(&h.join().unwrap()).unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 30, "{body}");
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // No new connections after the signal.
    let mut buf = String::new();
    let refused = std::net::TcpStream::connect(s.base.trim_start_matches("http://"))
        .map(|mut c| c.read_to_string(&mut buf).is_ok() && buf.is_empty());
    assert!(refused.is_err() || refused.unwrap_or(false));
}
