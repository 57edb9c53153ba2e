//! The roster: every node and coordinator of the network, signed by the network's
//! roster authority. It is the connection allowlist (peers outside it are closed
//! before any protocol traffic) and the map from node ids to FROST indices,
//! segments, sealing keys and addresses.
//!
//! ```toml
//! [[nodes]]
//! name = "custody-a-1"
//! node_id = "<32-byte Ed25519 public key, hex>"
//! seal_key = "<32-byte X25519 public key, hex>"
//! index = 1
//! segment = "eu-dc1"
//! addresses = ["/ip4/10.0.1.5/tcp/7400", "/ip4/10.0.1.5/udp/7400/quic-v1"]
//!
//! [[coordinators]]
//! name = "coord-1"
//! node_id = "<hex>"
//! addresses = ["/ip4/10.0.0.2/tcp/7300"]
//! ```
//!
//! The roster carries an `epoch` (top-level `epoch = N`, default 0), raised by the
//! authority for every new roster. The signature is a detached file `<roster>.sig`
//! holding the hex Ed25519 signature, by the authority key named in the node config,
//! of
//!
//! ```text
//! "quorate/roster/v1\0" ‖ epoch (u64 big-endian) ‖ the roster file's bytes
//! ```
//!
//! ([`signing_message`]): domain-separated from every other use of an Ed25519 key,
//! and bound to the epoch, so nodes can refuse an older roster ([`Roster::epoch`]).
//! A signature over the bare file bytes (the format before epochs) is refused.

use std::{collections::BTreeSet, path::Path};

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{Committee, Member, NodeId};

/// Why a roster was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    /// The file could not be read.
    #[error("cannot read roster {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or schema problem.
    #[error("roster is not valid TOML: {0}")]
    Parse(String),
    /// A semantic problem (duplicates, bad keys).
    #[error("invalid roster: {0}")]
    Invalid(String),
    /// Missing or wrong authority signature.
    #[error("roster signature: {0}")]
    Signature(String),
    /// The roster is older than one this node already accepted (a rollback).
    #[error(
        "roster epoch {epoch} is lower than epoch {last_accepted} this node already accepted; \
         refusing an older roster"
    )]
    StaleEpoch {
        /// The roster's epoch.
        epoch: u64,
        /// The highest epoch accepted before.
        last_accepted: u64,
    },
}

/// Domain of the roster signature.
pub const SIGNATURE_DOMAIN: &[u8] = b"quorate/roster/v1\0";

/// Largest roster file read (checked before reading it whole).
pub const MAX_ROSTER_LEN: u64 = 4 << 20;

/// The bytes the roster authority signs: `"quorate/roster/v1\0" ‖ epoch (u64 BE) ‖
/// file bytes`.
pub fn signing_message(epoch: u64, file: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 8 + file.len());
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.extend_from_slice(file);
    m
}

/// A signer node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterNode {
    /// Operator-chosen name, used in logs.
    pub name: String,
    /// Ed25519 public key (hex): node id and libp2p identity.
    pub node_id: String,
    /// X25519 sealing key (hex).
    pub seal_key: String,
    /// FROST participant index (non-zero, unique).
    pub index: u16,
    /// Network segment label.
    pub segment: String,
    /// libp2p multiaddresses the node listens on.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// A coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterCoordinator {
    /// Name.
    pub name: String,
    /// Ed25519 public key (hex).
    pub node_id: String,
    /// Multiaddresses.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// The whole roster, as written in TOML.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterFile {
    /// Roster version, raised for every new roster; part of the signed message.
    #[serde(default)]
    pub epoch: u64,
    /// Signer nodes.
    #[serde(default)]
    pub nodes: Vec<RosterNode>,
    /// Coordinators.
    #[serde(default)]
    pub coordinators: Vec<RosterCoordinator>,
}

/// One peer of a validated roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Name.
    pub name: String,
    /// Node id.
    pub node: NodeId,
    /// Addresses (libp2p multiaddresses, validated by the transport).
    pub addresses: Vec<String>,
    /// `Some` for signer nodes: (index, segment, sealing key).
    pub signer: Option<(u16, String, [u8; 32])>,
}

