//! The sans-IO interface shared by every state machine.
//!
//! A driver (the node daemon, the coordinator, the simulator, a test) feeds
//! [`Input`]s with the current time and a random generator; the machine returns
//! [`Output`]s: messages to send, timers to arm, and finally its result. Machines
//! never read a clock, spawn a task or touch the network.

use crate::{ids::NodeId, wire::Envelope};

/// Milliseconds on the driver's clock (wall clock in daemons, virtual in the simulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time plus `ms` milliseconds.
    pub fn plus_ms(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

/// Timers a machine may arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimerId {
    /// The session deadline: when it fires, whoever has not sent the current round is named.
    Deadline,
}

/// What a driver feeds a machine.
// Messages are the common case; boxing them would add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Input {
    /// Begin (send the first round).
    Start,
    /// A message from a peer. The driver must already have checked that the
    /// authenticated transport peer is `msg.sender` (or that it came via a relay,
    /// in which case the envelope signature is what authenticates it).
    Message(Envelope),
    /// A timer armed earlier has fired.
    Timeout(TimerId),
}

/// What a machine asks its driver to do.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Output<T> {
    /// Deliver `msg` to `to`.
    Send {
        /// Recipient.
        to: NodeId,
        /// The signed message.
        msg: Envelope,
    },
    /// Call back with [`Input::Timeout`] at `at`.
    SetTimer {
        /// Which timer.
        timer: TimerId,
        /// When.
        at: Timestamp,
    },
    /// The session finished with this result.
    Done(T),
}

impl<T> Output<T> {
    /// The result, if this output is [`Output::Done`].
    pub fn into_done(self) -> Option<T> {
        match self {
            Self::Done(t) => Some(t),
            _ => None,
        }
    }
}

/// Where a machine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not started or in progress.
    Running,
    /// Finished successfully.
    Done,
    /// Ended with a fatal error.
    Failed,
}
