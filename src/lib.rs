//! guardian: decides whether a change made a service worse, and proves it.

pub mod bench;
pub mod core;
pub mod input;
