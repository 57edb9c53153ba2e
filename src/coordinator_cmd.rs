//! `quorate coordinator` and `quorate client …`.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use quorate_coordinator::{
    api::model::{CreateKeyBody, KeyView, ParticipantsBody},
    client::{verify_job, verify_key, Client, ClientOptions, RequestBuilder, SignOptions},
    config::CoordinatorConfig,
};
use quorate_protocol::{roster::Roster, Ciphersuite, KeyId};

/// `quorate coordinator --config coordinator.toml`
#[derive(clap::Args)]
pub(crate) struct CoordinatorArgs {
    /// Coordinator configuration file.
    #[arg(long, short)]
    config: PathBuf,
}

pub(crate) fn coordinator(args: &CoordinatorArgs) -> anyhow::Result<()> {
    let config = CoordinatorConfig::load(&args.config)?;
    crate::init_logging(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        quorate_coordinator::run::run(config, shutdown).await
    })?;
    Ok(())
}

/// `quorate client …`: what an exchange integration does, from the shell.
#[derive(clap::Args)]
pub(crate) struct ClientArgs {
    /// Coordinator base URL.
    #[arg(long, env = "QUORATE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Pinned roster file: keys are trusted only when every committee member listed
    /// in it attested them. Required by `sign` and `verify`.
    #[arg(long, env = "QUORATE_ROSTER")]
    roster: Option<PathBuf>,
    /// Roster authority key (32 bytes hex): when set, `<roster>.sig` must verify
    /// under it.
    #[arg(long, env = "QUORATE_ROSTER_AUTHORITY")]
    roster_authority: Option<String>,
    /// PEM CA bundle to trust for an https:// URL (only these CAs, not the web roots).
    #[arg(long, env = "QUORATE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// PEM file with this client's TLS certificate chain and PKCS#8 key, for a
    /// coordinator that requires client certificates.
    #[arg(long, env = "QUORATE_CLIENT_CERT")]
    client_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: ClientCmd,
}

#[derive(clap::Subcommand)]
enum ClientCmd {
    /// Generate a client key pair (secret to a file, public key printed).
    Keygen {
        /// Where to write the 32-byte secret key (hex).
        #[arg(long)]
        out: PathBuf,
    },
    /// Manage keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// MPC netting: party keys, rounds, a desk's sealed positions, verified
    /// results and the verified settlement.
    #[command(subcommand)]
    Netting(crate::netting_cmd::NettingCmd),
    /// Sign messages with a key (client-signed request, waits for the result).
    Sign {
        /// Key id (hex).
        #[arg(long)]
        key: String,
        /// Client secret key file (from `keygen`).
        #[arg(long)]
        client_key: PathBuf,
        /// Messages to sign, hex (repeat for a batch): a raw request, which the
        /// client's node policy must allow (`allow_raw`).
        #[arg(
            long = "message",
            required_unless_present = "psbt",
            conflicts_with = "psbt"
        )]
        messages: Vec<String>,
        /// Sign a Bitcoin transaction: a PSBT file (BIP174 or BIP370; binary,
        /// base64 or hex). Prints the signed PSBT (base64) and, when every input
        /// is signed, the transaction (hex).
        #[arg(long)]
        psbt: Option<PathBuf>,
        /// The PSBT's network: mainnet, testnet, signet or regtest.
        #[arg(long, requires = "psbt")]
        network: Option<String>,
        /// An input of the PSBT to sign (repeat; default: every input spending
        /// this key's outputs).
        #[arg(long = "input", requires = "psbt")]
        inputs: Vec<u32>,
        /// Asset code for policy.
        #[arg(long, default_value = "BTC")]
        asset: String,
        /// Amount in minor units.
        #[arg(long, default_value_t = 0)]
        amount: u64,
        /// Destination for policy.
        #[arg(long, default_value = "")]
        destination: String,
        /// Idempotency key.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Verify a signature under a key, after checking the key's attestations
    /// against the pinned roster (refused without --roster).
    Verify {
        /// Key id (hex).
        #[arg(long)]
        key: String,
        /// Message (hex).
        #[arg(long)]
        message: String,
        /// Signature (hex).
        #[arg(long)]
        signature: String,
    },
}

