//! The continuous-batching scheduler: one thread per causal LM owns the decoding. Each step
//! runs one forward pass over every running sequence ([`BatchDecoder::step`]); between steps
//! finished and cancelled sequences leave (their cache freed at once) and waiting requests
//! are prefilled and join, as long as the KV-cache budget and the slot count allow.
//!
//! A request talks to the scheduler through a channel of [`Event`]s; when its receiver is
//! dropped (the client disconnected, timed out, or hit a stop string) the sequence is
//! cancelled before the next step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use ferroformer::generation::{BatchDecoder, LanguageModel, SampledToken, SequenceSampler};
use tokio::sync::mpsc;

use super::metrics::Metrics;

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence (or end-of-turn) token.
    Stop,
    /// `max_tokens`.
    Length,
}

/// What a running request hears from the scheduler.
#[derive(Debug)]
pub enum Event {
    /// A new token.
    Token(SampledToken),
    /// The sequence ended (after its last token).
    Finished(Finish),
    /// The model failed.
    Failed(String),
}

/// One sequence to generate.
pub struct Job {
    /// Prompt tokens.
    pub prompt: Vec<u32>,
    /// How its tokens are chosen.
    pub sampler: SequenceSampler,
    /// New tokens at most.
    pub max_new: usize,
    /// Tokens that end it.
    pub eos: Vec<u32>,
    /// Where its events go.
    pub events: mpsc::UnboundedSender<Event>,
    /// Set by the request when it ended the sequence itself (a stop string), so that the
    /// dropped receiver is not counted as a client that left.
    pub ended_by_request: Arc<AtomicBool>,
}

impl Job {
    fn positions(&self) -> usize {
        self.prompt.len() + self.max_new
    }
}

/// The request side of a scheduler.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: std_mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    max_queue: usize,
    /// Bytes one cached position takes.
    pub bytes_per_position: usize,
    /// The KV budget in bytes.
    pub kv_budget: usize,
}

impl SchedulerHandle {
    /// Queues `job`; an error when the queue is full or the scheduler stopped.
    pub fn submit(&self, job: Job) -> Result<(), super::error::ApiError> {
        let depth = self.metrics.queue_depth.load(Relaxed) as usize;
        if depth >= self.max_queue {
            return Err(super::error::ApiError::queue_full(depth));
        }
        self.metrics.queue_depth.fetch_add(1, Relaxed);
        self.tx.send(job).map_err(|_| {
            self.metrics.queue_depth.fetch_sub(1, Relaxed);
            super::error::ApiError::unavailable("the model's worker has stopped")
        })
    }
}

/// Limits of a scheduler.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Running sequences at most.
    pub max_running: usize,
    /// Requests waiting at most.
    pub max_queue: usize,
    /// KV-cache bytes at most.
    pub kv_budget: usize,
    /// Pause after each step (tests only).
    pub step_delay: std::time::Duration,
}

