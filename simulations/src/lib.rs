//! quorate deterministic network simulator (issue 6): not built yet.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
