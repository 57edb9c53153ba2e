//! The embedded store across restarts, and configuration errors that name the field.

use std::path::Path;

use quorate_coordinator::{
    api::{
        model::{Job, JobStatus},
        problem::ProblemKind,
    },
    config::CoordinatorConfig,
    store::{Created, Store},
    CoordinatorError,
};

fn job(id: &str, status: JobStatus) -> Job {
    Job {
        id: id.into(),
        key_id: "00".repeat(16),
        client: "11".repeat(32),
        request_hash: "22".repeat(32),
        messages: 1,
        status,
        created_at_ms: 1,
        finished_at_ms: None,
        result: None,
        problem: None,
    }
}

#[test]
fn pending_jobs_fail_and_finished_jobs_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.redb");
    {
        let store = Store::open(&path).expect("open");
        assert_eq!(store.interrupted_jobs(), 0);
        assert_eq!(
            store
                .create_job(&job("aa", JobStatus::Pending), Some(("c:k1", "h1")))
                .expect("create"),
            Created::New
        );
        let mut done = job("bb", JobStatus::Pending);
        store.create_job(&done, None).expect("create");
        done.status = JobStatus::Succeeded;
        // Finished now: a finished job is kept for the job retention (7 days).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        done.finished_at_ms = Some(u64::try_from(now).expect("ms"));
        store.put_job(&done).expect("finish");
        // The idempotency binding is returned, not replaced.
        match store.create_job(&job("cc", JobStatus::Pending), Some(("c:k1", "h2"))) {
            Ok(Created::Existing(rec)) => {
                assert_eq!(rec.job_id, "aa");
                assert_eq!(rec.body_hash, "h1");
            }
            other => panic!("expected existing binding, got {other:?}"),
        }
        assert!(store.job("cc").expect("read").is_none());
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.interrupted_jobs(), 1);
    let failed = store.job("aa").expect("read").expect("present");
    assert_eq!(failed.status, JobStatus::Failed);
    let problem = failed.problem.expect("problem");
    assert_eq!(problem.kind(), Some(ProblemKind::CoordinatorRestarted));
    assert!(problem.detail.contains("restarted"), "{}", problem.detail);
    let done = store.job("bb").expect("read").expect("present");
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(
        store
            .idempotency("c:k1")
            .expect("idem")
            .expect("kept")
            .job_id,
        "aa"
    );
    drop(store);
    // A third open finds nothing left pending.
    assert_eq!(Store::open(&path).expect("reopen").interrupted_jobs(), 0);
}

const GOOD: &str = r#"
identity_file = "coordinator.identity"
roster = "roster.toml"
listen = ["/ip4/127.0.0.1/tcp/0"]
http_listen = "127.0.0.1:8080"
admin_token = "secret"
data_dir = "data"

[limits]
max_body_bytes = 131072

[[clients]]
name = "exchange-a"
public_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
requests_per_minute = 30
"#;

