//! `quorate devnet`: a local network in one process.
//!
//! Every node is a separate set of protocol state machines with its own identity;
//! messages travel over an in-memory transport as signed, encoded envelopes. The
//! DKG is dealerless and each signature is checked with frost-core's verifier for
//! its suite. Multi-process nodes over libp2p replace the in-memory transport once
//! the node and coordinator daemons exist.

use std::{sync::Arc, time::Instant};

use anyhow::{ensure, Context};
use quorate_protocol::{local, Ciphersuite, NodeIdentity, SignTarget};
use rand_core::OsRng;

/// Options of `quorate devnet`.
#[derive(clap::Args)]
pub(crate) struct DevnetArgs {
    /// Number of signer nodes.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Signatures need this many nodes.
    #[arg(long, default_value_t = 3)]
    threshold: u16,
    /// Message to sign (default: a sample withdrawal).
    #[arg(long, default_value = "withdraw 0.5 BTC to bc1q-demo")]
    message: String,
    /// Also print each node's id and the full signature.
    #[arg(long)]
    demo: bool,
}

pub(crate) fn run(args: &DevnetArgs) -> anyhow::Result<()> {
    ensure!(
        args.nodes >= 2 && args.nodes <= 100,
        "--nodes must be between 2 and 100"
    );
    ensure!(
        args.threshold >= 2 && usize::from(args.threshold) <= args.nodes,
        "--threshold must be between 2 and --nodes ({})",
        args.nodes
    );
    let mut rng = OsRng;
    let nodes = local::identities(args.nodes, &mut rng);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    println!(
        "quorate devnet: {} nodes, threshold {}, in-process transport",
        args.nodes, args.threshold
    );
    if args.demo {
        for (i, n) in nodes.iter().enumerate() {
            println!("  node {} id {}", i + 1, n.node_id());
        }
    }
    // A 32-byte digest of the message: what a wallet signs (a BIP341 sighash, say).
    let digest: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(args.message.as_bytes()).into()
    };
    for suite in Ciphersuite::ALL {
        let start = Instant::now();
        let shares = local::run_dkg(&nodes, suite, args.threshold, &mut rng)
            .with_context(|| format!("{suite} DKG failed"))?;
        let dkg_time = start.elapsed();
        let public = shares[0].public.clone();
        ensure!(
            shares.iter().all(|s| s.public == public),
            "{suite}: nodes disagree on the group key"
        );
        // Sign with the last `threshold` nodes.
        let signers = nodes
            .iter()
            .cloned()
            .zip(shares)
            .skip(args.nodes - usize::from(args.threshold))
            .collect();
        let start = Instant::now();
        let target = SignTarget {
            message: digest.to_vec(),
            tweak: None,
        };
        let sig = local::run_signing(&coordinator, signers, target, &mut rng)
            .with_context(|| format!("{suite} signing failed"))?;
        let sign_time = start.elapsed();
        public
            .verify(&digest, &sig.signature, None)
            .with_context(|| format!("{suite} signature does not verify"))?;
        println!(
            "{:<13} key {}  DKG {:>6.1} ms  sign {:>5.1} ms  signature verified",
            suite.name(),
            hex::encode(&public.verifying_key),
            dkg_time.as_secs_f64() * 1e3,
            sign_time.as_secs_f64() * 1e3,
        );
        if args.demo {
            println!("              signature {}", hex::encode(&sig.signature));
        }
    }
    println!("message sha256 {}", hex::encode(digest));
    Ok(())
}
