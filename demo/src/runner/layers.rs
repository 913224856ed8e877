//! Layers 1–7, one file each. Each layer is a method of [`Runner`](super::Runner) that injects
//! its fault, fills its report with marks and evidence, and returns `Err(reason)` to fail it.

mod canary;
mod drain;
mod helm;
mod hpa;
mod liveness;
mod readiness;
mod recycle;
