//! The crate's one error type.

use std::path::PathBuf;

use quorate_protocol::ProtocolError;

/// Everything that can stop a simulation from running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The scenario file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The scenario (or cost file) is not valid TOML for the schema, e.g. a
    /// misspelled field. The message names the offending field.
    #[error("{path}: {message}")]
    Parse {
        /// File (or `<inline>`) that failed.
        path: String,
        /// What the parser said, including the field name and line.
        message: String,
    },
    /// The scenario parsed but its values are inconsistent.
    #[error("invalid scenario: {field}: {reason}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `committee.threshold`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Setting up keys or machines failed in the protocol core.
    #[error("protocol setup failed: {0}")]
    Protocol(#[from] ProtocolError),
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// File that failed.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// Plot file.
        path: PathBuf,
        /// What the plotting library said.
        message: String,
    },
    /// PNG plots were asked for but no TrueType font could be loaded to draw
    /// their text (SVG plots need none).
    #[error(
        "PNG plots need a TrueType font to draw text: {reason}; set QUORATE_SIM_FONT=/path/to/font.ttf \
         or install one (Debian/Ubuntu: apt-get install fonts-dejavu-core)"
    )]
    Font {
        /// Why no font was loaded (which variable or paths were tried).
        reason: String,
    },
    /// Serializing a report failed.
    #[error("cannot serialize report: {0}")]
    Serialize(String),
}

impl SimError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
