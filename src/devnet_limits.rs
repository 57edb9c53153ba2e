//! `devnet --demo`'s limit-checked round: the demo desks' positions again, now with
//! collateral and credit limits per asset, where the desk with the largest USD debit
//! is one minor unit short. The nodes decide coverage on shares; the round ends
//! `not_covered` with the nodes' signed verdict naming that desk (the round reveals
//! failures), nobody learns a net, collateral or limit, and every desk opens its own
//! bits, checked against the plaintext. Runs when the key's committee allows limit
//! checks (`2(t − 1) < n`).

use std::{path::Path, time::Duration};

use anyhow::{ensure, Context};
use quorate_coordinator::{
    client::{AttestedKey, Client},
    protocol::{
        netting::{input::Cover, limits, reference, round::LimitSettings, PartyInput},
        roster::Roster,
    },
};

use crate::{
    devnet_netting::{netting_dir, DESKS},
    netting_files::{self as files, PartyKey, RoundFile},
};

/// Runs the limit-checked demo round, or says why it is skipped.
pub(crate) async fn demo(
    api: &Client,
    dir: &Path,
    roster: &Roster,
    client: &ed25519_dalek::SigningKey,
    key: &AttestedKey,
) -> anyhow::Result<()> {
    let n = key.public().members.len();
    let t = usize::from(key.public().threshold);
    if limits::check_committee(n, t).is_err() {
        println!(
            "limit checks: skipped (a key of {n} nodes at threshold {t}; they need 2(t-1) < n)"
        );
        return Ok(());
    }
    let nd = netting_dir(dir);
    let mut spec = RoundFile::load(&nd.join("round.toml"))?.build(key, roster)?;
    spec.limits = Some(LimitSettings {
        max_cover: 1 << 40,
        reveal_failures: true,
        efficiency: true,
    });
    spec.validate().context("limit-checked demo round")?;
    let mut inputs: Vec<Option<PartyInput>> = vec![None; spec.parties.len()];
    for desk in DESKS {
        let p = spec.party_index(desk).context("demo desk missing")?;
        inputs[p] = Some(files::load_positions(
            &nd.join(format!("{desk}.csv")),
            &spec,
            p,
        )?);
    }
    // Cover every debit exactly, except the largest USD debit: one unit short.
    let plain = reference::compute(&spec, &inputs)?;
    let short = plain
        .iter()
        .enumerate()
        .filter_map(|(p, r)| Some((p, *r.as_ref()?.multilateral.get("USD")?)))
        .min_by_key(|(_, net)| *net)
        .filter(|(_, net)| *net < 0)
        .map(|(p, _)| p)
        .context("no desk owes USD in the demo positions")?;
    for (p, input) in inputs.iter_mut().enumerate() {
        let (Some(input), Some(r)) = (input.as_mut(), plain[p].as_ref()) else {
            continue;
        };
        for (asset, net) in &r.multilateral {
            if *net < 0 {
                let need = i64::try_from(-net)?;
                let short_by = i64::from(p == short && asset == "USD");
                input.cover.push(Cover {
                    asset: asset.clone(),
                    collateral: need / 2,
                    limit: need - need / 2 - short_by,
                });
            }
        }
    }
    let spec_path = nd.join(files::default_spec_path(&spec.id));
    files::save_spec(&spec, &spec_path)?;
    api.create_round(&spec, client)
        .await
        .context("limits: creating the round")?;
    let mut keys = Vec::new();
    for desk in DESKS {
        let p = spec.party_index(desk).context("demo desk missing")?;
        let party = PartyKey::load(&nd.join(format!("{desk}.party")))?;
        let input = inputs[p].as_ref().context("input")?;
        let answer = api
            .deal_and_submit(&spec, desk, &party.sign, input)
            .await
            .with_context(|| format!("limits: {desk}'s bundle"))?;
        ensure!(
            answer.accepted_by_all,
            "limits: {desk}'s bundle not held by every node: {:?}",
            answer.nodes
        );
        keys.push((desk, p, party));
    }
    let mut view = api
        .close_round(&spec.id, client, Some(Duration::from_secs(60)))
        .await
        .context("limits: close")?;
    if view.state != "not_covered" {
        view = api
            .poll_round(
                &spec.id,
                Duration::from_millis(250),
                Duration::from_secs(120),
            )
            .await?;
    }
    ensure!(
        view.state == "not_covered",
        "limits: round {} ended {} (expected not_covered): {}",
        spec.id,
        view.state,
        view.failure.map(|f| f.detail).unwrap_or_default()
    );
    let verdict = api
        .verified_verdict(&spec, key, roster)
        .await
        .context("limits: verdict")?;
    let short_name = spec.parties[short].name.clone();
    ensure!(
        !verdict.covered && verdict.failed == vec![short_name.clone()],
        "limits: the verdict names {:?}, the plaintext says {short_name} is short",
        verdict.failed
    );
    for (desk, p, party) in &keys {
        let (_, bits) = api
            .verified_result_with_limits(&spec, desk, &party.sign, &party.seal)
            .await
            .with_context(|| format!("limits: {desk}'s result"))?;
        for b in bits.context("limits: no bits in a limit-checked round")? {
            let net = plain[*p]
                .as_ref()
                .and_then(|r| r.multilateral.get(&b.asset))
                .copied()
                .unwrap_or(0);
            let cover: i128 = inputs[*p]
                .as_ref()
                .and_then(|i| i.cover.iter().find(|c| c.asset == b.asset))
                .map_or(0, |c| i128::from(c.collateral) + i128::from(c.limit));
            ensure!(
                b.covered == Some(net + cover >= 0),
                "limits: {desk}'s {} bit is {:?}, the plaintext says {}",
                b.asset,
                b.covered,
                net + cover >= 0
            );
        }
    }
    println!(
        "limit-checked round {} not settled: {short_name} not covered (verdict signed by {} nodes, verified), every desk opened its own bits",
        spec.id,
        verdict.signers.len()
    );
    Ok(())
}
