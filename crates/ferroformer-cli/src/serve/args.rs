//! `ferroformer serve` flags.

use std::path::PathBuf;

use crate::device_arg::DeviceArgs;
use crate::generation_args::StreamingArgs;

/// Arguments of `ferroformer serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// A model to serve (repeat for several): a causal LM (`.gguf` file, checkpoint
    /// directory or hub id) for chat and completions, or an encoder checkpoint for
    /// embeddings. Clients name it by its alias, else by this string.
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// The name clients use for each model, in the order of --model.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Address to listen on (loopback by default; put a reverse proxy in front to expose it).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at startup).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health.
    #[arg(long, conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// Read the API key from this file (its first line).
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Sequences decoding together at most (per model).
    #[arg(long, default_value_t = 16)]
    pub max_concurrent_sequences: usize,
    /// Requests waiting for a slot at most (per model); more get 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Largest `max_tokens` a request may ask for; larger is a 400 error.
    #[arg(long, default_value_t = 4096)]
    pub max_tokens_cap: usize,
    /// Seconds a request may take in all (queue and generation); then it is cancelled.
    #[arg(long, default_value_t = 600)]
    pub request_timeout: u64,
    /// Largest request body in bytes; larger is a 413 error.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub payload_limit: usize,
    /// Allow browsers from this origin (`*` for any) to call the API (CORS).
    #[arg(long)]
    pub cors_origin: Option<String>,
    /// KV-cache budget per model in MiB: requests wait in the queue rather than exceed it.
    #[arg(long, default_value_t = 1024)]
    pub kv_cache_mb: usize,
    /// Seconds SIGTERM waits for in-flight requests before exiting.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Milliseconds to sleep after each decoding step (tests: makes generation slow enough
    /// to disconnect in the middle of it).
    #[arg(long, default_value_t = 0, hide = true)]
    pub step_delay_ms: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// The server's generation defaults (each request may override the OpenAI ones).
    #[command(flatten)]
    pub generation: StreamingArgs,
}