/// A validated roster.
#[derive(Debug, Clone)]
pub struct Roster {
    epoch: u64,
    peers: Vec<Peer>,
}

fn parse_key(what: &str, name: &str, hex_str: &str) -> Result<[u8; 32], RosterError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out)
        .map_err(|_| RosterError::Invalid(format!("{name}: {what} must be 32 bytes of hex")))?;
    Ok(out)
}

impl Roster {
    /// Parses and validates roster TOML.
    pub fn from_toml(text: &str) -> Result<Self, RosterError> {
        let file: RosterFile =
            toml::from_str(text).map_err(|e| RosterError::Parse(e.to_string()))?;
        Self::from_file_struct(&file)
    }

    /// Validates a parsed roster.
    pub fn from_file_struct(file: &RosterFile) -> Result<Self, RosterError> {
        let mut peers = Vec::new();
        let mut names = BTreeSet::new();
        for n in &file.nodes {
            let node = NodeId(parse_key("node_id", &n.name, &n.node_id)?);
            let seal = parse_key("seal_key", &n.name, &n.seal_key)?;
            peers.push(Peer {
                name: n.name.clone(),
                node,
                addresses: n.addresses.clone(),
                signer: Some((n.index, n.segment.clone(), seal)),
            });
        }
        for c in &file.coordinators {
            let node = NodeId(parse_key("node_id", &c.name, &c.node_id)?);
            peers.push(Peer {
                name: c.name.clone(),
                node,
                addresses: c.addresses.clone(),
                signer: None,
            });
        }
        for p in &peers {
            if !names.insert(p.name.clone()) {
                return Err(RosterError::Invalid(format!(
                    "name {:?} appears twice",
                    p.name
                )));
            }
            if peers.iter().filter(|o| o.node == p.node).count() > 1 {
                return Err(RosterError::Invalid(format!(
                    "{}: node id appears twice",
                    p.name
                )));
            }
        }
        let roster = Self {
            epoch: file.epoch,
            peers,
        };
        if roster.signers().count() >= 2 {
            // Index rules (non-zero, distinct) and key validity, as the protocol checks them.
            roster
                .committee(None)
                .map_err(|e| RosterError::Invalid(e.to_string()))?;
        }
        Ok(roster)
    }

    /// Reads a roster file, verifying its detached signature (over
    /// [`signing_message`] with the file's epoch) when `authority` is set.
    pub fn load(path: &Path, authority: Option<&[u8; 32]>) -> Result<Self, RosterError> {
        let io_err = |source| RosterError::Io {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io_err)?.len();
        if len > MAX_ROSTER_LEN {
            return Err(RosterError::Invalid(format!(
                "roster file is {len} bytes; the limit is {MAX_ROSTER_LEN}"
            )));
        }
        let bytes = std::fs::read(path).map_err(io_err)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| RosterError::Parse("roster is not UTF-8".into()))?;
        // Parsed (not yet trusted) to learn the epoch the signature must cover.
        let roster = Self::from_toml(text)?;
        if let Some(authority) = authority {
            let sig_path = path.with_extension(match path.extension() {
                Some(e) => format!("{}.sig", e.to_string_lossy()),
                None => "sig".into(),
            });
            let sig_hex = std::fs::read_to_string(&sig_path).map_err(|e| {
                RosterError::Signature(format!("cannot read {}: {e}", sig_path.display()))
            })?;
            verify_signature(
                &signing_message(roster.epoch, &bytes),
                sig_hex.trim(),
                authority,
            )?;
        }
        Ok(roster)
    }

    /// The roster's epoch (0 when the file has none).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Refuses this roster if its epoch is lower than `last_accepted` (the highest
    /// epoch the caller accepted before); equal or higher is accepted.
    pub fn check_epoch(&self, last_accepted: u64) -> Result<(), RosterError> {
        if self.epoch < last_accepted {
            return Err(RosterError::StaleEpoch {
                epoch: self.epoch,
                last_accepted,
            });
        }
        Ok(())
    }

    /// Every peer.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Signer nodes.
    pub fn signers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(|p| p.signer.is_some())
    }

    /// Coordinators.
    pub fn coordinators(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(|p| p.signer.is_none())
    }

    /// The peer with this node id.
    pub fn by_node(&self, node: &NodeId) -> Option<&Peer> {
        self.peers.iter().find(|p| &p.node == node)
    }

    /// True when `node` is a coordinator.
    pub fn is_coordinator(&self, node: &NodeId) -> bool {
        self.by_node(node).is_some_and(|p| p.signer.is_none())
    }

    /// The committee of the given signer nodes (all signers when `None`).
    pub fn committee(&self, nodes: Option<&[NodeId]>) -> Result<Committee, crate::ProtocolError> {
        Committee::new(
            self.signers()
                .filter(|p| nodes.is_none_or(|ns| ns.contains(&p.node)))
                .filter_map(|p| {
                    p.signer.as_ref().map(|(index, _, seal)| Member {
                        node: p.node,
                        index: *index,
                        seal_key: *seal,
                    })
                })
                .collect(),
        )
    }
}

