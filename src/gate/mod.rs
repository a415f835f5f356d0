//! The trust gate's own parts: who may do what (`roles`) and how much each fix pattern is
//! trusted (`ledger`). Both are pure.

pub mod ledger;
pub mod links;
pub mod proposals;
pub mod roles;
pub mod story;