/// Starts the scheduler thread of `lm`.
pub fn start(
    lm: Arc<LanguageModel>,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> std::io::Result<SchedulerHandle> {
    let (tx, rx) = std_mpsc::channel::<Job>();
    let bytes_per_position = BatchDecoder::new(lm.decoder()).bytes_per_position();
    metrics
        .kv_budget
        .fetch_add(limits.kv_budget as u64, Relaxed);
    let m = Arc::clone(&metrics);
    std::thread::Builder::new()
        .name("ferroformer-scheduler".into())
        .spawn(move || run(&lm, rx, limits, &m))?;
    Ok(SchedulerHandle {
        tx,
        metrics,
        max_queue: limits.max_queue,
        bytes_per_position,
        kv_budget: limits.kv_budget,
    })
}

/// A running sequence.
struct Running {
    /// Its row id in the batch.
    id: u64,
    job: Job,
    ids: Vec<u32>,
    generated: usize,
    done: bool,
}

impl Running {
    /// Sends `t` and says whether the sequence ended with it.
    fn emit(&mut self, t: SampledToken, metrics: &Metrics) -> bool {
        let id = t.token;
        self.ids.push(id);
        self.generated += 1;
        metrics.generated_tokens.fetch_add(1, Relaxed);
        let _ = self.job.events.send(Event::Token(t));
        let finish = if self.job.eos.contains(&id) {
            Some(Finish::Stop)
        } else if self.generated >= self.job.max_new {
            Some(Finish::Length)
        } else {
            None
        };
        if let Some(f) = finish {
            let _ = self.job.events.send(Event::Finished(f));
            metrics.finished.fetch_add(1, Relaxed);
            self.done = true;
        }
        self.done
    }

    fn left(&self) -> bool {
        self.job.events.is_closed()
    }
}

/// How long the scheduler stays idle before it gives freed memory back to the OS.
const IDLE_BEFORE_RELEASE: std::time::Duration = std::time::Duration::from_millis(500);

/// Gives the memory freed on this thread and on the kernels' worker threads back to the OS
/// now. Called as the scheduler goes idle: the batch's KV cache and the step buffers were
/// allocated on these threads, and mimalloc returns a thread's freed pages (after the purge
/// delay `main` sets) only when that thread next calls the allocator, which idle threads do
/// not; the server would keep the peak of its last burst until the next request.
fn release_freed_memory() {
    // SAFETY: `mi_collect` only walks the calling thread's mimalloc heap and the segments
    // other threads abandoned; any thread may call it.
    rayon::broadcast(|_| unsafe { libmimalloc_sys::mi_collect(true) });
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn run(lm: &LanguageModel, rx: std_mpsc::Receiver<Job>, limits: Limits, metrics: &Metrics) {
    let mut batch = BatchDecoder::new(lm.decoder());
    let bpp = batch.bytes_per_position();
    let mut pending: VecDeque<Job> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let mut next_id = 0u64;
    let cancel = |job: &Job| {
        if !job.ended_by_request.load(Relaxed) {
            metrics.cancelled.fetch_add(1, Relaxed);
        }
    };
    loop {
        if running.is_empty() && pending.is_empty() {
            // Idle. A client's next request usually follows within milliseconds: the freed
            // memory stays for a moment (given back, every page of the next step's buffers
            // would fault and be zeroed again), and goes back to the OS once the pause
            // lasts.
            let job = match rx.recv_timeout(IDLE_BEFORE_RELEASE) {
                Ok(job) => Ok(job),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    release_freed_memory();
                    rx.recv().map_err(|_| ())
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(()),
            };
            match job {
                Ok(job) => pending.push_back(job),
                // Every handle is gone: the server is shutting down.
                Err(()) => return,
            }
        }
        while let Ok(job) = rx.try_recv() {
            pending.push_back(job);
        }
        // Finished and cancelled rows leave.
        let mut leaving = Vec::new();
        running.retain(|r| {
            let left = !r.done && r.left();
            if left {
                cancel(&r.job);
            }
            if r.done || left {
                leaving.push(r.id);
            }
            !r.done && !left
        });
        let kept = running.len();
        // The longest sequence a kept row may reach: every row is padded to it.
        let mut longest = running.iter().map(|r| r.job.positions()).max().unwrap_or(0);
        let mut joining = Vec::new();
        let mut joined = Vec::new();
        while kept + joined.len() < limits.max_running {
            let Some(front) = pending.front() else { break };
            if front.events.is_closed() {
                let Some(job) = pending.pop_front() else {
                    break;
                };
                metrics.queue_depth.fetch_sub(1, Relaxed);
                cancel(&job);
                continue;
            }
            let rows = kept + joined.len() + 1;
            let wide = longest.max(front.positions());
            // The first request always runs (the handler refused any that alone exceeds
            // the budget); later ones wait until the batch fits.
            if rows > 1 && rows * wide * bpp > limits.kv_budget {
                break;
            }
            let Some(mut job) = pending.pop_front() else {
                break;
            };
            metrics.queue_depth.fetch_sub(1, Relaxed);
            metrics
                .prompt_tokens
                .fetch_add(job.prompt.len() as u64, Relaxed);
            match batch.prefill(&job.prompt) {
                Ok((cache, mut scores)) => {
                    let t = job.sampler.choose(&job.prompt, &mut scores);
                    next_id += 1;
                    let mut r = Running {
                        id: next_id,
                        ids: job.prompt.clone(),
                        job,
                        generated: 0,
                        done: false,
                    };
                    if !r.emit(t, metrics) {
                        longest = wide;
                        joining.push((r.id, cache));
                        joined.push(r);
                    }
                }
                Err(e) => {
                    let _ = job.events.send(Event::Failed(e.to_string()));
                }
            }
        }
        if let Err(e) = batch.update(&leaving, joining) {
            fail_all(&mut running, &e.to_string());
            fail_all(&mut joined, &e.to_string());
            batch = BatchDecoder::new(lm.decoder());
            continue;
        }
        running.extend(joined);
        metrics.running.store(running.len() as u64, Relaxed);
        metrics
            .kv_bytes
            .store((batch.cached_positions() * bpp) as u64, Relaxed);
        if running.is_empty() {
            continue;
        }
        let tokens: Vec<(u64, u32)> = running
            .iter()
            .map(|r| (r.id, *r.ids.last().expect("a prompt token at least")))
            .collect();
        match batch.step(&tokens) {
            Ok(scores) => {
                metrics.steps.fetch_add(1, Relaxed);
                metrics.step_rows.fetch_add(running.len() as u64, Relaxed);
                for (r, mut s) in running.iter_mut().zip(scores) {
                    let t = r.job.sampler.choose(&r.ids, &mut s);
                    r.emit(t, metrics);
                }
                if !limits.step_delay.is_zero() {
                    std::thread::sleep(limits.step_delay);
                }
            }
            Err(e) => {
                fail_all(&mut running, &e.to_string());
                batch = BatchDecoder::new(lm.decoder());
            }
        }
    }
}

fn fail_all(running: &mut Vec<Running>, message: &str) {
    for r in running.drain(..) {
        let _ = r.job.events.send(Event::Failed(message.to_string()));
    }
}
