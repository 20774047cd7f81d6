//! tokenizer stage.
