//! TLS on the listener: HTTP/1.1 and HTTP/2 by ALPN, the certificate re-read when its files
//! change, and a broken new one keeping the old in service.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_testkit::client::kept_alive;
use gateway_testkit::process::GatewayCommand;
use gateway_testkit::tempdir::TempDir;
use gateway_testkit::{backend, gateway};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM, DER).
fn certificate(organisation: &str) -> (String, String, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, organisation);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// A certificate and its key written to PEM files, for a gateway to serve TLS with.
struct TlsFiles {
    _dir: TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    der: CertificateDer<'static>,
}

impl TlsFiles {
    fn new(organisation: &str) -> Self {
        let dir = TempDir::new("tls");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (cert, key, der) = certificate(organisation);
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        Self {
            _dir: dir,
            cert: cert_path,
            key: key_path,
            der,
        }
    }

    /// `command` serving TLS with these files.
    fn serve(&self, command: GatewayCommand) -> GatewayCommand {
        command
            .env("ROUTER__WEBSERVER__TLS_CERT", self.cert.to_str().unwrap())
            .env("ROUTER__WEBSERVER__TLS_KEY", self.key.to_str().unwrap())
    }
}

/// GET `path` over TLS, trusting `root`, offering `alpn`; the status, the version spoken and
/// the certificate the server presented.
async fn get(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
    path: &str,
) -> (StatusCode, Version, CertificateDer<'static>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let stream = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("TLS handshake");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = Request::get(format!("https://localhost{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let request = Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    };
    let (status, version) = (response.status(), response.version());
    let _ = response.into_body().collect().await;
    (status, version, presented)
}

#[tokio::test]
async fn tls_serves_both_protocols_and_follows_certificate_renewals() {
    let app = backend::echo().await;
    let files = TlsFiles::new("first");
    let (cert_path, key_path) = (&files.cert, &files.key);
    let first = files.der.clone();
    let gw = files
        .serve(gateway(BIN).route("demo", app.url()))
        .start_tls()
        .await;

    let (status, version, presented) =
        get(gw.addr(), &first, &[b"http/1.1"], "/service/demo/").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));
    assert_eq!(presented, first);
    let (status, version, _) =
        get(gw.addr(), &first, &[b"h2", b"http/1.1"], "/service/demo/").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(
        app.seen().last().unwrap().headers["x-forwarded-proto"],
        "https"
    );

    let (cert, key, second) = certificate("second");
    std::fs::write(key_path, key).unwrap();
    std::fs::write(cert_path, cert).unwrap();
    gw.wait_for_log("TLS certificate reloaded", Duration::from_secs(30))
        .await;
    assert!(
        gw.logs().contains("TLS certificate reloaded"),
        "{}",
        gw.logs()
    );
    let (_, _, presented) = get(gw.addr(), &second, &[b"http/1.1"], "/_gateway/health").await;
    assert_eq!(presented, second);

    let port = gw.addr().port().to_string();
    let probe = files
        .serve(gateway(BIN).env("ROUTER__WEBSERVER__SERVER_PORT", port))
        .run(&["--health-check"])
        .await;
    assert!(
        probe.0.success(),
        "the health check speaks TLS: {}",
        probe.1
    );

    std::fs::write(cert_path, "not a certificate").unwrap();
    gw.wait_for_log("still serving the previous one", Duration::from_secs(30))
        .await;
    let (status, _, presented) = get(gw.addr(), &second, &[b"http/1.1"], "/service/demo/").await;
    assert_eq!((status, presented), (StatusCode::OK, second));
}

#[tokio::test]
async fn over_tls_a_connection_beyond_the_cap_is_closed_without_a_plain_text_answer() {
    let files = TlsFiles::new("capped");
    let gw = files
        .serve(gateway(BIN).env("ROUTER__HTTP__MAX_CONNECTIONS", "1"))
        .start_tls()
        .await;
    // Accepted first, it holds the one place while its handshake is awaited.
    let _held = TcpStream::connect(gw.addr()).await.unwrap();
    let mut extra = kept_alive(gw.addr()).await.unwrap();
    assert!(
        extra.closed_within(Duration::from_secs(5)).await,
        "closed at once, with nothing written"
    );
    gw.wait_for_log("client connections at the cap", Duration::from_secs(5))
        .await;
}
