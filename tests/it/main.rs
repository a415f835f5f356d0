//! Integration tests, one module per feature. The CLI tests run the real `guardian` binary on
//! the samples shipped in `testdata/`; the scenario tests run the core over generated traffic
//! and compare verdicts and evidence with the expectations in `tests/it/expected/`.

mod agent;
mod attacks;
mod audit;
mod closed_loop;
mod common;
mod config_file;
mod daemon;
mod demo;
mod fixes;
mod flags;
mod fleet;
mod gate;
mod guardbench;
mod judge;
mod mcp;
mod metrics;
mod notify;
mod policy;
mod postmortem;
mod prometheus;
mod promql;
mod replay_cli;
mod restart;
mod rollback;
mod scenarios;
mod scrape;
mod sentry;
mod sentry_poll;
mod status_page;
