//! `quorate node`, `quorate keystore …`, `quorate audit …`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use quorate_node::{
    audit,
    config::{LogFormat, NodeConfig},
    keystore::{KdfParams, Keystore, PassphraseSource, SealedKeystore},
};
use quorate_protocol::NodeIdentity;
use rand_core::OsRng;

/// Where a passphrase comes from on the command line.
#[derive(clap::Args)]
pub(crate) struct PassphraseArgs {
    /// Read the passphrase from this environment variable.
    #[arg(long, conflicts_with = "passphrase_file")]
    passphrase_env: Option<String>,
    /// Read the passphrase from this file.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

impl PassphraseArgs {
    pub(crate) fn source(&self) -> PassphraseSource {
        match (&self.passphrase_env, &self.passphrase_file) {
            (Some(v), _) => PassphraseSource::Env(v.clone()),
            (_, Some(f)) => PassphraseSource::File(f.clone()),
            _ => PassphraseSource::Prompt,
        }
    }
}

/// `quorate keystore …`
#[derive(clap::Subcommand)]
pub(crate) enum KeystoreCmd {
    /// Create a keystore with a fresh node identity (refuses to overwrite).
    Init {
        /// Keystore file.
        path: PathBuf,
        #[command(flatten)]
        pass: PassphraseArgs,
        /// Weak KDF parameters, for tests and local devnets only.
        #[arg(long, hide = true)]
        insecure_fast_kdf: bool,
    },
    /// Show what can be seen without the passphrase.
    Status {
        /// Keystore file.
        path: PathBuf,
    },
    /// Check the passphrase and every record (the node does the same at start).
    Unseal {
        /// Keystore file.
        path: PathBuf,
        #[command(flatten)]
        pass: PassphraseArgs,
    },
    /// List key shares (public metadata only).
    List {
        /// Keystore file.
        path: PathBuf,
        #[command(flatten)]
        pass: PassphraseArgs,
    },
    /// Recovery keys that backups are encrypted to (ML-KEM-768 + X25519).
    #[command(subcommand)]
    RecoveryKey(crate::backup_cmd::RecoveryKeyCmd),
    /// Export the node identity and key shares, encrypted to recovery keys.
    Backup(crate::backup_cmd::BackupArgs),
    /// Show a backup's public header (node, keys, recipients, time).
    BackupInfo {
        /// Backup file.
        file: PathBuf,
    },
    /// Restore a backup into this node's keystore, or into a new one (`--create`).
    Restore(crate::backup_cmd::RestoreArgs),
}

/// `quorate roster …` (the roster authority's tools).
#[derive(clap::Subcommand)]
pub(crate) enum RosterCmd {
    /// Create a roster authority key (hex Ed25519 secret, mode 0600; refuses to
    /// overwrite) and print its public key for `roster_authority`.
    Keygen {
        /// Secret key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a roster: writes `<roster>.sig`, the hex Ed25519 signature of
    /// "quorate/roster/v1\0" ‖ epoch (u64 big-endian) ‖ the file's bytes.
    Sign {
        /// Roster file.
        roster: PathBuf,
        /// Roster authority secret key file (from `quorate roster keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a roster and its `.sig` against the authority public key.
    Verify {
        /// Roster file.
        roster: PathBuf,
        /// Roster authority public key (hex).
        #[arg(long)]
        authority: String,
    },
}

/// `quorate audit …`
#[derive(clap::Subcommand)]
pub(crate) enum AuditCmd {
    /// Check the hash chain and every signature; report the first bad entry.
    Verify {
        /// Audit log file.
        log: PathBuf,
        /// Expected node id (hex); without it the first entry's node is trusted.
        #[arg(long)]
        node: Option<String>,
    },
    /// Print entries as JSON lines for an auditor.
    Export {
        /// Audit log file.
        log: PathBuf,
        /// Only entries at or after this Unix time in milliseconds.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
}

pub(crate) fn keystore(cmd: KeystoreCmd) -> anyhow::Result<()> {
    match cmd {
        KeystoreCmd::Init {
            path,
            pass,
            insecure_fast_kdf,
        } => {
            let passphrase = pass.source().read()?;
            let identity = NodeIdentity::generate(&mut OsRng);
            let kdf = if insecure_fast_kdf {
                KdfParams::insecure_for_tests()
            } else {
                KdfParams::production()
            };
            let ks = Keystore::init(&path, &passphrase, &identity, kdf, &mut OsRng)?;
            let public = identity.public();
            println!("keystore created: {}", path.display());
            println!("node_id  = \"{}\"", public.node);
            println!("seal_key = \"{}\"", hex::encode(public.seal_key));
            drop(ks);
        }
        KeystoreCmd::Status { path } => {
            let status = SealedKeystore::open(&path)?.status()?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        KeystoreCmd::Unseal { path, pass } => {
            let ks = SealedKeystore::open(&path)?.unseal(&pass.source().read()?)?;
            println!(
                "unsealed: node {} with {} key share(s); every record authenticated",
                ks.node_id(),
                ks.keys()?.len()
            );
        }
        KeystoreCmd::List { path, pass } => {
            let ks = SealedKeystore::open(&path)?.unseal(&pass.source().read()?)?;
            for k in ks.keys()? {
                println!("{}", serde_json::to_string(&k.summary())?);
            }
        }
        KeystoreCmd::RecoveryKey(cmd) => crate::backup_cmd::recovery_key(cmd)?,
        KeystoreCmd::Backup(args) => crate::backup_cmd::backup(args)?,
        KeystoreCmd::BackupInfo { file } => crate::backup_cmd::backup_info(&file)?,
        KeystoreCmd::Restore(args) => crate::backup_cmd::restore(args)?,
    }
    Ok(())
}

pub(crate) fn roster(cmd: RosterCmd) -> anyhow::Result<()> {
    use quorate_protocol::roster::{self, Roster};
    match cmd {
        RosterCmd::Keygen { out } => {
            use std::os::unix::fs::OpenOptionsExt;
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let secret = zeroize::Zeroizing::new(hex::encode(key.to_bytes()));
            std::io::Write::write_all(&mut f, secret.as_bytes())?;
            println!(
                "roster_authority = \"{}\"",
                hex::encode(key.verifying_key().to_bytes())
            );
        }
        RosterCmd::Sign { roster: path, key } => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&key)
                    .with_context(|| format!("cannot read {}", key.display()))?,
            );
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.trim(), seed.as_mut())
                .context("the key file must hold 32 bytes of hex")?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let (epoch, sig) = roster::sign_roster(&bytes, &key)?;
            let mut sig_path = path.clone().into_os_string();
            sig_path.push(".sig");
            std::fs::write(&sig_path, hex::encode(sig))?;
            println!(
                "signed {} (epoch {epoch}): {}",
                path.display(),
                PathBuf::from(sig_path).display()
            );
        }
        RosterCmd::Verify {
            roster: path,
            authority,
        } => {
            let mut pk = [0u8; 32];
            hex::decode_to_slice(&authority, &mut pk).context("--authority: 32 bytes of hex")?;
            let r = Roster::load(&path, Some(&pk))?;
            println!(
                "ok: epoch {}, {} nodes, {} coordinators, signature valid",
                r.epoch(),
                r.signers().count(),
                r.coordinators().count()
            );
        }
    }
    Ok(())
}

pub(crate) fn audit(cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Verify { log, node } => {
            let node = node
                .map(|n| quorate_protocol::NodeId::from_hex(&n))
                .transpose()
                .context("--node")?;
            let report = audit::verify(&log, node)?;
            match &report.first_bad {
                None => println!("ok: {} entries, chain and signatures valid", report.entries),
                Some(bad) => bail!(
                    "{}: entry at line {} (seq {:?}) is bad: {}",
                    log.display(),
                    bad.line,
                    bad.seq,
                    bad.reason
                ),
            }
        }
        AuditCmd::Export { log, since } => {
            let mut out = std::io::stdout().lock();
            audit::export_to(&log, since, &mut out)?;
        }
    }
    Ok(())
}

/// `quorate node --config node.toml`
#[derive(clap::Args)]
pub(crate) struct NodeArgs {
    /// Node configuration file.
    #[arg(long, short)]
    config: PathBuf,
}

pub(crate) fn node(args: &NodeArgs) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Pretty => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(quorate_node::service::run(config))
        .map_err(anyhow::Error::msg)
}
