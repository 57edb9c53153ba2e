//! libp2p transport: TCP and QUIC, Noise, Yamux; one request-response protocol per
//! protocol family carrying [`Frame`]s; identify and ping; a connection-level
//! allowlist built from the roster and connection limits.
//!
//! The libp2p identity *is* the node identity (the same Ed25519 key), so the peer
//! authenticated by Noise/TLS maps to exactly one roster node id and an envelope's
//! sender can be checked against it.

use std::time::Duration;

use libp2p::{
    allow_block_list, connection_limits, identify, ping,
    request_response::{self, ProtocolSupport},
    PeerId, StreamProtocol, Swarm,
};
use quorate_protocol::{
    wire::frame::{self, Ack, Frame},
    NodeIdentity,
};

/// Protocol id of DKG traffic.
pub const DKG_PROTOCOL: StreamProtocol = StreamProtocol::new("/quorate/dkg/1");
/// Protocol id of signing traffic.
pub const SIGN_PROTOCOL: StreamProtocol = StreamProtocol::new("/quorate/sign/1");

/// The protocol family a frame travels on.
pub fn family(frame: &Frame) -> Family {
    if frame.envelope().round.is_key_setup() {
        Family::Dkg
    } else {
        Family::Sign
    }
}

/// Protocol families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `/quorate/dkg/1`
    Dkg,
    /// `/quorate/sign/1`
    Sign,
}

impl Family {
    /// Stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Dkg => "dkg",
            Self::Sign => "sign",
        }
    }
}

/// Postcard frames with a 4-byte length prefix and size caps (protocol's framing).
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Frame>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        frame::read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Ack>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        frame::read_ack(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        frame::write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Ack,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        frame::write_ack(io, &res).await
    }
}

pub use behaviour::{Behaviour, BehaviourEvent};

// The derive generates an event enum without docs; its variants mirror the fields.
#[allow(missing_docs)]
mod behaviour {
    use super::FrameCodec;
    use libp2p::{
        allow_block_list, connection_limits, identify, ping, request_response,
        swarm::NetworkBehaviour,
    };

    /// The combined libp2p behaviour of nodes and coordinators.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Roster allowlist: connections from anyone else are closed at establishment.
        pub allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
        /// Connection limits.
        pub limits: connection_limits::Behaviour,
        /// Identify.
        pub identify: identify::Behaviour,
        /// Ping (liveness).
        pub ping: ping::Behaviour,
        /// DKG traffic.
        pub dkg: request_response::Behaviour<FrameCodec>,
        /// Signing traffic.
        pub sign: request_response::Behaviour<FrameCodec>,
    }
}

/// Transport limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Concurrent inbound/outbound streams per connection and protocol.
    pub max_streams: usize,
    /// Established connections per peer.
    pub max_connections_per_peer: u32,
    /// Established inbound connections in all.
    pub max_connections_incoming: u32,
    /// Established outbound connections in all.
    pub max_connections_outgoing: u32,
    /// Pending inbound connections.
    pub max_pending_incoming: u32,
    /// Pending outbound connections.
    pub max_pending_outgoing: u32,
}

impl Default for Limits {
    fn default() -> Self {
        let c = crate::config::LimitsConfig::default();
        Self {
            request_timeout: Duration::from_secs(10),
            max_streams: 64,
            max_connections_per_peer: c.max_connections_per_peer,
            max_connections_incoming: c.max_connections_incoming,
            max_connections_outgoing: c.max_connections_outgoing,
            max_pending_incoming: c.max_pending_incoming,
            max_pending_outgoing: c.max_pending_outgoing,
        }
    }
}

impl From<&crate::config::LimitsConfig> for Limits {
    fn from(c: &crate::config::LimitsConfig) -> Self {
        Self {
            max_connections_per_peer: c.max_connections_per_peer,
            max_connections_incoming: c.max_connections_incoming,
            max_connections_outgoing: c.max_connections_outgoing,
            max_pending_incoming: c.max_pending_incoming,
            max_pending_outgoing: c.max_pending_outgoing,
            ..Self::default()
        }
    }
}

/// The libp2p keypair of a node identity (same Ed25519 secret).
///
/// # Security
/// Copies the node's Ed25519 secret into libp2p's keypair, which zeroizes it on drop.
pub fn keypair(identity: &NodeIdentity) -> Result<libp2p::identity::Keypair, String> {
    let secret = identity.to_secret_bytes();
    let mut ed = [0u8; 32];
    ed.copy_from_slice(&secret[..32]);
    libp2p::identity::Keypair::ed25519_from_bytes(ed).map_err(|e| e.to_string())
}

/// Builds a swarm for `identity` that only talks to `allowed` peers.
pub fn build_swarm(
    identity: &NodeIdentity,
    allowed: impl IntoIterator<Item = PeerId>,
    limits: Limits,
) -> Result<Swarm<Behaviour>, String> {
    let key = keypair(identity)?;
    let rr_config = request_response::Config::default()
        .with_request_timeout(limits.request_timeout)
        .with_max_concurrent_streams(limits.max_streams);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| format!("tcp transport: {e}"))?
        .with_quic()
        .with_behaviour(|key| Behaviour {
            allow: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established_per_peer(Some(limits.max_connections_per_peer))
                    .with_max_established_incoming(Some(limits.max_connections_incoming))
                    .with_max_established_outgoing(Some(limits.max_connections_outgoing))
                    .with_max_pending_incoming(Some(limits.max_pending_incoming))
                    .with_max_pending_outgoing(Some(limits.max_pending_outgoing)),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/quorate/1".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
            dkg: request_response::Behaviour::with_codec(
                FrameCodec,
                [(DKG_PROTOCOL, ProtocolSupport::Full)],
                rr_config.clone(),
            ),
            sign: request_response::Behaviour::with_codec(
                FrameCodec,
                [(SIGN_PROTOCOL, ProtocolSupport::Full)],
                rr_config,
            ),
        })
        .map_err(|e| format!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    for peer in allowed {
        swarm.behaviour_mut().allow.allow_peer(peer);
    }
    Ok(swarm)
}

/// Dials `peer` from a fresh local port unless connected or already dialing.
///
/// libp2p's default dial binds the listening port. Two nodes that dial each other
/// at the same moment that way build one TCP connection by simultaneous open, on
/// which both sides start Noise as initiator and fail; with equal retry backoff
/// they collide again on every retry (seen as a DKG stalled between two nodes).
/// Request-response skips its own dial while this one is pending.
pub fn dial_fresh_port<B: libp2p::swarm::NetworkBehaviour>(swarm: &mut Swarm<B>, peer: &PeerId) {
    if swarm.is_connected(peer) {
        return;
    }
    let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(*peer)
        .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
        .allocate_new_port()
        .build();
    // A refused dial (already dialing, or no address) surfaces through the request.
    let _ = swarm.dial(opts);
}

/// Sends `frame` to `peer` on its protocol family; returns the request id.
pub fn send(
    swarm: &mut Swarm<Behaviour>,
    peer: &PeerId,
    frame: Frame,
) -> request_response::OutboundRequestId {
    dial_fresh_port(swarm, peer);
    match family(&frame) {
        Family::Dkg => swarm.behaviour_mut().dkg.send_request(peer, frame),
        Family::Sign => swarm.behaviour_mut().sign.send_request(peer, frame),
    }
}
