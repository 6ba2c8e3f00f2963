//! apimon: keeps an API-monitoring platform on OpenStack exactly as a git
//! repository says it should be.
//!
//! The pipeline is `model` (load + validate) → `render` (templates) →
//! providers' `observe` → `plan` (pure diff, ordered) → apply. See
//! `docs/architecture.md`.

pub mod apply;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod executor;
pub mod live;
pub mod model;
pub mod plan;
pub mod providers;
pub mod reconcile;
pub mod render;
pub mod source;
pub mod state;
