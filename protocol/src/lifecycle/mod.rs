//! Key lifecycle: operator-approved operations that change who holds a key's
//! shares without changing the key.
//!
//! - [`operation`]: what operators approve (k-of-m Ed25519 signatures over one
//!   operation: key, kind, starting generation, group key, new committee and
//!   threshold, expiry), verified by every node against its own policy.
//! - [`reshare`]: the sans-IO resharing machine. A refresh is a reshare to the
//!   same committee and threshold; a reshare moves the key to a new committee
//!   and threshold `t′`-of-`n′`. Both keep the group public key.
//! - `math`: the scalar and group arithmetic, over frost-core's public traits.

mod math;
pub mod operation;
pub mod repair;
pub mod reshare;

pub use operation::{ApprovedOperation, Operation, OperationKind, MAX_OPERATION_SIZE};
pub use repair::{Repair, RepairConfig, RepairEvent};
pub use reshare::{public_package, share_aad, verify_finish, Reshare, ReshareConfig, ReshareEvent};
