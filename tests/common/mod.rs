//! Helpers shared by the process-level tests.
#![allow(dead_code, unreachable_pub)]

use std::net::{TcpListener, UdpSocket};

/// A base port such that `base + o` is free (TCP and UDP) for every offset, chosen
/// *below* the kernel's ephemeral range: ports handed out by `bind(0)` come from
/// that range, and any outgoing connection on the machine may take one of them as
/// its source port between this check and the process that binds it (seen as a
/// devnet node exiting at start-up with "address in use").
pub fn port_block(offsets: &[u16]) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let span = offsets.iter().copied().max().unwrap_or(0);
    let low = 10_000u16;
    let high = ephemeral_low.saturating_sub(span + 1).max(low + 1_000);
    // Spread parallel test processes over the range.
    let mut state = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..500 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let base = low + ((state >> 33) % u64::from(high - low)) as u16;
        let free = offsets.iter().all(|o| {
            TcpListener::bind(("127.0.0.1", base + o)).is_ok()
                && UdpSocket::bind(("127.0.0.1", base + o)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port block below the ephemeral range");
}

pub mod devnet;
