//! End-to-end: `quorate client netting …` as a desk runs it, against a live devnet
//! (real processes): create a round from the devnet's round.toml, a refused CSV
//! (nothing sent), every desk's sealed submission, close, every desk's verified
//! result against the plaintext reference, and the verified settlement.

use std::{
    path::Path,
    process::{Command, Output},
};

use quorate_protocol::netting::{reference, PartyInput, PartyResult, RoundSpec};

mod common;

use common::devnet::{exe, Devnet};

const DESKS: [&str; 3] = ["desk-a", "desk-b", "desk-c"];

/// `quorate client --url … --roster … <args>`, run in the devnet's netting dir.
fn cli(net: &Devnet, args: &[&str]) -> Output {
    let token = std::fs::read_to_string(net.data.join("admin.token")).expect("token");
    Command::new(exe())
        .args(["client", "--url", &net.url, "--roster"])
        .arg(net.data.join("roster.toml"))
        .args(args)
        .current_dir(net.data.join("netting"))
        .env("QUORATE_ADMIN_TOKEN", token.trim())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run quorate client")
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(out: &Output, what: &str) -> serde_json::Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

fn audit_mentions(data: &Path, kind: &str) -> usize {
    (1..=5)
        .map(|i| {
            std::fs::read_to_string(data.join(format!("node{i}.audit.jsonl")))
                .unwrap_or_default()
                .matches(&format!("\"{kind}\""))
                .count()
        })
        .sum()
}

#[test]
fn a_desk_nets_through_the_cli_and_bad_positions_are_refused_before_sending() {
    let net = Devnet::start();
    let nd = net.data.join("netting");

    let key = json(
        &cli(
            &net,
            &[
                "keys",
                "create",
                "--ciphersuite",
                "secp256k1-tr",
                "--threshold",
                "3",
                "--n",
                "5",
                "--min-segments",
                "3",
            ],
        ),
        "keys create",
    );
    let key_id = key["key_id"].as_str().expect("key_id").to_owned();

    let created = json(
        &cli(
            &net,
            &[
                "netting",
                "create",
                "--round-file",
                "round.toml",
                "--key",
                &key_id,
                "--client-key",
                "../client.key",
                "--json",
            ],
        ),
        "netting create",
    );
    let round = created["id"].as_str().expect("id").to_owned();
    let spec_file = nd.join(format!("{round}.round.json"));
    let spec: RoundSpec =
        serde_json::from_str(&std::fs::read_to_string(&spec_file).expect("saved spec"))
            .expect("spec json");
    assert_eq!(created["spec_digest"], hex::encode(spec.digest()));
    assert_eq!(created["state"], "open");

    // An unknown instrument: refused with line and column, nothing reaches a node.
    std::fs::write(
        nd.join("bad.csv"),
        "counterparty,instrument,quantity,cash\ndesk-b,BTC-FUT-DEC,25,0\ndesk-b,DOGE-PERP,1,0\n",
    )
    .expect("write");
    let bad = cli(
        &net,
        &[
            "netting",
            "submit",
            "--round",
            &round,
            "--party",
            "desk-a",
            "--party-key",
            "desk-a.party",
            "--positions",
            "bad.csv",
        ],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "bad CSV accepted: {stderr}");
    assert!(
        stderr.contains("line 3, column 2 (instrument): \"DOGE-PERP\" is not an instrument"),
        "{stderr}"
    );
    let status = json(
        &cli(&net, &["netting", "status", "--round", &round, "--json"]),
        "status",
    );
    assert_eq!(status["parties"][0]["name"], "desk-a");
    assert_eq!(status["parties"][0]["submitted"], false, "{status}");
    assert_eq!(audit_mentions(&net.data, "netting_bundle_accepted"), 0);
    assert_eq!(audit_mentions(&net.data, "netting_bundle_refused"), 0);

    for desk in DESKS {
        let answer = json(
            &cli(
                &net,
                &[
                    "netting",
                    "submit",
                    "--round",
                    &round,
                    "--party",
                    desk,
                    "--party-key",
                    &format!("{desk}.party"),
                    "--positions",
                    &format!("{desk}.csv"),
                    "--json",
                ],
            ),
            desk,
        );
        assert_eq!(answer["accepted_by_all"], true, "{answer}");
        assert_eq!(answer["nodes"].as_array().map(Vec::len), Some(5));
    }

    let closed = json(
        &cli(
            &net,
            &[
                "netting",
                "close",
                "--round",
                &round,
                "--client-key",
                "../client.key",
                "--wait",
                "--timeout-secs",
                "180",
                "--json",
            ],
        ),
        "close",
    );
    assert_eq!(closed["state"], "settled", "{closed}");

    let inputs: Vec<Option<PartyInput>> = DESKS
        .iter()
        .map(|d| {
            let csv = std::fs::read_to_string(nd.join(format!("{d}.csv"))).expect("csv");
            Some(PartyInput::from_csv(&csv).expect("demo csv"))
        })
        .collect();
    let expected = reference::compute(&spec, &inputs).expect("reference");
    for (p, desk) in DESKS.iter().enumerate() {
        let out = cli(
            &net,
            &[
                "netting",
                "result",
                "--round",
                &round,
                "--party",
                desk,
                "--party-key",
                &format!("{desk}.party"),
                "--json",
            ],
        );
        let result: PartyResult = serde_json::from_str(&ok(&out, desk)).expect("result json");
        let plain = expected[p].as_ref().expect("participant");
        assert!(result.culprits.is_empty(), "{result:?}");
        assert!(result.mismatches.is_empty(), "{result:?}");
        for (asset, net) in &result.multilateral {
            assert_eq!(
                i128::from(*net),
                plain.multilateral.get(asset).copied().unwrap_or(0),
                "{desk} {asset}"
            );
        }
    }
    let text = cli(
        &net,
        &[
            "netting",
            "result",
            "--round",
            &round,
            "--party",
            "desk-a",
            "--party-key",
            "desk-a.party",
        ],
    );
    let text = ok(&text, "result text");
    assert!(text.contains("multilateral nets:"), "{text}");
    assert!(text.contains("culprits: none"), "{text}");

    let settled = ok(
        &cli(&net, &["netting", "settlement", "--round", &round]),
        "settlement",
    );
    assert!(
        settled.contains("FROST signature verified under attested key"),
        "{settled}"
    );
    let view = json(
        &cli(
            &net,
            &["netting", "settlement", "--round", &round, "--json"],
        ),
        "settlement json",
    );
    let transfers = view["batch"]["transfers"].as_array().expect("transfers");
    assert_eq!(transfers.len(), 6, "{view}");
    for t in transfers {
        let p = spec
            .party_index(t["party"].as_str().expect("party"))
            .expect("party of the round");
        let asset = t["asset"].as_str().expect("asset");
        let want = expected[p]
            .as_ref()
            .and_then(|r| r.multilateral.get(asset).copied())
            .unwrap_or(0);
        assert_eq!(i128::from(t["amount"].as_i64().expect("amount")), want);
    }
}
