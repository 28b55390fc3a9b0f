//! Building blocks shared by every architecture and model family.

pub mod attention;
mod autograd_ops;
pub mod dropout;
pub mod feed_forward;
pub(crate) mod ggml;
pub(crate) mod kernels;
pub mod layer;
pub mod linear;
pub mod loss;
pub mod mask;
pub mod norm;
pub mod positional;
mod qmatmul;
pub mod quantized;

pub use attention::{
    AttentionConfig, AttentionContext, AttentionNames, AttentionOutput, KvCache,
    MultiHeadAttention, QkvNames,
};
pub use feed_forward::{Activation, FeedForward, FeedForwardConfig, FeedForwardNames};
pub use ggml::Arithmetic;
pub use layer::{LayerCache, LayerConfig, LayerContext, LayerNames, LayerOutput, TransformerLayer};
pub use linear::{Linear, ParamNames, WeightMatrix};
pub use norm::{Norm, NormConfig, NormKind};
pub use positional::{
    LearnedPositionalEmbedding, RopeLayout, RopeScaling, RopeTables, RotaryEmbedding,
    SinusoidalPositionalEncoding,
};
pub use quantized::QuantizedMatrix;
