//! bundle stage.