/// Signs a roster file for the authority: parses it (an invalid roster is refused),
/// and signs [`signing_message`] with the file's epoch. Returns the epoch and the
/// signature, to be written hex-encoded to `<roster>.sig`.
///
/// # Security
/// Uses the roster authority's secret key; the caller keeps it offline and zeroizes
/// it (`SigningKey` zeroizes on drop).
pub fn sign_roster(
    file: &[u8],
    authority: &ed25519_dalek::SigningKey,
) -> Result<(u64, [u8; 64]), RosterError> {
    use ed25519_dalek::Signer as _;
    let text =
        std::str::from_utf8(file).map_err(|_| RosterError::Parse("roster is not UTF-8".into()))?;
    let epoch = Roster::from_toml(text)?.epoch();
    Ok((
        epoch,
        authority.sign(&signing_message(epoch, file)).to_bytes(),
    ))
}

/// Checks a hex Ed25519 signature of `bytes` by `authority` (for a roster, `bytes`
/// is [`signing_message`]).
pub fn verify_signature(
    bytes: &[u8],
    sig_hex: &str,
    authority: &[u8; 32],
) -> Result<(), RosterError> {
    let key = VerifyingKey::from_bytes(authority)
        .map_err(|_| RosterError::Signature("authority key is not an Ed25519 key".into()))?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(sig_hex, &mut sig)
        .map_err(|_| RosterError::Signature("signature must be 64 bytes of hex".into()))?;
    key.verify(bytes, &Signature::from_bytes(&sig))
        .map_err(|_| {
            RosterError::Signature("does not verify under the roster authority key".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeIdentity;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    fn sample(n: usize, rng: &mut ChaCha20Rng) -> (Vec<NodeIdentity>, String) {
        let ids: Vec<_> = (0..n).map(|_| NodeIdentity::generate(rng)).collect();
        let mut text = String::new();
        for (i, id) in ids.iter().enumerate() {
            let p = id.public();
            text.push_str(&format!(
                "[[nodes]]\nname = \"n{i}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {}\nsegment = \"s{}\"\naddresses = [\"/ip4/127.0.0.1/tcp/{}\"]\n\n",
                p.node,
                hex::encode(p.seal_key),
                i + 1,
                i % 3,
                7400 + i
            ));
        }
        (ids, text)
    }

    #[test]
    fn roster_parses_and_maps_nodes() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (ids, text) = sample(3, &mut rng);
        let roster = Roster::from_toml(&text).expect("roster");
        assert_eq!(roster.signers().count(), 3);
        let p = roster.by_node(&ids[1].node_id()).expect("peer");
        assert_eq!(p.name, "n1");
        assert_eq!(p.signer.as_ref().map(|s| s.0), Some(2));
        assert_eq!(roster.committee(None).expect("committee").len(), 3);
    }

    #[test]
    fn bad_rosters_name_the_problem() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (_, text) = sample(2, &mut rng);
        let dup = text.replace("index = 2", "index = 1");
        assert!(Roster::from_toml(&dup)
            .expect_err("dup")
            .to_string()
            .contains("used twice"));
        let typo = text.replacen("segment", "segmnet", 1);
        assert!(Roster::from_toml(&typo)
            .expect_err("typo")
            .to_string()
            .contains("segmnet"));
    }

    fn write_sig(dir: &Path, sig: &ed25519_dalek::Signature) {
        std::fs::write(dir.join("roster.toml.sig"), hex::encode(sig.to_bytes())).expect("write");
    }

    #[test]
    fn signed_roster_is_verified() {
        use ed25519_dalek::Signer as _;
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (_, body) = sample(2, &mut rng);
        let text = format!("epoch = 7\n\n{body}");
        let authority = ed25519_dalek::SigningKey::generate(&mut rng);
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("roster.toml");
        std::fs::write(&path, &text).expect("write");
        let pk = authority.verifying_key().to_bytes();
        assert!(matches!(
            Roster::load(&path, Some(&pk)),
            Err(RosterError::Signature(_))
        ));
        write_sig(
            dir.path(),
            &authority.sign(&signing_message(7, text.as_bytes())),
        );
        let roster = Roster::load(&path, Some(&pk)).expect("valid signature");
        assert_eq!(roster.epoch(), 7);
        std::fs::write(&path, text.replace("s0", "s9")).expect("tamper");
        assert!(matches!(
            Roster::load(&path, Some(&pk)),
            Err(RosterError::Signature(_))
        ));
    }

    #[test]
    fn old_format_roster_signature_is_refused() {
        use ed25519_dalek::Signer as _;
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (_, body) = sample(2, &mut rng);
        let text = format!("epoch = 3\n{body}");
        let authority = ed25519_dalek::SigningKey::generate(&mut rng);
        let pk = authority.verifying_key().to_bytes();
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("roster.toml");
        std::fs::write(&path, &text).expect("write");
        // The bare file bytes, as signed before epochs.
        write_sig(dir.path(), &authority.sign(text.as_bytes()));
        assert!(matches!(
            Roster::load(&path, Some(&pk)),
            Err(RosterError::Signature(_))
        ));
        // Signed for another epoch than the file says: refused too.
        write_sig(
            dir.path(),
            &authority.sign(&signing_message(4, text.as_bytes())),
        );
        assert!(matches!(
            Roster::load(&path, Some(&pk)),
            Err(RosterError::Signature(_))
        ));
        write_sig(
            dir.path(),
            &authority.sign(&signing_message(3, text.as_bytes())),
        );
        Roster::load(&path, Some(&pk)).expect("right epoch and domain");
        // `sign_roster` produces exactly that signature.
        let (epoch, sig) = sign_roster(text.as_bytes(), &authority).expect("sign");
        assert_eq!(epoch, 3);
        std::fs::write(dir.path().join("roster.toml.sig"), hex::encode(sig)).expect("write");
        Roster::load(&path, Some(&pk)).expect("sign_roster output verifies");
        assert!(
            sign_roster(b"nodes = 3", &authority).is_err(),
            "invalid roster"
        );
        // The message layout, byte by byte.
        let m = signing_message(0x0102, b"xy");
        assert_eq!(&m[..18], b"quorate/roster/v1\0");
        assert_eq!(&m[18..26], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&m[26..], b"xy");
    }

    #[test]
    fn lower_roster_epoch_is_refused_equal_or_higher_accepted() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (_, body) = sample(2, &mut rng);
        let roster = Roster::from_toml(&format!("epoch = 5\n{body}")).expect("roster");
        assert!(matches!(
            roster.check_epoch(6),
            Err(RosterError::StaleEpoch {
                epoch: 5,
                last_accepted: 6
            })
        ));
        roster.check_epoch(5).expect("equal");
        roster.check_epoch(0).expect("higher");
        assert_eq!(Roster::from_toml(&body).expect("roster").epoch(), 0);
    }
}
