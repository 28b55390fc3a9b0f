//! Loading pretrained tokenizers (`AutoTokenizer`).
