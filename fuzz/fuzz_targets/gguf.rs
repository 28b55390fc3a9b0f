//! A GGUF file of arbitrary bytes: the reader, then the model, its tokenizer, its generation
//! defaults and its chat template. Any of them may refuse the file with an error; none may
//! panic, abort or run out of memory.
#![no_main]

use ferroformer::models::{ChatMessage, ChatTemplate, GgufConfig, GgufFile, GgufModel};
use ferroformer::AutoModelForCausalLM;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = ferroformer_fuzz::scratch_dir();
    let path = dir.path().join("model.gguf");
    ferroformer_fuzz::write(dir.path(), "model.gguf", data);

    // The reader and the metadata accessors on their own: they run even when the model
    // would not load.
    if let Ok(file) = GgufFile::open(&path) {
        let _ = file.architecture();
        let _ = GgufConfig::from_file(&file);
        for name in file.tensor_names() {
            let _ = file.tensor_info(name);
        }
        let _ = file.string_array("tokenizer.ggml.tokens");
    }

    let model = GgufModel::load(&path);
    ferroformer_fuzz::report("GgufModel::load", &model);
    let Ok(model) = model else {
        return;
    };
    let tokenizer = model.tokenizer();
    if let Ok(ids) = tokenizer.encode("Hello world, 123 héllo!", true) {
        let _ = tokenizer.decode(&ids, false);
        let _ = tokenizer.decode(&ids, true);
    }
    let _ = AutoModelForCausalLM::from_gguf_model(&model);
    if let Ok(template) = ChatTemplate::from_gguf(tokenizer, &path) {
        let rendered = template.render(&[ChatMessage::user("Hi")], true);
        ferroformer_fuzz::report("ChatTemplate::render", &rendered);
    }
});
