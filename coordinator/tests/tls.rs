//! TLS on the HTTP API: the Rust client (rustls) against a coordinator serving
//! certificates made in the test with rcgen, with and without client certificates.

use std::{sync::Arc, time::Duration};

use quorate_coordinator::{
    backend::LocalBackend,
    client::{Client, ClientError, ClientOptions},
    service::{serve_listener_tls, ServiceSettings},
    store::Store,
    tls::server_config,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use tokio::{net::TcpListener, sync::oneshot};

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        Self { cert, key }
    }

    /// A leaf certificate for `names` with `usage`; returns (cert PEM, key PEM).
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> Vec<u8> {
        self.cert.pem().into_bytes()
    }
}

struct TlsServer {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(ca: &Ca, client_ca: Option<&Ca>) -> Self {
        let (cert, key) = ca.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client_ca_pem = client_ca.map(Ca::pem);
        let tls = server_config(cert.as_bytes(), key.as_bytes(), client_ca_pem.as_deref())
            .expect("tls config");
        Self::start_with(tls).await
    }

    async fn start_with(tls: Arc<rustls::ServerConfig>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path().join("c.redb")).expect("store"));
        let backend = Arc::new(LocalBackend::new(3));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_listener_tls(
                backend,
                store,
                ServiceSettings::default(),
                listener,
                tls,
                async {
                    let _ = rx.await;
                },
            )
            .await
            .expect("serve");
        });
        Self {
            url,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops")
            .expect("server task");
    }
}

fn options(ca: &Ca) -> ClientOptions {
    ClientOptions {
        ca_cert_pem: Some(ca.pem()),
        timeout: Some(Duration::from_secs(10)),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn client_talks_to_tls_coordinator_with_test_ca() {
    let ca = Ca::new("test server CA");
    let server = TlsServer::start(&ca, None).await;
    let api = Client::with_options(server.url.clone(), options(&ca)).expect("client");
    let health = api.health().await.expect("health over TLS");
    assert_eq!(health.status, "ok");
    assert!(api.list_keys().await.expect("keys").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn client_refuses_tls_coordinator_with_unknown_ca() {
    let ca = Ca::new("test server CA");
    let other = Ca::new("some other CA");
    let server = TlsServer::start(&ca, None).await;
    let api = Client::with_options(server.url.clone(), options(&other)).expect("client");
    let err = api.health().await.expect_err("unknown CA refused");
    assert!(matches!(err, ClientError::Http(_)), "{err:?}");
    // Without any CA option only the built-in web roots are trusted: refused too.
    let api = Client::new(server.url.clone()).expect("client");
    assert!(api.health().await.is_err());
    // Plain HTTP to the TLS port gets no answer.
    let plain = Client::new(server.url.replace("https://", "http://")).expect("client");
    assert!(plain.health().await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn coordinator_requiring_client_certificates_refuses_a_client_without_one() {
    let ca = Ca::new("test server CA");
    let clients = Ca::new("test client CA");
    let server = TlsServer::start(&ca, Some(&clients)).await;

    let anonymous = Client::with_options(server.url.clone(), options(&ca)).expect("client");
    assert!(
        anonymous.health().await.is_err(),
        "no client certificate: refused in the handshake"
    );

    // A certificate from another CA is refused too.
    let stranger = Ca::new("stranger CA");
    let (cert, key) = stranger.issue(&["exchange-a"], ExtendedKeyUsagePurpose::ClientAuth);
    let mut opts = options(&ca);
    opts.client_identity_pem = Some(zeroize::Zeroizing::new(format!("{key}{cert}").into_bytes()));
    let foreign = Client::with_options(server.url.clone(), opts).expect("client");
    assert!(foreign.health().await.is_err(), "foreign client CA refused");

    let (cert, key) = clients.issue(&["exchange-a"], ExtendedKeyUsagePurpose::ClientAuth);
    let mut opts = options(&ca);
    opts.client_identity_pem = Some(zeroize::Zeroizing::new(format!("{key}{cert}").into_bytes()));
    let known = Client::with_options(server.url.clone(), opts).expect("client");
    known.health().await.expect("client certificate accepted");
    server.stop().await;
}

#[test]
fn tls_config_refuses_a_key_that_is_not_pem() {
    let ca = Ca::new("test server CA");
    let (cert, _) = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let err = server_config(cert.as_bytes(), b"not a key", None).expect_err("refused");
    assert!(err.to_string().contains("tls.key"), "{err}");
}

#[tokio::test]
async fn tls_files_named_in_coordinator_toml_serve_a_client_configured_from_files() {
    let ca = Ca::new("test server CA");
    let clients = Ca::new("test client CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca.issue(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    std::fs::write(dir.path().join("api.crt"), cert).expect("write");
    std::fs::write(dir.path().join("api.key"), key).expect("write");
    std::fs::write(dir.path().join("clients-ca.crt"), clients.pem()).expect("write");
    std::fs::write(dir.path().join("ca.crt"), ca.pem()).expect("write");
    let (ccert, ckey) = clients.issue(&["exchange-a"], ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(dir.path().join("me.pem"), format!("{ckey}{ccert}")).expect("write");
    let config = quorate_coordinator::config::CoordinatorConfig::parse(
        "identity_file = \"id\"\nroster = \"roster.toml\"\nhttp_listen = \"127.0.0.1:0\"\n\
         data_dir = \"data\"\n[tls]\ncert = \"api.crt\"\nkey = \"api.key\"\nclient_ca = \"clients-ca.crt\"\n",
        dir.path(),
    )
    .expect("config");
    let tls = config
        .tls_server_config()
        .expect("tls")
        .expect("configured");
    let server = TlsServer::start_with(tls).await;
    let options = ClientOptions::default()
        .ca_cert_file(dir.path().join("ca.crt"))
        .expect("ca")
        .client_identity_file(dir.path().join("me.pem"))
        .expect("identity");
    let api = Client::with_options(server.url.clone(), options).expect("client");
    assert_eq!(api.health().await.expect("health").status, "ok");
    let missing = ClientOptions::default().ca_cert_file(dir.path().join("nope.crt"));
    assert!(matches!(missing, Err(ClientError::Tls(_))));
    server.stop().await;
}
