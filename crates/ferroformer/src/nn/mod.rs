//! Building blocks shared by every architecture and model family.

pub mod attention;
pub mod dropout;
pub mod feed_forward;
pub(crate) mod kernels;
pub mod layer;
pub mod linear;
pub mod loss;
pub mod mask;
pub mod norm;
pub mod ops;
pub mod positional;
pub mod quantized;

pub use attention::{
    AttentionConfig, AttentionContext, AttentionNames, AttentionOutput, KvCache,
    MultiHeadAttention, QkvNames,
};
pub use feed_forward::{Activation, FeedForward, FeedForwardConfig, FeedForwardNames};
pub use layer::{LayerCache, LayerConfig, LayerContext, LayerNames, LayerOutput, TransformerLayer};
pub use linear::{Linear, ParamNames, WeightMatrix};
pub use norm::{Norm, NormConfig, NormKind};
pub use ops::{Arithmetic, Mode, Pass};
pub use positional::{
    LearnedPositionalEmbedding, RelativePositionBias, RopeLayout, RopeScaling, RopeTables,
    RotaryEmbedding, SinusoidalPositionalEncoding,
};
pub use quantized::QuantizedMatrix;
