//! cache stage.
