//! libp2p connection limits: connections beyond `max_connections_per_peer` are
//! refused by the listener, and the first one keeps working.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        ListenError, SwarmEvent,
    },
    Multiaddr,
};
use quorate_node::transport::{self, Limits};
use quorate_protocol::NodeIdentity;
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_peer_limit_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
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
    let strict = Limits {
        max_connections_per_peer: 1,
        ..Limits::default()
    };
    // a itself would allow more, so only b's limit can refuse the extra ones.
    let lax = Limits {
        max_connections_per_peer: 8,
        ..Limits::default()
    };
    let mut a = transport::build_swarm(&a_id, [pb], lax).expect("swarm a");
    let mut b = transport::build_swarm(&b_id, [pa], strict).expect("swarm b");
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen b");
    let b_addr: Multiaddr = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(SwarmEvent::NewListenAddr { address, .. }) = b.next().await {
                return address;
            }
        }
    })
    .await
    .expect("b listening");
    for _ in 0..3 {
        let opts = DialOpts::peer_id(pb)
            .condition(PeerCondition::Always)
            .addresses(vec![b_addr.clone()])
            .allocate_new_port()
            .build();
        a.dial(opts).expect("dial");
    }
    let mut established = 0u32;
    let mut denied = 0u32;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
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
            if established + denied >= 3 {
                break;
            }
        }
    })
    .await;
    assert_eq!(established, 1, "only one connection from a is accepted");
    assert_eq!(denied, 2, "the extra connections are refused");
    assert!(b.is_connected(&pa), "the first connection stays up");
}
