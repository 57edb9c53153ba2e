//! quorate coordinator service and client library.
//!
//! Not built yet (issue 4): the service will expose the HTTP API exchanges call and
//! drive [`quorate_protocol`]'s aggregator (ROAST-style retries over signer subsets)
//! without ever holding key material.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use quorate_protocol as protocol;
