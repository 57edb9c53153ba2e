//! The network under load: a devnet this command starts, a running devnet's data
//! directory, or any coordinator URL with a client key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use quorate_coordinator::client::Client;
use quorate_protocol::roster::Roster;

use super::NetArgs;
use crate::devnet::{self, DevnetArgs};

/// Everything a bench run needs from the network.
pub(crate) struct Target {
    /// API client (with the admin token when there is one: key creation needs it).
    pub(crate) api: Client,
    /// The client key requests are signed with (`None` when the bench signs
    /// nothing and none was given).
    pub(crate) client: Option<SigningKey>,
    /// The pinned roster keys are checked against.
    pub(crate) roster: Roster,
    /// `(name, pid)` of the local processes to meter.
    pub(crate) processes: Vec<(String, u32)>,
    /// The devnet's data directory (operator keys live there), if it is one.
    pub(crate) devnet_dir: Option<PathBuf>,
    /// A devnet this run started (stopped on drop) and its temporary directory.
    spawned: Option<(devnet::Running, Option<PathBuf>)>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some((net, remove)) = self.spawned.take() {
            drop(net);
            if let Some(dir) = remove {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read client key {}", path.display()))?;
    let mut sk = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut sk)
        .with_context(|| format!("{}: not a 32-byte hex Ed25519 key", path.display()))?;
    Ok(SigningKey::from_bytes(&sk))
}

/// The process ids a devnet data directory records (`logs/<name>.pid`).
fn devnet_pids(dir: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for i in 1.. {
        let name = format!("node{i}");
        let Ok(pid) = std::fs::read_to_string(dir.join("logs").join(format!("{name}.pid"))) else {
            break;
        };
        if let Ok(pid) = pid.trim().parse() {
            out.push((name, pid));
        }
    }
    if let Ok(pid) = std::fs::read_to_string(dir.join("logs/coordinator.pid")) {
        if let Ok(pid) = pid.trim().parse() {
            out.push(("coordinator".into(), pid));
        }
    }
    out
}

/// The coordinator URL of a devnet data directory (`http_listen` of its config).
fn devnet_url(dir: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(dir.join("coordinator.toml"))
        .with_context(|| format!("{} is not a devnet data directory", dir.display()))?;
    let value: toml::Value = toml::from_str(&text).context("coordinator.toml")?;
    let listen = value
        .get("http_listen")
        .and_then(|v| v.as_str())
        .context("coordinator.toml has no http_listen")?;
    Ok(format!("http://{listen}"))
}

impl Target {
    /// Connects as the arguments say (starting a devnet of `nodes` for
    /// `--spawn-devnet`); `need_client`: the bench signs, so a client key is required.
    pub(crate) async fn connect(
        args: &NetArgs,
        nodes: usize,
        need_client: bool,
    ) -> anyhow::Result<Self> {
        if args.spawn_devnet {
            let (dir, remove) = match &args.data_dir {
                Some(d) => {
                    // It is wiped first: only an empty directory or a devnet's.
                    let empty = std::fs::read_dir(d).map_or(true, |mut e| e.next().is_none());
                    if !empty && !d.join("roster.toml").exists() {
                        bail!(
                            "{} is neither empty nor a devnet data directory; --data-dir is wiped first",
                            d.display()
                        );
                    }
                    (d.clone(), None)
                }
                None => {
                    let mut tag = [0u8; 6];
                    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tag);
                    let d =
                        std::env::temp_dir().join(format!("quorate-bench-{}", hex::encode(tag)));
                    (d.clone(), Some(d))
                }
            };
            println!("starting a devnet of {nodes} nodes in {}", dir.display());
            let net = devnet::start(&DevnetArgs {
                nodes,
                threshold: args.threshold,
                segments: nodes.min(3),
                data_dir: dir,
                fresh: args.data_dir.is_some(),
                base_port: args.base_port,
                http_port: args.http_port,
                demo: false,
                exit: true,
            })
            .await?;
            let mut me = Self::from_devnet_dir(&net.dir, Some(net.url.clone()), need_client)?;
            me.processes = net.pids();
            me.spawned = Some((net, remove));
            return Ok(me);
        }
        if let Some(dir) = &args.devnet_dir {
            let dir = std::fs::canonicalize(dir)
                .with_context(|| format!("no devnet data directory {}", dir.display()))?;
            return Self::from_devnet_dir(&dir, args.url.clone(), need_client);
        }
        let Some(url) = &args.url else {
            bail!("say which network: --spawn-devnet, --devnet-dir DIR, or --url URL with --client-key and --roster");
        };
        let key = match &args.client_key {
            Some(k) => Some(read_key(k)?),
            None if need_client => bail!("--url needs --client-key (a client registered with the coordinator and in every node's policy)"),
            None => None,
        };
        let roster = args
            .roster
            .as_ref()
            .context("--url needs --roster (the pinned roster keys are checked against)")?;
        let mut api = Client::new(url.clone())?;
        if let Some(t) = &args.admin_token {
            api = api.with_admin_token(t.clone());
        }
        Ok(Self {
            api,
            client: key,
            roster: Roster::load(roster, None)
                .with_context(|| format!("roster {}", roster.display()))?,
            processes: args.pids.clone(),
            devnet_dir: None,
            spawned: None,
        })
    }

    fn from_devnet_dir(dir: &Path, url: Option<String>, need_client: bool) -> anyhow::Result<Self> {
        let url = match url {
            Some(u) => u,
            None => devnet_url(dir)?,
        };
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .with_context(|| format!("{}/admin.token", dir.display()))?;
        let key = dir.join("bench-client.key");
        if !key.exists() && need_client {
            bail!(
                "{} has no bench-client.key: restart that devnet once with this version (`quorate devnet --data-dir {}`) to add the bench client",
                dir.display(),
                dir.display()
            );
        }
        Ok(Self {
            api: Client::new(url)?.with_admin_token(token.trim().to_string()),
            client: if key.exists() {
                Some(read_key(&key)?)
            } else {
                None
            },
            roster: Roster::load(&dir.join("roster.toml"), None).context("devnet roster")?,
            processes: devnet_pids(dir),
            devnet_dir: Some(dir.to_path_buf()),
            spawned: None,
        })
    }
}
