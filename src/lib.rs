//! apimon: keeps an API-monitoring platform on OpenStack exactly as a git
//! repository says it should be.
//!
//! The pipeline is `model` (load + validate) → `render` (templates) →
//! providers' `observe` → `plan` (pure diff, ordered) → apply. See
//! `docs/architecture.md`.

pub mod apply;
pub mod bootstrap;
pub mod cli;
pub mod cron;
pub mod daemon;
pub mod digest;
pub mod error;
pub mod executor;
pub mod fsutil;
pub mod health;
pub mod httpbody;
pub mod known_hosts;
pub mod layout;
pub mod limits;
pub mod machine;
pub mod model;
pub mod notify;
pub mod plan;
pub mod progress;
pub mod providers;
pub mod reconcile;
pub mod render;
pub mod retry;
pub mod serve;
pub mod source;
pub mod state;
pub mod url;
