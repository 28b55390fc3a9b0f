//! A causal language model of any family: the family's config plus the shared
//! [`DecoderOnlyTransformer`]. Each family only says how its weights map onto the decoder.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;

use crate::arch::{DecoderOnlyTransformer, DecoderOutput};
use crate::error::Result;
use crate::nn::LayerCache;
use crate::weights::Weights;

/// A decoder family's `config.json` and how its checkpoint maps onto the decoder.
pub trait CausalLmFamily: DeserializeOwned + Clone {
    /// Builds the decoder from weights rooted at the checkpoint root.
    fn load_decoder(&self, w: &Weights) -> Result<DecoderOnlyTransformer>;
}

/// A causal language model (`…ForCausalLM`) of family `C`.
#[derive(Debug, Clone)]
pub struct CausalLm<C> {
    config: C,
    decoder: DecoderOnlyTransformer,
}

impl<C: CausalLmFamily> CausalLm<C> {
    /// Loads from weights rooted at the checkpoint root.
    pub fn load(w: &Weights, config: &C) -> Result<Self> {
        Ok(Self {
            config: config.clone(),
            decoder: config.load_decoder(w)?,
        })
    }

    /// Loads `config.json` and the safetensors weights of a checkpoint directory.
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config: C = super::read_config(dir)?;
        let files = super::checkpoint_files(dir)?;
        let w = Weights::from_safetensors(&files, dtype, device)?;
        Self::load(&w, &config)
    }

    /// The configuration.
    pub fn config(&self) -> &C {
        &self.config
    }

    /// The decoder.
    pub fn decoder(&self) -> &DecoderOnlyTransformer {
        &self.decoder
    }

    /// Logits for `input_ids` (see [`DecoderOnlyTransformer::forward`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        caches: Option<&mut [LayerCache]>,
    ) -> Result<DecoderOutput> {
        self.decoder.forward(
            input_ids,
            attention_mask,
            caches,
            crate::nn::Pass::INFERENCE,
        )
    }
}
