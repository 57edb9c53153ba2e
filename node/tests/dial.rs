//! Outgoing connections use a fresh local port, never the listening one.
//!
//! libp2p's default dial binds the listening port. Two nodes dialing each other that
//! way at the same moment meet in one simultaneously-opened TCP connection on which
//! both start Noise as initiator and fail, again on every retry with equal backoff;
//! a DKG between them stalled until its deadline. This checks the cause is gone.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{core::ConnectedPoint, multiaddr::Protocol, swarm::SwarmEvent, Multiaddr};
use quorate_node::transport::{self, Limits};
use quorate_protocol::{
    wire::frame::Frame, Ciphersuite, Envelope, KeyId, NodeIdentity, Payload, SessionId,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

fn tcp_port(addr: &Multiaddr) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_uses_a_fresh_port_not_the_listening_one() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let a_id = NodeIdentity::generate(&mut rng);
    let b_id = NodeIdentity::generate(&mut rng);
    let pa = transport::keypair(&a_id)
        .expect("key")
        .public()
        .to_peer_id();
    let pb = transport::keypair(&b_id)
        .expect("key")
        .public()
        .to_peer_id();
    let mut a = transport::build_swarm(&a_id, [pb], Limits::default()).expect("swarm a");
    let mut b = transport::build_swarm(&b_id, [pa], Limits::default()).expect("swarm b");
    a.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen a");
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen b");
    let mut a_port = None;
    let mut b_addr = None;
    let wait = tokio::time::timeout(Duration::from_secs(10), async {
        while a_port.is_none() || b_addr.is_none() {
            tokio::select! {
                Some(SwarmEvent::NewListenAddr { address, .. }) = a.next() => a_port = tcp_port(&address),
                Some(SwarmEvent::NewListenAddr { address, .. }) = b.next() => b_addr = Some(address),
            }
        }
    });
    wait.await.expect("both listening");
    let a_port = a_port.expect("port");
    a.add_peer_address(pb, b_addr.expect("addr"));
    let env = Envelope::seal(
        &a_id,
        Ciphersuite::Secp256k1,
        KeyId([1; 16]),
        SessionId([2; 32]),
        Payload::SignCommit {
            commitments: vec![3; 8],
        },
    );
    transport::send(&mut a, &pb, Frame::Deliver(env));
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                _ = a.next() => {}
                Some(ev) = b.next() => {
                    if let SwarmEvent::ConnectionEstablished {
                        endpoint: ConnectedPoint::Listener { send_back_addr, .. },
                        ..
                    } = ev
                    {
                        return send_back_addr;
                    }
                }
            }
        }
    })
    .await
    .expect("a connects to b");
    let from = tcp_port(&seen).expect("tcp source port");
    assert_ne!(
        from, a_port,
        "a dialed from its listening port {a_port}: simultaneous dials would collide"
    );
}
