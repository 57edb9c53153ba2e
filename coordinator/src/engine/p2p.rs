//! The coordinator's libp2p endpoint: the same transport as the nodes (TCP and
//! QUIC, Noise, Yamux, `/quorate/dkg/1` and `/quorate/sign/1` request-response with
//! the protocol crate's framing), allowlisted to the roster.

use std::time::Duration;

use crate::settings::ConnectionLimits;
use libp2p::{
    allow_block_list, connection_limits, identify, ping,
    request_response::{self, ProtocolSupport},
    PeerId, StreamProtocol, Swarm,
};
use quorate_protocol::{
    wire::frame::{self, Ack, Frame},
    NodeId, NodeIdentity,
};

pub(crate) const DKG: StreamProtocol = StreamProtocol::new("/quorate/dkg/1");
pub(crate) const SIGN: StreamProtocol = StreamProtocol::new("/quorate/sign/1");

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Codec;

impl request_response::Codec for Codec {
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

pub(crate) use behaviour::{Behaviour, BehaviourEvent};

#[allow(missing_docs)]
mod behaviour {
    use libp2p::{
        allow_block_list, connection_limits, identify, ping, request_response,
        swarm::NetworkBehaviour,
    };

    #[derive(NetworkBehaviour)]
    pub(crate) struct Behaviour {
        pub(crate) allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
        pub(crate) limits: connection_limits::Behaviour,
        pub(crate) identify: identify::Behaviour,
        pub(crate) ping: ping::Behaviour,
        pub(crate) dkg: request_response::Behaviour<super::Codec>,
        pub(crate) sign: request_response::Behaviour<super::Codec>,
    }
}

/// libp2p peer id of a node id (the same Ed25519 key).
pub(crate) fn peer_id(node: &NodeId) -> Option<PeerId> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(node.as_bytes()).ok()?;
    Some(PeerId::from_public_key(&libp2p::identity::PublicKey::from(
        key,
    )))
}

pub(crate) fn build(
    identity: &NodeIdentity,
    allowed: &[PeerId],
    limits: ConnectionLimits,
) -> Result<Swarm<Behaviour>, String> {
    let secret = identity.to_secret_bytes();
    let mut ed = [0u8; 32];
    ed.copy_from_slice(&secret[..32]);
    let key = libp2p::identity::Keypair::ed25519_from_bytes(ed).map_err(|e| e.to_string())?;
    let rr = request_response::Config::default()
        .with_request_timeout(Duration::from_secs(10))
        .with_max_concurrent_streams(256);
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
                    .with_max_established_per_peer(Some(limits.max_per_peer))
                    .with_max_established_incoming(Some(limits.max_incoming))
                    .with_max_established_outgoing(Some(limits.max_outgoing))
                    .with_max_pending_incoming(Some(limits.max_pending_incoming))
                    .with_max_pending_outgoing(Some(limits.max_pending_outgoing)),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/quorate/1".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
            dkg: request_response::Behaviour::with_codec(
                Codec,
                [(DKG, ProtocolSupport::Full)],
                rr.clone(),
            ),
            sign: request_response::Behaviour::with_codec(
                Codec,
                [(SIGN, ProtocolSupport::Full)],
                rr,
            ),
        })
        .map_err(|e| format!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    for p in allowed {
        swarm.behaviour_mut().allow.allow_peer(*p);
    }
    Ok(swarm)
}

/// Dials `peer` from a fresh local port unless connected or already dialing:
/// libp2p's default dial binds the listening port, and two ends dialing each other
/// that way at once meet in one simultaneously-opened TCP connection on which both
/// start Noise as initiator and fail. Request-response skips its own dial meanwhile.
fn dial_fresh_port(swarm: &mut Swarm<Behaviour>, peer: &PeerId) {
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

/// Sends on the frame's protocol family.
pub(crate) fn send(
    swarm: &mut Swarm<Behaviour>,
    peer: &PeerId,
    frame: Frame,
) -> request_response::OutboundRequestId {
    let dkg = frame.envelope().round.is_key_setup();
    dial_fresh_port(swarm, peer);
    if dkg {
        swarm.behaviour_mut().dkg.send_request(peer, frame)
    } else {
        swarm.behaviour_mut().sign.send_request(peer, frame)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use libp2p::{
        swarm::{
            dial_opts::{DialOpts, PeerCondition},
            ListenError, SwarmEvent,
        },
        Multiaddr,
    };

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_per_peer_limit_are_refused() {
        let a_id = NodeIdentity::from_secret_bytes(&[1; 64]);
        let b_id = NodeIdentity::from_secret_bytes(&[2; 64]);
        let pa = peer_id(&a_id.node_id()).expect("peer a");
        let pb = peer_id(&b_id.node_id()).expect("peer b");
        let lax = ConnectionLimits {
            max_per_peer: 8,
            ..ConnectionLimits::default()
        };
        let strict = ConnectionLimits {
            max_per_peer: 1,
            ..ConnectionLimits::default()
        };
        let mut a = build(&a_id, &[pb], lax).expect("swarm a");
        let mut b = build(&b_id, &[pa], strict).expect("swarm b");
        b.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
            .expect("listen");
        let addr: Multiaddr = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(SwarmEvent::NewListenAddr { address, .. }) = b.next().await {
                    return address;
                }
            }
        })
        .await
        .expect("listening");
        for _ in 0..3 {
            let opts = DialOpts::peer_id(pb)
                .condition(PeerCondition::Always)
                .addresses(vec![addr.clone()])
                .allocate_new_port()
                .build();
            a.dial(opts).expect("dial");
        }
        let (mut established, mut denied) = (0u32, 0u32);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while established + denied < 3 {
                tokio::select! {
                    _ = a.next() => {}
                    Some(ev) = b.next() => match ev {
                        SwarmEvent::ConnectionEstablished { .. } => established += 1,
                        SwarmEvent::IncomingConnectionError {
                            error: ListenError::Denied { .. },
                            ..
                        } => denied += 1,
                        _ => {}
                    },
                }
            }
        })
        .await;
        assert_eq!((established, denied), (1, 2), "one accepted, two refused");
        assert!(b.is_connected(&pa));
    }
}
