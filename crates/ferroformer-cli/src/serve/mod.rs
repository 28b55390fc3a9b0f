//! `ferroformer serve`: an OpenAI-compatible HTTP server (plus Hugging Face's inference API
//! for the pipelines) with continuous batching.
//!
//! - `args.rs`: the flags; `state.rs`: the loaded models and what handlers share;
//! - `scheduler.rs`: one thread per causal LM running [`ferroformer::generation::BatchDecoder`];
//! - `openai.rs`: chat completions and completions (whole or streamed); `tools.rs`: tool
//!   calls parsed out of answers;
//! - `routes.rs`: the router, middleware (metrics, CORS, API key) and the other endpoints;
//! - `error.rs`: errors in OpenAI's shape; `metrics.rs`: Prometheus metrics.

mod args;
mod error;
mod metrics;
mod openai;
mod routes;
mod scheduler;
mod state;
mod tools;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
pub use args::ServeArgs;

/// Runs the server until SIGTERM or Ctrl-C; then stops accepting connections, lets
/// in-flight requests finish (up to --shutdown-timeout) and returns.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::default());
    let started = std::time::Instant::now();
    let state = Arc::new(state::load(args, Arc::clone(&metrics))?);
    let args = &state.args;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // The model runs on its own threads: the runtime only moves bytes.
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    let addr = format!("{}:{}", args.host, args.port);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!(
            "serving on http://{local} ({} model(s) loaded in {:.1} s, resident memory {:.0} MiB)",
            state.models.len(),
            started.elapsed().as_secs_f64(),
            metrics::resident_bytes().unwrap_or(0) as f64 / 1048576.0
        );
        for m in &state.models {
            let what = match &m.kind {
                state::ModelKind::Lm(lm) => format!(
                    "causal LM, context {} tokens, chat template: {}",
                    lm.context(),
                    if lm.template.is_ok() { "yes" } else { "none" }
                ),
                state::ModelKind::Encoder(_) => "encoder (embeddings)".to_string(),
            };
            eprintln!("  model `{}` ({}): {what}", m.name, m.source);
        }
        if state.api_key.is_some() {
            eprintln!("  API key required (Authorization: Bearer ...), /health open");
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let app = routes::router(Arc::clone(&state));
        let mut rx = stop_rx.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        let server = tokio::spawn(async move { server.await });
        shutdown_signal().await;
        eprintln!(
            "shutting down: no new connections; waiting up to {} s for requests in flight",
            shutdown_timeout.as_secs()
        );
        let _ = stop_tx.send(true);
        match tokio::time::timeout(shutdown_timeout, server).await {
            Ok(Ok(Ok(()))) => eprintln!("all requests answered; bye"),
            Ok(Ok(Err(e))) => return Err(anyhow::anyhow!("server error: {e}")),
            Ok(Err(e)) => return Err(anyhow::anyhow!("server task failed: {e}")),
            Err(_) => eprintln!("--shutdown-timeout reached; exiting with requests unfinished"),
        }
        anyhow::Ok(())
    })?;
    // The scheduler threads end when their handles (in `state`) are dropped; exiting the
    // process ends them too.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
