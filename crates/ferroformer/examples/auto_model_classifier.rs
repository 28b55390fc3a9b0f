//! The course's `AutoModel` lesson: a pretrained BERT body, a classification head of our own
//! on its pooled output, then a checkpoint that already has its head
//! (`AutoModelForSequenceClassification`), and finally the one-line `pipeline`.
//!
//! Run: `cargo run -q -p ferroformer --example auto_model_classifier [MODEL] [CLASSIFIER]`
//! MODEL defaults to the real all-MiniLM-L6-v2 (`python3 scripts/fetch_models.py` places it
//! in the hub cache); CLASSIFIER to the tiny sentiment checkpoint of the test fixtures (no
//! fine-tuned sentiment model is reachable from this machine; any BERT/RoBERTa/DistilBERT
//! `…ForSequenceClassification` directory or hub id works).

use anyhow::Result;
use candle_core::D;
use candle_nn::VarMap;
use ferroformer::arch::ClassificationHead;
use ferroformer::models::{
    AutoModel, AutoModelForSequenceClassification, AutoTokenizer, EncodeOptions, TruncationStrategy,
};
use ferroformer::pipelines::{pipeline, PipelineInput, TaskOptions};
use ferroformer::{DType, Device, Weights};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let body = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "sentence-transformers/all-MiniLM-L6-v2".into());
    let classifier = args.get(2).cloned().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/encoders/bert-seqcls"
        )
        .into()
    });
    let device = Device::Cpu;
    let text = "Soy un ejemplo de secuencia para clasificación de texto";

    // 1. AutoTokenizer + AutoModel: hidden states and the pooled sequence vector.
    let tokenizer = AutoTokenizer::from_pretrained(&body)?;
    let model = AutoModel::from_pretrained(&body)?;
    let opts = EncodeOptions {
        truncation: TruncationStrategy::LongestFirst,
        max_length: Some(64),
        ..EncodeOptions::default()
    };
    let (ids, mask, types) = tokenizer
        .encode_batch(&[text], &opts)?
        .to_tensors(&device)?;
    let out = model.forward(&ids, Some(&mask), Some(&types))?;
    println!("Hidden states size: {:?}", out.last_hidden_state.dims());
    let pooled = out
        .pooler_output
        .ok_or_else(|| anyhow::anyhow!("{body} has no pooler"))?;
    println!("Pooled output size: {:?}", pooled.dims());

    // 2. Our own classification head on the pooled output (random, untrained weights).
    let varmap = VarMap::new();
    let head = ClassificationHead::load(
        &Weights::from_varmap(&varmap, DType::F32, &device),
        pooled.dim(D::Minus1)?,
        2,
        "fc",
    )?;
    let probs = candle_nn::ops::softmax(&head.logits(&pooled)?, D::Minus1)?;
    println!(
        "Predicted class probabilities: {:?}",
        probs.to_vec2::<f32>()?
    );

    // 3. A checkpoint with its head: logits and the label of the best class.
    let tokenizer = AutoTokenizer::from_pretrained(&classifier)?;
    let model = AutoModelForSequenceClassification::from_pretrained(&classifier)?;
    let text = "La calidad del producto era justa";
    let (ids, mask, types) = tokenizer
        .encode_batch(&[text], &EncodeOptions::default())?
        .to_tensors(&device)?;
    let logits = model.forward(&ids, Some(&mask), Some(&types))?;
    let best = logits.argmax(D::Minus1)?.to_vec1::<u32>()?[0] as usize;
    println!(
        "Predicted class {best} ({}) from logits {:?}",
        model.config().label(best),
        logits.to_vec2::<f32>()?
    );

    // 4. The same in one line.
    let classify = pipeline("text-classification", &classifier)?;
    let result = classify.run(&[PipelineInput::text(text)], &TaskOptions::default())?;
    println!("pipeline: {}", serde_json::to_string(&result)?);
    Ok(())
}
