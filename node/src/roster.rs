//! The roster as the transport sees it: the network-wide roster
//! ([`quorate_protocol::roster`]) plus each peer's libp2p peer id (derived from its
//! node id: the same Ed25519 key) and parsed multiaddresses.

use std::path::Path;

use libp2p::{Multiaddr, PeerId};
use quorate_protocol::{
    roster::{Peer, Roster as RosterData, RosterError},
    Committee, NodeId, ProtocolError,
};

use crate::{keystore::StateStore, NodeError};

/// The libp2p peer id of a node id (the same Ed25519 key).
pub fn peer_id(node: &NodeId) -> Result<PeerId, RosterError> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(node.as_bytes())
        .map_err(|_| RosterError::Invalid(format!("node id {node} is not an Ed25519 key")))?;
    Ok(PeerId::from_public_key(&libp2p::identity::PublicKey::from(
        key,
    )))
}

/// A validated roster with libp2p addressing.
#[derive(Debug, Clone)]
pub struct Roster {
    data: RosterData,
    peers: Vec<NetPeer>,
}

/// One roster peer, as the transport addresses it.
#[derive(Debug, Clone)]
pub struct NetPeer {
    /// Node id.
    pub node: NodeId,
    /// libp2p peer id.
    pub peer_id: PeerId,
    /// Parsed addresses.
    pub addresses: Vec<Multiaddr>,
}

impl Roster {
    /// Adds libp2p addressing to a validated roster; refuses unparsable addresses.
    pub fn new(data: RosterData) -> Result<Self, RosterError> {
        let peers = data
            .peers()
            .iter()
            .map(|p| {
                let addresses = p
                    .addresses
                    .iter()
                    .map(|a| {
                        a.parse().map_err(|e| {
                            RosterError::Invalid(format!("{}: address {a:?}: {e}", p.name))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(NetPeer {
                    node: p.node,
                    peer_id: peer_id(&p.node)?,
                    addresses,
                })
            })
            .collect::<Result<_, RosterError>>()?;
        Ok(Self { data, peers })
    }

    /// Parses roster TOML.
    pub fn from_toml(text: &str) -> Result<Self, RosterError> {
        Self::new(RosterData::from_toml(text)?)
    }

    /// Loads a roster file, verifying its signature when `authority` is set.
    pub fn load(path: &Path, authority: Option<&[u8; 32]>) -> Result<Self, RosterError> {
        Self::new(RosterData::load(path, authority)?)
    }

    /// Refuses the roster if its epoch is lower than the highest one this node
    /// accepted before (kept sealed in the keystore), else records its epoch as the
    /// new highest: a node never goes back to an older roster.
    pub fn accept_epoch(&self, state: &StateStore) -> Result<(), NodeError> {
        let last = state.roster_epoch()?;
        self.data.check_epoch(last)?;
        if self.data.epoch() > last {
            state.set_roster_epoch(self.data.epoch())?;
        }
        Ok(())
    }

    /// The network-wide roster.
    pub fn data(&self) -> &RosterData {
        &self.data
    }

    /// Every peer with its libp2p addressing.
    pub fn peers(&self) -> &[NetPeer] {
        &self.peers
    }

    /// The roster entry of `node`.
    pub fn by_node(&self, node: &NodeId) -> Option<&Peer> {
        self.data.by_node(node)
    }

    /// The libp2p view of `node`.
    pub fn net(&self, node: &NodeId) -> Option<&NetPeer> {
        self.peers.iter().find(|p| &p.node == node)
    }

    /// The node id behind a libp2p peer id.
    pub fn by_peer_id(&self, peer: &PeerId) -> Option<&NetPeer> {
        self.peers.iter().find(|p| &p.peer_id == peer)
    }

    /// True when `node` is a coordinator.
    pub fn is_coordinator(&self, node: &NodeId) -> bool {
        self.data.is_coordinator(node)
    }

    /// The committee of the given signers (all when `None`).
    pub fn committee(&self, nodes: Option<&[NodeId]>) -> Result<Committee, ProtocolError> {
        self.data.committee(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsable_address_names_the_peer() {
        let id = quorate_protocol::NodeIdentity::generate(&mut rand_core::OsRng).public();
        let text = format!(
            "[[coordinators]]\nname = \"c\"\nnode_id = \"{}\"\naddresses = [\"not-an-address\"]\n",
            id.node
        );
        let err = Roster::from_toml(&text).expect_err("bad address");
        assert!(err.to_string().contains("c: address"), "{err}");
    }

    #[test]
    fn roster_epoch_is_persisted_and_never_goes_back() {
        use crate::keystore::{KdfParams, Keystore, Passphrase};
        let dir = tempfile::tempdir().expect("tempdir");
        let id = quorate_protocol::NodeIdentity::generate(&mut rand_core::OsRng);
        let ks = Keystore::init(
            dir.path().join("ks.redb"),
            &Passphrase::new("p").expect("pass"),
            &id,
            KdfParams::insecure_for_tests(),
            &mut rand_core::OsRng,
        )
        .expect("keystore");
        let roster = |epoch: u64| {
            Roster::from_toml(&format!(
                "epoch = {epoch}\n[[coordinators]]\nname = \"c\"\nnode_id = \"{}\"\n",
                id.node_id()
            ))
            .expect("roster")
        };
        roster(3).accept_epoch(&ks.state()).expect("first");
        assert_eq!(ks.state().roster_epoch().expect("epoch"), 3);
        roster(3).accept_epoch(&ks.state()).expect("equal");
        let err = roster(2).accept_epoch(&ks.state()).expect_err("lower");
        assert!(
            matches!(
                err,
                NodeError::Roster(RosterError::StaleEpoch {
                    epoch: 2,
                    last_accepted: 3
                })
            ),
            "{err:?}"
        );
        roster(9).accept_epoch(&ks.state()).expect("higher");
        // Survives reopening the keystore.
        drop(ks);
        let ks = crate::keystore::SealedKeystore::open(dir.path().join("ks.redb"))
            .expect("open")
            .unseal(&Passphrase::new("p").expect("pass"))
            .expect("unseal");
        assert_eq!(ks.state().roster_epoch().expect("epoch"), 9);
        assert!(roster(8).accept_epoch(&ks.state()).is_err());
    }

    #[test]
    fn peer_id_is_derived_from_node_id() {
        let id = quorate_protocol::NodeIdentity::generate(&mut rand_core::OsRng);
        let kp = crate::transport::keypair(&id).expect("keypair");
        assert_eq!(
            peer_id(&id.node_id()).expect("peer id"),
            kp.public().to_peer_id()
        );
    }
}