#[derive(clap::Subcommand)]
enum KeysCmd {
    /// Run a DKG (admin token from --admin-token or QUORATE_ADMIN_TOKEN).
    Create {
        /// secp256k1, secp256k1-tr or ed25519.
        #[arg(long)]
        ciphersuite: Ciphersuite,
        /// Signatures need this many nodes.
        #[arg(long)]
        threshold: u16,
        /// Number of participants (any healthy nodes).
        #[arg(long)]
        n: usize,
        /// Participants must span at least this many segments.
        #[arg(long, default_value_t = 1)]
        min_segments: usize,
        /// Data residency: a roster segment the key's shares may live in (repeat;
        /// none: any).
        #[arg(long = "segment")]
        segments: Vec<String>,
        /// Admin bearer token.
        #[arg(long, env = "QUORATE_ADMIN_TOKEN")]
        admin_token: String,
    },
    /// List keys.
    List,
    /// Show one key.
    Show {
        /// Key id (hex).
        key: String,
    },
    /// Refresh or reshare: propose, inspect, approve, apply an operation.
    #[command(flatten)]
    Lifecycle(crate::lifecycle_cmd::LifecycleCmd),
}

pub(crate) fn read_secret(path: &std::path::Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut sk = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut sk)
        .context("client key file must hold 32 bytes of hex")?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&sk))
}

pub(crate) fn client(args: ClientArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(client_async(args))
}

/// Loads the pinned roster (verifying its `.sig` when an authority key is given).
fn pinned_roster(args: &ClientArgs) -> anyhow::Result<Option<Roster>> {
    let Some(path) = &args.roster else {
        if args.roster_authority.is_some() {
            bail!("--roster-authority needs --roster");
        }
        return Ok(None);
    };
    let authority = match &args.roster_authority {
        Some(h) => {
            let mut k = [0u8; 32];
            hex::decode_to_slice(h.trim(), &mut k)
                .context("--roster-authority must be 32 bytes of hex")?;
            Some(k)
        }
        None => None,
    };
    Ok(Some(Roster::load(path, authority.as_ref()).with_context(
        || format!("pinned roster {}", path.display()),
    )?))
}

/// The roster, or a refusal: `sign` and `verify` never use an unattested key.
pub(crate) fn require_roster(roster: Option<&Roster>, what: &str) -> anyhow::Result<Roster> {
    roster.cloned().with_context(|| {
        format!(
            "{what} needs a pinned roster to check the key's attestations: pass --roster \
             (or QUORATE_ROSTER); a key is never taken on the coordinator's word"
        )
    })
}

/// Checks a key view when a roster is pinned; warns loudly when none is.
fn report_attestation(view: &KeyView, roster: Option<&Roster>) -> anyhow::Result<()> {
    match roster {
        Some(r) => {
            verify_key(view, r)?;
            eprintln!(
                "key {} attested by all {} committee members of the pinned roster",
                view.key_id,
                view.participants.len()
            );
        }
        None => eprintln!(
            "WARNING: key {} NOT verified (no --roster): this is only what the coordinator says",
            view.key_id
        ),
    }
    Ok(())
}

