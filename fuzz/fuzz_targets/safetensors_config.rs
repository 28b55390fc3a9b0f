//! A checkpoint directory of arbitrary files — `config.json`, `model.safetensors` (header
//! and data), `generation_config.json`, a shard index and a shard — loaded through the Auto
//! classes. The first byte picks the loader; the rest is framed records (see
//! `ferroformer_fuzz`). Loading may fail with an error; it may not panic, abort or run out
//! of memory.
#![no_main]

use ferroformer::models::{inspect_checkpoint, PretrainedConfig};
use ferroformer::{
    AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification, AutoModelForTokenClassification, DType, Device,
    LoadOptions, Weights,
};
use libfuzzer_sys::fuzz_target;

/// The files a record can be, by id.
const FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
];

fuzz_target!(|data: &[u8]| {
    let Some((&loader, rest)) = data.split_first() else {
        return;
    };
    let dir = ferroformer_fuzz::scratch_dir();
    let d = dir.path();
    for record in ferroformer_fuzz::records(rest, FILES.len()) {
        ferroformer_fuzz::write(d, FILES[record.id], record.bytes);
    }
    let opts = LoadOptions::default();
    match loader % 8 {
        0 => ferroformer_fuzz::report("AutoModel::from_dir", &AutoModel::from_dir(d, &opts)),
        1 => ferroformer_fuzz::report(
            "AutoModelForSequenceClassification::from_dir",
            &AutoModelForSequenceClassification::from_dir(d, &opts),
        ),
        2 => ferroformer_fuzz::report(
            "AutoModelForTokenClassification::from_dir",
            &AutoModelForTokenClassification::from_dir(d, &opts),
        ),
        3 => ferroformer_fuzz::report(
            "AutoModelForQuestionAnswering::from_dir",
            &AutoModelForQuestionAnswering::from_dir(d, &opts),
        ),
        4 => ferroformer_fuzz::report(
            "AutoModelForMaskedLM::from_dir",
            &AutoModelForMaskedLM::from_dir(d, &opts),
        ),
        5 => ferroformer_fuzz::report(
            "AutoModelForCausalLM::from_dir",
            &AutoModelForCausalLM::from_dir(d, &opts),
        ),
        6 => ferroformer_fuzz::report("inspect_checkpoint", &inspect_checkpoint(d)),
        _ => {
            if let Ok(config) = PretrainedConfig::from_dir(d) {
                let _ = config.encoder_spec();
                for id in 0..3 {
                    let _ = config.label(id);
                }
            }
            let _ = ferroformer::models::auto::causal_lm_spec(d);
            if let Ok(files) = ferroformer::models::checkpoint_files(d) {
                if let Ok(w) = Weights::from_safetensors(&files, DType::F16, &Device::Cpu) {
                    let _ = w.get((2, 2), "weight");
                }
            }
        }
    }
});
