//! A running `quorate devnet` for process-level tests (shared by e2e.rs and
//! netting_cli.rs).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use quorate_coordinator::client::Client;

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_quorate")
}

/// A running `quorate devnet` (5 nodes, threshold 3, 3 segments); stopped on drop.
pub struct Devnet {
    pub child: Child,
    pub data: PathBuf,
    pub url: String,
    pub extra: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Devnet {
    /// The key, verified against the devnet's roster (the client's pinned copy).
    pub fn attested(
        &self,
        key: &quorate_coordinator::api::model::KeyView,
    ) -> quorate_coordinator::client::AttestedKey {
        let roster = quorate_protocol::roster::Roster::load(&self.data.join("roster.toml"), None)
            .expect("devnet roster");
        quorate_coordinator::client::verify_key(key, &roster).expect("key attested by every member")
    }

    pub fn start() -> Self {
        Self::start_nodes(5)
    }

    /// A devnet of `nodes` signer nodes (threshold 3, 3 segments).
    pub fn start_nodes(nodes: u16) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("net");
        let offsets: Vec<u16> = (0..=nodes).chain(100..=100 + nodes).chain([150]).collect();
        let base = super::port_block(&offsets);
        let http = base + 150;
        let mut child = Command::new(exe())
            .args(["devnet", "--data-dir"])
            .arg(&data)
            .args([
                "--base-port",
                &base.to_string(),
                "--http-port",
                &http.to_string(),
                "--nodes",
                &nodes.to_string(),
            ])
            .env(
                "RUST_LOG",
                "info,quorate_node=debug,quorate_coordinator=debug,libp2p=warn",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start devnet");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if Instant::now() > deadline {
                dump_logs(&data.join("logs"));
                panic!("devnet did not come up");
            }
            match lines.next() {
                Some(Ok(l)) if l.contains("quorate devnet is up") => break,
                Some(Ok(_)) => {}
                _ => {
                    dump_logs(&data.join("logs"));
                    panic!("devnet exited before it was up");
                }
            }
        }
        // Keep draining stdout so the devnet never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            data,
            url: format!("http://127.0.0.1:{http}"),
            extra: Vec::new(),
            _dir: dir,
        }
    }

    pub fn pid(&self, name: &str) -> String {
        std::fs::read_to_string(self.data.join("logs").join(format!("{name}.pid")))
            .expect("pid file")
            .trim()
            .to_string()
    }

    pub fn signal(&self, name: &str, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid(name)])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {name}");
    }

    /// Starts a process the way devnet does (for restarts after kill -9).
    pub fn restart(&mut self, name: &str, args: &[&str]) {
        self.restart_with_env(name, args, &[]);
    }

    /// [`Self::restart`] with extra environment variables.
    pub fn restart_with_env(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("logs").join(format!("{name}.log")))
            .expect("log");
        let token = std::fs::read_to_string(self.data.join("admin.token")).expect("token");
        let child = Command::new(exe())
            .args(args)
            .current_dir(&self.data)
            .env("QUORATE_ADMIN_TOKEN", token.trim())
            .envs(env.iter().copied())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("restart");
        std::fs::write(
            self.data.join("logs").join(format!("{name}.pid")),
            child.id().to_string(),
        )
        .expect("pid");
        self.extra.push(child);
    }

    /// Waits (bounded) for the most recently restarted process to exit; its status.
    pub fn wait_last_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.extra.last_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The admin address (`host:port`) of a node, from its config.
    pub fn admin_addr(&self, node: &str) -> String {
        let cfg = std::fs::read_to_string(self.data.join(format!("{node}.toml"))).expect("cfg");
        cfg.lines()
            .find_map(|l| l.strip_prefix("admin = "))
            .expect("admin line")
            .trim_matches('"')
            .to_string()
    }

    /// Signs `tag` with `view`'s key through the API (client-signed request,
    /// waits for the job), verifies every signature under the attested key, and
    /// returns the signers of the successful attempt.
    pub async fn sign_and_verify(
        &self,
        api: &Client,
        view: &quorate_coordinator::api::model::KeyView,
        tag: &str,
    ) -> Vec<String> {
        use quorate_coordinator::client::{verify_job, RequestBuilder, SignOptions};
        let attested = self.attested(view);
        let signed =
            RequestBuilder::new(quorate_protocol::KeyId::from_hex(&view.key_id).expect("id"))
                .messages(vec![tag.as_bytes().to_vec()])
                .purpose("BTC", 1_000, "bc1qtest", "e2e")
                .expires_in(Duration::from_secs(120))
                .sign(&self.client_key());
        let job = api
            .sign(
                &view.key_id,
                &signed,
                SignOptions::wait(Duration::from_secs(60)),
            )
            .await
            .unwrap_or_else(|e| panic!("{tag}: request accepted: {e}"));
        let job = api
            .poll_until_done(&job.id, Duration::from_millis(100), Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("{tag}: job finished: {e}"));
        verify_job(&attested, &signed.request, &job)
            .unwrap_or_else(|e| panic!("{tag}: signature verifies under the attested key: {e}"));
        job.result
            .as_ref()
            .and_then(|r| r.attempts.last())
            .map(|a| a.signers.clone())
            .unwrap_or_default()
    }

    pub fn api(&self) -> Client {
        let token = std::fs::read_to_string(self.data.join("admin.token")).expect("token");
        Client::new(self.url.clone())
            .expect("client")
            .with_admin_token(token.trim().to_string())
    }

    pub fn client_key(&self) -> ed25519_dalek::SigningKey {
        let text = std::fs::read_to_string(self.data.join("client.key")).expect("client key");
        let mut sk = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut sk).expect("hex");
        ed25519_dalek::SigningKey::from_bytes(&sk)
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(&self.data.join("logs"));
        }
        for c in &mut self.extra {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// On a failed test, print the end of every process log: the temporary data
/// directory is deleted with the test, and CI has only its output to go on.
pub fn dump_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    // Keep a copy for a closer look; the data directory itself goes with the test.
    let keep = std::env::temp_dir().join(format!(
        "quorate-e2e-failed-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    if std::fs::create_dir_all(&keep).is_ok() {
        for log in &logs {
            if let Some(name) = log.file_name() {
                let _ = std::fs::copy(log, keep.join(name));
            }
        }
        eprintln!("process logs kept in {}", keep.display());
    }
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("===== last lines of {} =====", log.display());
        for l in &lines[lines.len().saturating_sub(80)..] {
            eprintln!("{l}");
        }
    }
}
