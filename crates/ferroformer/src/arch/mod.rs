//! Architectures assembled from the [`crate::nn`] blocks: encoder-only, decoder-only and
//! encoder-decoder transformers, and task heads.

pub mod decoder;
pub mod embeddings;
pub mod encoder;
pub mod encoder_decoder;
pub mod heads;
pub mod seq2seq;
pub mod stack;

pub use decoder::{DecoderConfig, DecoderNames, DecoderOnlyTransformer, DecoderOutput};
pub use embeddings::{EmbeddingConfig, EmbeddingNames, Embeddings, PositionalKind};
pub use encoder::{EncoderConfig, EncoderNames, TransformerEncoder};
pub use encoder_decoder::{
    EncoderDecoderConfig, EncoderDecoderNames, EncoderDecoderTransformer, RelativeAttentionConfig,
    Seq2SeqDecoderOutput,
};
pub use heads::{
    ClassificationHead, ClsPooler, LmHead, MaskedLmHead, MaskedLmHeadNames, PoolerActivation,
    SpanHead, TokenClassificationHead,
};
pub use seq2seq::{Transformer, TransformerConfig};
pub use stack::{
    LayerStack, LocalAttention, SlidingWindow, StackConfig, StackContext, StackNames, StackOutput,
};
