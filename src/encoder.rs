//! encoder stage.
