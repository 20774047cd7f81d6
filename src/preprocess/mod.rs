//! preprocess stage.
