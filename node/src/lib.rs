#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod backup;
pub mod config;
pub mod daemon;
pub mod keystore;
pub mod lifecycle;
pub mod metrics;
pub mod netting;
pub mod policy;
mod presign;
pub mod recovery;
mod request_record;
pub mod roster;
pub mod service;
pub mod transport;
pub mod window;

pub use audit::{AuditError, AuditKind, AuditLog, VerifyReport};
pub use backup::BackupError;
pub use keystore::{
    KdfParams, Keystore, KeystoreError, Passphrase, PassphraseSource, SealedKeystore, StoredKey,
};
pub use policy::{Decision, Policy, PolicyEngine, PolicyError, Rule};
pub use quorate_protocol as protocol;

/// Any error of this crate: one variant per concern, each wrapping that module's
/// error enum. The modules return their own enums; the daemon and CLI use this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Keystore (sealed storage of the identity and key shares).
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// Audit log.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Signing policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Roster (invalid, badly signed or older than one accepted before).
    #[error(transparent)]
    Roster(#[from] quorate_protocol::roster::RosterError),
    /// Backups, restores and recovery keys.
    #[error(transparent)]
    Backup(#[from] BackupError),
}
