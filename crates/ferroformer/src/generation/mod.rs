//! Text generation from a causal language model, with the KV cache.
//!
//! - [`GenerationConfig`] + [`generate_ids`]: `transformers`' `generate` semantics for a
//!   batch of left-padded prompts: greedy search, sampling (temperature, top-k, top-p,
//!   min-p), beam search (length penalty, early stopping, several sequences per prompt),
//!   repetition penalty, no-repeat n-grams, minimum new tokens, stop strings.
//! - [`generate_stream`]: one prompt with the same options (greedy search or sampling), each
//!   new token handed to a callback as it is chosen; [`TextStreamer`] turns the tokens into
//!   text pieces (the CLI's `generate` and `chat`). [`generate_stream_cached`] keeps the KV
//!   cache in a [`PromptCache`] between calls, so a chat runs each turn's new messages only.
//! - [`BatchDecoder`]: continuous batching, sequences of different lengths decoding
//!   together one forward pass per step (the server's scheduler); [`SequenceSampler`]
//!   chooses each one's tokens with its own settings, optionally constrained to a JSON
//!   object ([`JsonConstraint`]); [`generate_with_sampler`] runs one sequence that way.
//! - [`fit_to_context`]: what happens to a prompt longer than the model's context
//!   ([`Truncation`]).
//!
//! One module serves every decoder family (they all run on
//! [`crate::arch::DecoderOnlyTransformer`]).

pub mod batch;
mod beam;
pub mod causal_lm;
pub mod config;
pub mod context;
pub mod json_constraint;
pub mod loaded;
pub mod logits;
pub mod perplexity;
pub mod search;
pub mod seq2seq;
pub mod stream;

pub use batch::{
    generate_with_sampler, BatchDecoder, ExtraSampling, SampledToken, SequenceCache,
    SequenceSampler, TokenLogprob,
};
pub use causal_lm::AutoModelForCausalLM;
pub use config::{EarlyStopping, GenerationConfig};
pub use context::{fit_to_context, ContextFit, Truncation};
pub use json_constraint::{JsonConstraint, JsonState, TokenBytes};
pub use loaded::{LanguageModel, LmTokenizer, ModelSource};
pub use logits::LogitsProcessor;
pub use perplexity::{perplexity, text_perplexities, Perplexity, TextPerplexities};
pub use search::{generate_ids, left_pad, right_pad, GenerateOutput};
pub use seq2seq::{generate_seq2seq, AutoModelForSeq2SeqLM};
pub use stream::{
    generate_stream, generate_stream_cached, PromptCache, StopReason, StreamOutput, TextStreamer,
};
