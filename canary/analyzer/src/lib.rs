//! Canary analysis (skeleton; see issue 11).
