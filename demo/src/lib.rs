//! The seven-layer demo runner (skeleton; see issue 12).
