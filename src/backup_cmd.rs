//! `quorate keystore recovery-key …`, `backup`, `backup-info`, `restore`: thin
//! wrappers over `quorate_node::backup`.

use std::path::PathBuf;

use anyhow::Context;
use quorate_node::{
    backup::{self, RecoveryPublicKey, RecoverySecretKey, RestoreOptions},
    keystore::{KdfParams, Passphrase, PassphraseSource, SealedKeystore},
};
use quorate_protocol::KeyId;
use rand_core::OsRng;

use crate::node_cmd::PassphraseArgs;

/// Where the recovery key's passphrase comes from (restore).
#[derive(clap::Args)]
pub(crate) struct RecoveryPassphraseArgs {
    /// Read the recovery key's passphrase from this environment variable.
    #[arg(long, conflicts_with = "recovery_passphrase_file")]
    recovery_passphrase_env: Option<String>,
    /// Read the recovery key's passphrase from this file.
    #[arg(long)]
    recovery_passphrase_file: Option<PathBuf>,
}

impl RecoveryPassphraseArgs {
    fn read(&self) -> anyhow::Result<Passphrase> {
        Ok(
            match (
                &self.recovery_passphrase_env,
                &self.recovery_passphrase_file,
            ) {
                (Some(v), _) => Passphrase::from_env(v)?,
                (_, Some(f)) => Passphrase::from_file(f)?,
                _ => Passphrase::prompt("Recovery key passphrase: ")?,
            },
        )
    }
}

/// A passphrase for something being created: prompted twice.
fn new_passphrase(source: PassphraseSource, prompt: &str) -> anyhow::Result<Passphrase> {
    Ok(match source {
        PassphraseSource::Prompt => Passphrase::prompt_confirmed(prompt)?,
        other => other.read()?,
    })
}

fn kdf(insecure_fast_kdf: bool) -> KdfParams {
    if insecure_fast_kdf {
        KdfParams::insecure_for_tests()
    } else {
        KdfParams::production()
    }
}

fn key_ids(keys: &[String]) -> anyhow::Result<Vec<KeyId>> {
    keys.iter()
        .map(|k| KeyId::from_hex(k).with_context(|| format!("--key {k}")))
        .collect()
}

/// `quorate keystore recovery-key …`
#[derive(clap::Subcommand)]
pub(crate) enum RecoveryKeyCmd {
    /// Create a recovery key pair (ML-KEM-768 + X25519): the secret sealed under a
    /// passphrase (mode 0600) and the public key to encrypt backups to. Refuses to
    /// overwrite either file.
    New {
        /// Secret key file to create (sealed with Argon2id + ChaCha20-Poly1305).
        #[arg(long)]
        out: PathBuf,
        /// Public key file to create (default: `<out>.pub`).
        #[arg(long)]
        public_out: Option<PathBuf>,
        #[command(flatten)]
        pass: PassphraseArgs,
        /// Weak KDF parameters, for tests only.
        #[arg(long, hide = true)]
        insecure_fast_kdf: bool,
    },
    /// Check a recovery public key file and print its fingerprint.
    Show {
        /// Public key file.
        public: PathBuf,
    },
}

/// `quorate keystore backup`
#[derive(clap::Args)]
pub(crate) struct BackupArgs {
    /// Keystore file (unsealed with its passphrase; the node must not be running).
    path: PathBuf,
    /// Recovery public key file to encrypt to (repeat for several; any one of them
    /// can restore).
    #[arg(long = "to", required = true)]
    to: Vec<PathBuf>,
    /// Back up only this key (hex id; repeat). Default: every key.
    #[arg(long = "key")]
    keys: Vec<String>,
    /// Backup file to create (refuses to overwrite).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    pass: PassphraseArgs,
}

/// `quorate keystore restore`
#[derive(clap::Args)]
pub(crate) struct RestoreArgs {
    /// Keystore file to restore into: an existing keystore of the same node, or with
    /// `--create` a new one holding the backed-up node identity.
    path: PathBuf,
    /// Backup file (from `quorate keystore backup`).
    #[arg(long)]
    backup: PathBuf,
    /// Recovery secret key file (from `quorate keystore recovery-key new`).
    #[arg(long)]
    recovery_key: PathBuf,
    /// Create the keystore (refuses an existing file); its passphrase is the
    /// keystore passphrase given.
    #[arg(long)]
    create: bool,
    /// Restore only this key (hex id; repeat). Default: every key in the backup.
    #[arg(long = "key")]
    keys: Vec<String>,
    /// Replace keys already in the keystore (only by a share of the same group key).
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    pass: PassphraseArgs,
    #[command(flatten)]
    recovery_pass: RecoveryPassphraseArgs,
    /// Weak KDF parameters for a keystore made with `--create`, for tests only.
    #[arg(long, hide = true, requires = "create")]
    insecure_fast_kdf: bool,
}

