//! classify stage.