async fn client_async(args: ClientArgs) -> anyhow::Result<()> {
    let roster = pinned_roster(&args)?;
    let mut options = ClientOptions::default();
    if let Some(ca) = &args.ca_cert {
        options = options.ca_cert_file(ca)?;
    }
    if let Some(id) = &args.client_cert {
        options = options.client_identity_file(id)?;
    }
    let url = reqwest::Url::parse(&args.url).with_context(|| format!("--url {}", args.url))?;
    if url.scheme() == "http" {
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            eprintln!(
                "WARNING: {} is plain HTTP: requests and answers travel unprotected",
                args.url
            );
        }
    }
    let client = Client::with_options(args.url.clone(), options)?;
    match args.command {
        ClientCmd::Netting(cmd) => crate::netting_cmd::run(&client, roster.as_ref(), cmd).await?,
        ClientCmd::Keygen { out } => {
            if out.exists() {
                bail!("{} exists; refusing to overwrite a key", out.display());
            }
            let sk = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
            std::fs::write(&out, hex::encode(sk.to_bytes()))?;
            println!("{}", hex::encode(sk.verifying_key().to_bytes()));
        }
        ClientCmd::Keys(KeysCmd::Create {
            ciphersuite,
            threshold,
            n,
            min_segments,
            segments,
            admin_token,
        }) => {
            let body = CreateKeyBody {
                ciphersuite,
                threshold,
                participants: ParticipantsBody::Spanning { n, min_segments },
                segments,
            };
            let key = client
                .with_admin_token(admin_token)
                .create_key(&body)
                .await?;
            println!("{}", serde_json::to_string_pretty(&key)?);
            report_attestation(&key, roster.as_ref())?;
        }
        ClientCmd::Keys(KeysCmd::Lifecycle(cmd)) => {
            crate::lifecycle_cmd::run(client, roster.as_ref(), cmd).await?;
        }
        ClientCmd::Keys(KeysCmd::List) => {
            for k in client.list_keys().await? {
                println!(
                    "{}  {:<13} {}-of-{}  {}",
                    k.key_id,
                    k.ciphersuite.name(),
                    k.threshold,
                    k.participants.len(),
                    k.verifying_key
                );
            }
        }
        ClientCmd::Keys(KeysCmd::Show { key }) => {
            let view = client.get_key(&key).await?;
            println!("{}", serde_json::to_string_pretty(&view)?);
            report_attestation(&view, roster.as_ref())?;
        }
        ClientCmd::Sign {
            key,
            client_key,
            messages,
            psbt,
            network,
            inputs,
            asset,
            amount,
            destination,
            idempotency_key,
        } => {
            let roster = require_roster(roster.as_ref(), "sign")?;
            let sk = read_secret(&client_key)?;
            // Check the key before asking for anything under it.
            let attested = client.get_attested_key(&key, &roster).await?;
            let key_id = KeyId::from_hex(&key)?;
            let builder = match &psbt {
                Some(path) => crate::psbt_cmd::request(
                    RequestBuilder::new(key_id),
                    path,
                    network.as_deref(),
                    inputs,
                    attested.public(),
                )?,
                None => {
                    let msgs = messages
                        .iter()
                        .map(|m| {
                            hex::decode(m).with_context(|| format!("message {m:?} is not hex"))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    RequestBuilder::new(key_id).messages(msgs)
                }
            };
            let signed = builder
                .purpose(asset, amount, destination, "")
                .expires_in(Duration::from_secs(300))
                .sign(&sk);
            let mut opts = SignOptions::wait(Duration::from_secs(60));
            if let Some(k) = idempotency_key {
                opts = opts.idempotency_key(k);
            }
            let job = client.sign(&key, &signed, opts).await?;
            let job = client
                .poll_until_done(
                    &job.id,
                    Duration::from_millis(200),
                    Duration::from_secs(120),
                )
                .await?;
            verify_job(&attested, &signed.request, &job)?;
            if psbt.is_some() {
                crate::psbt_cmd::print(&job)?;
                eprintln!("every signature and input verified against attested key {key}");
                return Ok(());
            }
            println!("{}", serde_json::to_string_pretty(&job)?);
            eprintln!("every signature verified against attested key {key}");
        }
        ClientCmd::Verify {
            key,
            message,
            signature,
        } => {
            let roster = require_roster(roster.as_ref(), "verify")?;
            let attested = client.get_attested_key(&key, &roster).await?;
            let public = attested.public();
            let msg = hex::decode(&message).context("--message is not hex")?;
            let sig = hex::decode(&signature).context("--signature is not hex")?;
            quorate_coordinator::client::verify_signature(public, &msg, &sig, None)?;
            println!("valid");
        }
    }
    Ok(())
}
