#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod backend;
pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod netting;
pub mod run;
pub mod service;
pub mod settings;
pub mod store;
pub mod tls;
pub mod types;

pub use engine::{Engine, EngineConfig, NettingOptions, NodeStatus};
pub use error::CoordinatorError;
pub use quorate_protocol as protocol;
