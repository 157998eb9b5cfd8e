//! JWT bearer tokens on a route: keys made at test time (Ed25519 and
//! P-256 by ring, RSA by the `openssl` command), their JWKS written by
//! the test, tokens signed by jsonwebtoken. Valid tokens pass with their
//! claims as request fields; every way of being refused gets RFC 6750's
//! challenge and never reaches the upstream; a `jwks_url` set served by a
//! backend picks up a rotated key on an unknown `kid`, and a flood of
//! unknown `kid`s fetches it a bounded number of times; settings problems
//! are reported by `tidegate check` with their field.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::*;
use data_encoding::BASE64URL_NOPAD as B64;
use http::Request;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use serde_json::{json, Value};

/// A private key to sign with and its public JWK.
struct Signer {
    alg: Algorithm,
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn ed25519(kid: &str) -> Signer {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Signer {
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            key: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                "x": B64.encode(pair.public_key().as_ref())}),
        }
    }

    fn p256(kid: &str) -> Signer {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let rng = SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        // 0x04, x, y.
        let point = pair.public_key().as_ref();
        Signer {
            alg: Algorithm::ES256,
            kid: kid.into(),
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
                "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}),
        }
    }

    /// One RSA key per test run (made by `openssl genpkey`).
    fn rsa(kid: &str) -> Signer {
        static KEY: OnceLock<(Vec<u8>, String)> = OnceLock::new();
        let (der, n) = KEY.get_or_init(|| {
            let f = TempFile::new("rsa.pem");
            let run = |args: &[&str]| {
                let out = std::process::Command::new("openssl")
                    .args(args)
                    .output()
                    .expect("the openssl command runs");
                assert!(out.status.success(), "openssl {args:?}: {out:?}");
                out.stdout
            };
            run(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                f.arg(),
            ]);
            // PKCS#1 DER, as ring signs with it.
            let der = run(&["rsa", "-in", f.arg(), "-traditional", "-outform", "DER"]);
            let modulus =
                String::from_utf8(run(&["rsa", "-in", f.arg(), "-noout", "-modulus"])).unwrap();
            let hex = modulus.trim().strip_prefix("Modulus=").unwrap();
            let bytes = data_encoding::HEXUPPER.decode(hex.as_bytes()).unwrap();
            (der, B64.encode(&bytes))
        });
        Signer {
            alg: Algorithm::RS256,
            kid: kid.into(),
            key: EncodingKey::from_rsa_der(der),
            jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": n, "e": "AQAB"}),
        }
    }

    /// A token of `claims`, signed, with this key's `kid`.
    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        encode(&h, claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass, with `changes` on top.
fn claims(changes: Value) -> Value {
    let mut c = json!({"iss": "https://issuer.test", "aud": "api", "sub": "alice",
        "email": "alice@example.test", "admin": true, "level": 3,
        "groups": ["a", "b"], "exp": now() + 300});
    for (k, v) in changes.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn jwks(keys: &[&Signer]) -> String {
    json!({"keys": keys.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Answers with the fields the claims go to and `Authorization`, counting
/// requests.
fn echo(count: Arc<AtomicUsize>) -> Backend {
    backend(move |req: Request<hyper::body::Incoming>| {
        count.fetch_add(1, Ordering::SeqCst);
        let h = req.headers();
        let get = |n: &str| {
            h.get(n).map_or("-".into(), |v| {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            })
        };
        let seen = format!(
            "user={} email={} admin={} level={} groups={} auth={}",
            get("x-user"),
            get("x-user-email"),
            get("x-admin"),
            get("x-level"),
            get("x-groups"),
            get("authorization")
        );
        async move { text(200, &seen) }
    })
}

/// One route with `jwt` (its `keys`: `jwks_file = ...` or `jwks_url =
/// ...`), one without.
fn config(upstream: std::net::SocketAddr, keys: &str, algorithms: &str, extra: &str) -> String {
    format!(
        r#"
[server]
threads = 1
{extra}

[[listeners]]
address = "127.0.0.1:0"

[upstreams.app]
servers = ["{upstream}"]

[[routes]]
path_prefix = "/api/"
upstream = "app"
[routes.jwt]
realm = "api"
issuers = ["https://issuer.test"]
audiences = ["api", "other"]
algorithms = [{algorithms}]
{keys}
clock_skew = "30s"
claims_to_headers = {{ sub = "X-User", email = "X-User-Email", admin = "X-Admin", level = "X-Level", groups = "X-Groups" }}

[[routes]]
upstream = "app"
"#
    )
}

async fn ask(proxy: &Proxy, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    exchange(proxy.addr, "GET", "t", "/api/x", headers, empty()).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn valid_rs256_es256_and_eddsa_tokens_pass_with_their_claims_as_fields() {
    let (rsa, ec, ed) = (Signer::rsa("r1"), Signer::p256("e1"), Signer::ed25519("d1"));
    let file = TempFile::with("jwks.json", jwks(&[&rsa, &ec, &ed]).as_bytes());
    let count = Arc::new(AtomicUsize::new(0));
    let origin = echo(count.clone());
    let keys = format!("jwks_file = \"{}\"", file.arg());
    let proxy = Proxy::start(&config(
        origin.addr,
        &keys,
        r#""RS256", "ES256", "EdDSA""#,
        "",
    ));
    for s in [&rsa, &ec, &ed] {
        let auth = bearer(&s.sign(&claims(json!({}))));
        // The client's own X-User is not what the upstream sees.
        let (status, _, body) =
            ask(&proxy, &[("authorization", &auth), ("x-user", "mallory")]).await;
        assert_eq!(status, 200, "{:?}: {body}", s.alg);
        assert_eq!(
            body, "user=alice email=alice@example.test admin=true level=3 groups=- auth=-",
            "{:?}",
            s.alg
        );
    }
    // An `aud` array with one allowed audience, and a nbf within the skew.
    let token = ec.sign(&claims(json!({"aud": ["x", "other"], "nbf": now() + 10})));
    let (status, _, _) = ask(&proxy, &[("authorization", &bearer(&token))]).await;
    assert_eq!(status, 200);
    assert_eq!(count.load(Ordering::SeqCst), 4);
    // A claim the token lacks leaves no field: the client's own copy is
    // removed too.
    let token = ed.sign(&claims(json!({"email": null, "level": 4.5})));
    let spoof = [
        ("authorization", bearer(&token)),
        ("x-user-email", "boss@example.test".into()),
    ];
    let spoof: Vec<(&str, &str)> = spoof.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _, body) = ask(&proxy, &spoof).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "user=alice email=- admin=true level=4.5 groups=- auth=-"
    );
}

/// An `https://` `jwks_url` is fetched over TLS, its server verified
/// with the system's roots: here a test CA given to the binary as
/// `SSL_CERT_FILE` (which the native roots honour, as OpenSSL does).
#[tokio::test]
async fn an_https_jwks_url_is_fetched_with_the_systems_roots() {
    use crate::common::binary::Binary;
    use crate::common::pki::Ca;
    use crate::common::tls_origin::{tls_origin, TlsOrigin};
    let ca = Ca::new("jwks test CA");
    let leaf = ca.server(&["127.0.0.1"]);
    let key = Signer::p256("k1");
    let served = jwks(&[&key]);
    let issuer = tls_origin(
        TlsOrigin {
            leaf: &leaf,
            alpn: &["http/1.1"],
            client_ca: None,
        },
        move |_req| {
            let body = served.clone();
            async move { text(200, &body) }
        },
    );
    let origin = echo(Arc::new(AtomicUsize::new(0)));
    let keys = format!("jwks_url = \"https://{}/jwks.json\"", issuer.addr);
    let file = TempFile::with(
        "jwt.toml",
        config(origin.addr, &keys, r#""ES256""#, "").as_bytes(),
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"));
    cmd.args(["--config", file.arg()])
        .env("SSL_CERT_FILE", ca.file.arg());
    let mut tg = Binary::spawn(cmd);
    let addr = tg.listening().await;
    let auth = bearer(&key.sign(&claims(json!({}))));
    let (status, _, body) = exchange(
        addr,
        "GET",
        "t",
        "/api/x",
        &[("authorization", &auth)],
        empty(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(issuer.seen.connections.load(Ordering::SeqCst) >= 1);
    tg.signal(rustix::process::Signal::TERM);
    let (exit, _) = tg.wait().await;
    assert!(exit.success());
}

#[tokio::test]
async fn a_reload_reads_the_jwks_file_again() {
    let (old, new) = (Signer::p256("old"), Signer::ed25519("new"));
    let file = TempFile::with("jwks.json", jwks(&[&old]).as_bytes());
    let origin = echo(Arc::new(AtomicUsize::new(0)));
    let keys = format!("jwks_file = \"{}\"", file.arg());
    let toml = config(origin.addr, &keys, r#""ES256", "EdDSA""#, "");
    let mut proxy = Proxy::start(&toml);
    let by_new = bearer(&new.sign(&claims(json!({}))));
    let by_old = bearer(&old.sign(&claims(json!({}))));
    assert_eq!(ask(&proxy, &[("authorization", &by_new)]).await.0, 401);
    assert_eq!(ask(&proxy, &[("authorization", &by_old)]).await.0, 200);
    // The key rotated on disk: the running config still has the old set...
    std::fs::write(&file.path, jwks(&[&new])).unwrap();
    assert_eq!(ask(&proxy, &[("authorization", &by_new)]).await.0, 401);
    // ...until a reload reads the file again.
    proxy.reload(&toml);
    assert_eq!(ask(&proxy, &[("authorization", &by_new)]).await.0, 200);
    assert_eq!(ask(&proxy, &[("authorization", &by_old)]).await.0, 401);
}

#[tokio::test]
async fn refused_tokens_get_the_invalid_token_challenge_and_never_reach_the_upstream() {
    let (rsa, ec, ed) = (Signer::rsa("r1"), Signer::p256("e1"), Signer::ed25519("d1"));
    let file = TempFile::with("jwks.json", jwks(&[&rsa, &ec, &ed]).as_bytes());
    let count = Arc::new(AtomicUsize::new(0));
    let origin = echo(count.clone());
    let keys = format!("jwks_file = \"{}\"", file.arg());
    // ES256 and EdDSA only: the RSA key is in the set, RS256 is not allowed.
    let proxy = Proxy::start(&config(origin.addr, &keys, r#""ES256", "EdDSA""#, ""));
    let header = |v: Value| B64.encode(v.to_string().as_bytes());
    let body = B64.encode(claims(json!({})).to_string().as_bytes());
    let unsigned = format!("{}.{body}.", header(json!({"alg": "none", "typ": "JWT"})));
    // HS256 keyed with the public key's own text (algorithm confusion).
    let public = ec.jwk.to_string();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("e1".into());
    let confused = encode(
        &h,
        &claims(json!({})),
        &EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    // A key of the right type and kid, but not the one in the set.
    let stranger = Signer::p256("e1");
    let unknown = Signer::ed25519("nobody");
    let cases = [
        (
            ec.sign(&claims(json!({"exp": now() - 120}))),
            "token expired",
        ),
        (
            ed.sign(&claims(json!({"nbf": now() + 120}))),
            "token not valid yet (nbf)",
        ),
        (
            ec.sign(&claims(json!({"aud": "someone-else"}))),
            "wrong audience",
        ),
        (
            ec.sign(&claims(json!({"iss": "https://evil.test"}))),
            "wrong issuer",
        ),
        (ec.sign(&claims(json!({"exp": null}))), "no exp claim"),
        (rsa.sign(&claims(json!({}))), "algorithm not allowed"),
        (unsigned, "malformed token or unknown algorithm"),
        (confused, "algorithm not allowed"),
        (stranger.sign(&claims(json!({}))), "bad signature"),
        (unknown.sign(&claims(json!({}))), "unknown kid"),
        (
            "not.a.token".to_string(),
            "malformed token or unknown algorithm",
        ),
    ];
    for (token, reason) in &cases {
        let (status, h, _) = ask(&proxy, &[("authorization", &bearer(token))]).await;
        assert_eq!(status, 401, "{reason}");
        let want = format!(
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"{reason}\""
        );
        assert_eq!(h["www-authenticate"], want.as_str());
    }
    // No token (or another scheme): the challenge alone (RFC 6750 §3.1).
    for headers in [&[][..], &[("authorization", "Basic YTpi")][..]] {
        let (status, h, _) = ask(&proxy, headers).await;
        assert_eq!(status, 401);
        assert_eq!(h["www-authenticate"], "Bearer realm=\"api\"");
    }
    // A gRPC call gets UNAUTHENTICATED.
    let (status, h, _) = ask(&proxy, &[("content-type", "application/grpc")]).await;
    assert_eq!(status, 200);
    assert_eq!(h["grpc-status"], "16");
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn forward_token_keeps_authorization_and_the_log_names_the_subject() {
    let ec = Signer::p256("e1");
    let file = TempFile::with("jwks.json", jwks(&[&ec]).as_bytes());
    let log = TempFile::new("access.log");
    let origin = echo(Arc::new(AtomicUsize::new(0)));
    let keys = format!("jwks_file = \"{}\"\nforward_token = true", file.arg());
    let extra = format!(
        "access_log = \"{}\"\naccess_log_format = \"combined\"",
        log.arg()
    );
    let proxy = Proxy::start(&config(origin.addr, &keys, r#""ES256""#, &extra));
    let token = ec.sign(&claims(json!({"sub": "carol"})));
    let (status, _, body) = ask(&proxy, &[("authorization", &bearer(&token))]).await;
    assert_eq!(status, 200);
    assert!(body.ends_with(&format!("auth=Bearer {token}")), "{body}");
    let text = || std::fs::read_to_string(&log.path).unwrap_or_default();
    until("the log line", || text().lines().count() >= 1).await;
    assert!(text().starts_with("127.0.0.1 - carol ["), "{}", text());
}

/// Serves `jwks` at `/jwks.json`, counting fetches.
fn jwks_server(jwks: Arc<Mutex<String>>, fetches: Arc<AtomicUsize>) -> Backend {
    backend(move |_req: Request<hyper::body::Incoming>| {
        fetches.fetch_add(1, Ordering::SeqCst);
        let body = jwks.lock().unwrap().clone();
        async move { text(200, &body) }
    })
}

#[tokio::test]
async fn a_jwks_url_rotated_key_is_fetched_on_its_unknown_kid_at_a_bounded_rate() {
    let (old, new) = (Signer::ed25519("old"), Signer::p256("new"));
    let served = Arc::new(Mutex::new(jwks(&[&old])));
    let fetches = Arc::new(AtomicUsize::new(0));
    let issuer = jwks_server(served.clone(), fetches.clone());
    let origin = echo(Arc::new(AtomicUsize::new(0)));
    let keys = format!(
        "jwks_url = \"http://{}/jwks.json\"\njwks_refresh = \"1h\"",
        issuer.addr
    );
    let proxy = Proxy::start(&config(origin.addr, &keys, r#""ES256", "EdDSA""#, ""));
    // The first request may come before the first fetch: it waits for it.
    let (status, _, _) = ask(
        &proxy,
        &[("authorization", &bearer(&old.sign(&claims(json!({})))))],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // The issuer rotates: the new kid asks for a fetch, which has it.
    *served.lock().unwrap() = jwks(&[&new]);
    let (status, _, _) = ask(
        &proxy,
        &[("authorization", &bearer(&new.sign(&claims(json!({})))))],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // A flood of made-up kids: refused, and no more than one fetch per
    // 10 s between asks (none, on a machine that sends them within 10 s;
    // a busy one may cross into further windows, each allowing one).
    let flood = std::time::Instant::now();
    for i in 0..30 {
        let liar = Signer::ed25519(&format!("made-up-{i}"));
        let (status, _, _) = ask(
            &proxy,
            &[("authorization", &bearer(&liar.sign(&claims(json!({})))))],
        )
        .await;
        assert_eq!(status, 401);
    }
    let windows = flood.elapsed().as_secs() / 10 + 1;
    let fetched = fetches.load(Ordering::SeqCst) as u64;
    assert!(
        fetched <= 2 + windows,
        "{fetched} fetches in {windows} windows"
    );
}

#[tokio::test]
async fn check_names_each_bad_jwt_field() {
    let good = TempFile::with("jwks.json", jwks(&[&Signer::ed25519("d1")]).as_bytes());
    let not_jwks = TempFile::with(
        "bad.json",
        b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}",
    );
    let toml = format!(
        r#"[[listeners]]
address = "127.0.0.1:0"

[upstreams.app]
servers = ["http://127.0.0.1:9000"]

[[routes]]
upstream = "app"
jwt = {{ issuers = ["i"], audiences = ["a"], algorithms = ["none", "HS256", "EdDSA"], jwks_file = "{good}" }}

[[routes]]
upstream = "app"
jwt = {{ issuers = [], audiences = ["a"], algorithms = ["ES256"] }}

[[routes]]
upstream = "app"
jwt = {{ issuers = ["i"], audiences = ["a"], algorithms = ["ES256"], jwks_file = "/nonexistent/jwks.json" }}

[[routes]]
upstream = "app"
jwt = {{ issuers = ["i"], audiences = ["a"], algorithms = ["ES256"], jwks_file = "{bad}" }}

[[routes]]
upstream = "app"
basic_auth = {{ realm = "r", htpasswd = "/nonexistent/users" }}
jwt = {{ issuers = ["i"], audiences = ["a"], algorithms = ["ES256"], jwks_url = "ftp://x/jwks" }}
"#,
        good = good.arg(),
        bad = not_jwks.arg()
    );
    let file = TempFile::with("check.toml", toml.as_bytes());
    let (code, err) = check_config(&file).await;
    assert_eq!(code, Some(2), "stderr: {err}");
    for expect in [
        "routes[0].jwt.algorithms[0]: `none` (unsigned tokens) is never accepted".to_string(),
        "routes[0].jwt.algorithms[1]: `HS256`: HMAC".into(),
        "routes[1].jwt.issuers: needs at least one issuer".into(),
        "routes[1].jwt.jwks_file: a key set is needed".into(),
        "routes[2].jwt.jwks_file: cannot read /nonexistent/jwks.json".into(),
        format!(
            "routes[3].jwt.jwks_file: {}: no signature key",
            not_jwks.arg()
        ),
        "routes[4].jwt: a route has `basic_auth` or `jwt`, not both".into(),
    ] {
        assert!(err.contains(&expect), "want {expect}\nstderr: {err}");
    }
}
