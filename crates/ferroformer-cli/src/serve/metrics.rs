//! Prometheus metrics: counters, gauges and histograms kept in atomics and rendered in the
//! text exposition format at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// A histogram with fixed upper bounds (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in microseconds.
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation in seconds.
    pub fn observe(&self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Relaxed);
            }
        }
        self.sum_us.fetch_add((seconds * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Relaxed));
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {n}",
            self.sum_us.load(Relaxed) as f64 / 1e6
        );
    }
}

const LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const TOKEN_GAP: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0,
];

/// Everything the server counts.
pub struct Metrics {
    /// Requests by (endpoint, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Prompt tokens of generation requests.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Sequences cancelled because their client left (or timed out).
    pub cancelled: AtomicU64,
    /// Sequences finished.
    pub finished: AtomicU64,
    /// Decoding steps (forward passes over the running batch).
    pub steps: AtomicU64,
    /// Sum over steps of the rows decoded.
    pub step_rows: AtomicU64,
    /// Requests waiting for a slot.
    pub queue_depth: AtomicU64,
    /// Sequences decoding.
    pub running: AtomicU64,
    /// Bytes of KV cache in use (padding included).
    pub kv_bytes: AtomicU64,
    /// The KV-cache budget in bytes.
    pub kv_budget: AtomicU64,
    /// Time to first token.
    pub ttft: Histogram,
    /// Time between tokens of a stream.
    pub inter_token: Histogram,
    /// Whole-request latency.
    pub e2e: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            step_rows: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            running: AtomicU64::new(0),
            kv_bytes: AtomicU64::new(0),
            kv_budget: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY),
            inter_token: Histogram::new(TOKEN_GAP),
            e2e: Histogram::new(LATENCY),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, endpoint: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((endpoint.to_string(), status)).or_insert(0) += 1;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP ferroformer_requests_total HTTP requests by endpoint and status.\n# TYPE ferroformer_requests_total counter\n");
        for ((e, s), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "ferroformer_requests_total{{endpoint=\"{e}\",status=\"{s}\"}} {n}"
            );
        }
        let counters = [
            (
                "ferroformer_prompt_tokens_total",
                "Prompt tokens of generation requests.",
                &self.prompt_tokens,
            ),
            (
                "ferroformer_generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "ferroformer_sequences_cancelled_total",
                "Sequences cancelled because the client left or timed out.",
                &self.cancelled,
            ),
            (
                "ferroformer_sequences_finished_total",
                "Sequences that ended (stop or length).",
                &self.finished,
            ),
            (
                "ferroformer_decode_steps_total",
                "Forward passes over the running batch.",
                &self.steps,
            ),
            (
                "ferroformer_decode_step_rows_total",
                "Sequences decoded, summed over steps.",
                &self.step_rows,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let gauges = [
            (
                "ferroformer_queue_depth",
                "Requests waiting for a slot.",
                &self.queue_depth,
            ),
            (
                "ferroformer_running_sequences",
                "Sequences decoding.",
                &self.running,
            ),
            (
                "ferroformer_kv_cache_bytes",
                "KV-cache bytes in use (padding included).",
                &self.kv_bytes,
            ),
            (
                "ferroformer_kv_cache_budget_bytes",
                "KV-cache budget (--kv-cache-mb).",
                &self.kv_budget,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.ttft.render(
            &mut out,
            "ferroformer_time_to_first_token_seconds",
            "From the request's arrival to its first token.",
        );
        self.inter_token.render(
            &mut out,
            "ferroformer_inter_token_latency_seconds",
            "Between consecutive tokens of a sequence.",
        );
        self.e2e.render(
            &mut out,
            "ferroformer_request_duration_seconds",
            "From a generation request's arrival to its last token.",
        );
        let _ = writeln!(
            out,
            "# HELP ferroformer_resident_memory_bytes Resident memory of the process.\n# TYPE ferroformer_resident_memory_bytes gauge\nferroformer_resident_memory_bytes {}",
            resident_bytes().unwrap_or(0)
        );
        out
    }
}

/// The process's resident memory (Linux `/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
