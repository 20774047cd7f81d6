//! labels stage.
