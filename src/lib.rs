//! edgeclip: zero-shot CLIP image classification for edge devices.
//!
//! The program is one path through a few stages, each a module with a small
//! public surface and typed data between them:
//!
//! ```text
//! source ──Frame──▶ preprocess ──Tensor──▶ encoder(image) ──Embedding──▶ classify ──Scores──▶ output
//!                                                                          ▲
//! labels ──LabelSet──▶ tokenizer ──▶ encoder(text) ──▶ cache ──LabelMatrix─┘
//! ```
//!
//! [`bundle`] describes where a model lives and how to feed it.

pub mod board;
pub mod bundle;
pub mod cache;
pub mod classify;
pub mod config;
pub mod encoder;
pub mod engine;
pub mod eval;
pub mod events;
#[doc(hidden)]
pub mod fuzz;
pub mod labels;
pub mod limits;
pub mod preprocess;
pub mod service;
pub mod sink;
pub mod source;
pub mod tokenizer;
