//! The trust gate's own parts: who may do what (`roles`) and how much each fix pattern is
//! trusted (`ledger`), both pure; and beside the patterns, what each bounded action did
//! (`actions`, read from the audit trail).

pub mod actions;
pub mod ledger;
pub mod links;
pub mod proposals;
pub mod roles;
pub mod story;
