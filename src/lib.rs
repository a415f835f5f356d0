//! guardian: decides whether a change made a service worse, and proves it.

pub mod api;
pub mod audit;
pub mod bench;
pub mod change;
pub mod config;
pub mod core;
pub mod daemon;
pub mod demo;
pub mod display;
pub mod gate;
pub mod git;
pub mod hook;
pub mod input;
pub mod logging;
pub mod process;
pub mod promql;
pub mod replay;
pub mod report;
pub mod running;
pub mod scrape;
pub mod sdnotify;
pub mod sentry;
pub mod series;
pub mod store;
pub mod tail;
pub mod trust;