fn config_error(text: &str) -> String {
    match CoordinatorConfig::parse(text, Path::new("/etc/quorate")) {
        Err(CoordinatorError::Config(m)) => m,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn config_parses_and_errors_name_the_field() {
    let c = CoordinatorConfig::parse(GOOD, Path::new("/etc/quorate")).expect("parse");
    assert_eq!(
        c.identity_file,
        Path::new("/etc/quorate/coordinator.identity")
    );
    assert_eq!(
        c.store_path(),
        Path::new("/etc/quorate/data/coordinator.redb")
    );
    assert_eq!(c.limits.max_body_bytes, 131_072);
    assert_eq!(c.session_timeout_ms, 30_000);
    let settings = c.service_settings().expect("settings");
    assert_eq!(settings.clients.len(), 1);
    assert_eq!(settings.admin_token.as_deref(), Some("secret"));

    let e = config_error(&format!("{GOOD}\nsurprise = 1\n"));
    assert!(e.contains("surprise"), "{e}");
    let e = config_error(&GOOD.replace("d75a98", "zz5a98"));
    assert!(e.contains("clients[0].public_key"), "{e}");
    let e = config_error(&GOOD.replace("127.0.0.1:8080", "nowhere"));
    assert!(e.contains("http_listen"), "{e}");
    let e =
        config_error(&GOOD.replace("requests_per_minute = 30", "requests_per_minute = \"lots\""));
    assert!(e.contains("requests_per_minute"), "{e}");
    let e = config_error(&GOOD.replace("data_dir = \"data\"\n", ""));
    assert!(e.contains("data_dir"), "{e}");
}

#[test]
fn an_empty_admin_token_refuses_to_start() {
    let e = config_error(&GOOD.replace("admin_token = \"secret\"", "admin_token = \"  \""));
    assert!(e.contains("admin_token") && e.contains("empty"), "{e}");
    let var = "QUORATE_TEST_EMPTY_ADMIN_TOKEN";
    std::env::set_var(var, " ");
    let text = GOOD.replace(
        "admin_token = \"secret\"",
        &format!("admin_token_env = \"{var}\""),
    );
    let c = CoordinatorConfig::parse(&text, Path::new("/etc/quorate")).expect("parse");
    match c.service_settings() {
        Err(CoordinatorError::Config(m)) => {
            assert!(m.contains(var) && m.contains("empty"), "{m}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn identity_file_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = quorate_coordinator::protocol::NodeIdentity::generate(&mut rand_core::OsRng);
    let path = dir.path().join("coordinator.identity");
    CoordinatorConfig::write_identity(&path, &id).expect("write");
    let text = GOOD.replace("coordinator.identity", path.to_str().expect("utf8"));
    let c = CoordinatorConfig::parse(&text, dir.path()).expect("parse");
    assert_eq!(c.identity().expect("identity").node_id(), id.node_id());
    std::fs::write(&path, "not hex").expect("write");
    let e = c.identity().expect_err("bad identity file");
    assert!(e.to_string().contains("identity_file"), "{e}");
}

#[test]
fn tls_section_resolves_paths_and_names_bad_fields() {
    let c = CoordinatorConfig::parse(
        &format!(
            "{GOOD}\n[tls]\ncert = \"api.crt\"\nkey = \"/abs/api.key\"\nclient_ca = \"ca.crt\"\n"
        ),
        Path::new("/etc/quorate"),
    )
    .expect("parse");
    let tls = c.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, Path::new("/etc/quorate/api.crt"));
    assert_eq!(tls.key, Path::new("/abs/api.key"));
    assert_eq!(
        tls.client_ca.as_deref(),
        Some(Path::new("/etc/quorate/ca.crt"))
    );
    // Missing files are reported when the server configuration is built.
    let e = c.tls_server_config().expect_err("no such files");
    assert!(e.to_string().contains("tls.cert"), "{e}");
    assert!(CoordinatorConfig::parse(GOOD, Path::new("/etc/quorate"))
        .expect("parse")
        .tls
        .is_none());
    let e = config_error(&format!(
        "{GOOD}\n[tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\n"
    ));
    assert!(e.contains("ca"), "{e}");
    let e = config_error(&format!("{GOOD}\n[tls]\ncert = \"a\"\n"));
    assert!(e.contains("key"), "{e}");
}

#[test]
fn key_records_from_before_attestations_load_without_attestations() {
    use quorate_coordinator::protocol::{Ciphersuite, GroupPublic, KeyId};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.redb");
    let public = GroupPublic {
        suite: Ciphersuite::Ed25519,
        key_id: KeyId([7; 16]),
        threshold: 2,
        members: Default::default(),
        verifying_key: vec![1; 32],
        public_key_package: vec![2; 8],
    };
    {
        // The pre-attestation layout: public data, then the creation time.
        let bytes = postcard::to_allocvec(&(&public, 1_767_225_600_000u64)).expect("encode");
        let db = redb::Database::create(&path).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let table: redb::TableDefinition<'_, &str, &[u8]> =
                redb::TableDefinition::new("coordinator_keys");
            let mut t = txn.open_table(table).expect("table");
            t.insert(KeyId([7; 16]).to_string().as_str(), bytes.as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = Store::open(&path).expect("open");
    let record = store.key(&KeyId([7; 16])).expect("read").expect("present");
    assert_eq!(record.public, public);
    assert_eq!(record.created_at_ms, 1_767_225_600_000);
    assert!(
        record.attestations.is_empty(),
        "not attested: clients refuse it"
    );
    assert_eq!(store.keys().expect("list").len(), 1);
}