pub(crate) fn recovery_key(cmd: RecoveryKeyCmd) -> anyhow::Result<()> {
    match cmd {
        RecoveryKeyCmd::New {
            out,
            public_out,
            pass,
            insecure_fast_kdf,
        } => {
            let public_out = public_out.unwrap_or_else(|| {
                let mut p = out.clone().into_os_string();
                p.push(".pub");
                p.into()
            });
            let passphrase = new_passphrase(pass.source(), "Recovery key passphrase: ")?;
            let public = backup::create_recovery_key_files(
                &out,
                &public_out,
                &passphrase,
                kdf(insecure_fast_kdf),
                &mut OsRng,
            )?;
            println!(
                "recovery secret key: {} (sealed; keep it offline, with its passphrase apart)",
                out.display()
            );
            println!("recovery public key: {}", public_out.display());
            println!("fingerprint = \"{}\"", hex::encode(public.fingerprint()));
        }
        RecoveryKeyCmd::Show { public } => {
            let key = RecoveryPublicKey::load(&public)
                .with_context(|| format!("recovery public key {}", public.display()))?;
            println!("fingerprint = \"{}\"", hex::encode(key.fingerprint()));
        }
    }
    Ok(())
}

pub(crate) fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let keys = key_ids(&args.keys)?;
    let recipients = args
        .to
        .iter()
        .map(|p| {
            RecoveryPublicKey::load(p)
                .with_context(|| format!("recovery public key {}", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ks = SealedKeystore::open(&args.path)?.unseal(&args.pass.source().read()?)?;
    let header = backup::write_backup_file(&ks, &recipients, &keys, &args.out, &mut OsRng)?;
    println!("backup written: {}", args.out.display());
    println!(
        "node {} with its identity and {} key share(s), encrypted to {} recovery key(s):",
        header.node_id,
        header.key_ids.len(),
        header.recipients.len()
    );
    for fp in &header.recipients {
        println!("  {}", hex::encode(fp));
    }
    for k in &header.key_ids {
        println!("  key {k}");
    }
    Ok(())
}

pub(crate) fn backup_info(file: &std::path::Path) -> anyhow::Result<()> {
    let header = backup::read_backup_header(file)?;
    let v: serde_json::Value = serde_json::from_str(&header.to_json())?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub(crate) fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let opts = RestoreOptions {
        keys: key_ids(&args.keys)?,
        overwrite: args.overwrite,
    };
    let recovery_pass = args.recovery_pass.read()?;
    let secret = RecoverySecretKey::load(&args.recovery_key, &recovery_pass)
        .with_context(|| format!("recovery secret key {}", args.recovery_key.display()))?;
    drop(recovery_pass);
    let opened = backup::open_backup_file(&args.backup, &secret)
        .with_context(|| format!("backup {}", args.backup.display()))?;
    drop(secret);
    let report = if args.create {
        let passphrase = new_passphrase(args.pass.source(), "New keystore passphrase: ")?;
        backup::restore_new(
            &args.path,
            &passphrase,
            kdf(args.insecure_fast_kdf),
            &opened,
            &opts,
            &mut OsRng,
        )?
        .1
    } else {
        let ks = SealedKeystore::open(&args.path)?.unseal(&args.pass.source().read()?)?;
        backup::restore_into(&ks, &opened, &opts)?
    };
    for k in &report.restored {
        let replaced = if report.replaced.iter().any(|r| r.to_string() == k.key_id) {
            " (replaced)"
        } else {
            ""
        };
        println!(
            "restored key {} ({}, {}-of-{}, index {}){replaced}",
            k.key_id, k.suite, k.threshold, k.participants, k.index
        );
    }
    println!(
        "keystore {}: node {}, {} key share(s) restored, roster epoch {}",
        args.path.display(),
        report.node_id,
        report.restored.len(),
        report.roster_epoch
    );
    Ok(())
}
