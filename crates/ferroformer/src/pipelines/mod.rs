//! Task pipelines with Hugging Face `pipeline(...)` semantics.
