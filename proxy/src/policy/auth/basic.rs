//! HTTP basic authentication against an htpasswd file: bcrypt (`$2y$`, `$2a$`, `$2b$`),
//! `{SHA}` and apr1 (`$apr1$`, Apache's MD5) lines, as `htpasswd` writes them.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), and browsers send the same
//! credentials with every request. So it runs on the blocking pool, a few at a time rather than
//! stalling connections' workers or starting a thread per guess, and a verified password is
//! remembered per user as a salted SHA-256 (as Apache's `mod_authn_socache` does): the next
//! request with it costs a hash, not a bcrypt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::request::Parts;
use http::{HeaderValue, header};
use md5::Md5;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::{AuthConfigError, AuthMethod, Identity, Outcome};

/// A password hash from an htpasswd line.
enum Hash {
    Bcrypt(String),
    Sha1([u8; 20]),
    Apr1 { salt: String, hash: String },
}

/// A prepared `basic` block.
pub struct Basic {
    users: HashMap<String, Arc<Hash>>,
    challenge: HeaderValue,
    /// Salt of the remembered passwords, random per block.
    salt: [u8; 16],
    /// Salted SHA-256 of the last bcrypt-verified password of each user.
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

/// bcrypt verifications running at once: one per core.
fn bcrypt_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

impl Basic {
    pub fn new(config: &portico_api::policy::BasicAuth) -> Result<Self, AuthConfigError> {
        let mut users = HashMap::new();
        for (i, line) in config.htpasswd.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| AuthConfigError::Htpasswd {
                line: i + 1,
                why: why.to_owned(),
            };
            let (user, hash) = line.split_once(':').ok_or_else(|| bad("no `:`"))?;
            if user.is_empty() {
                return Err(bad("empty user name"));
            }
            let hash = parse_hash(hash).map_err(bad)?;
            // The first line of a user wins, as in Apache.
            users.entry(user.to_owned()).or_insert(Arc::new(hash));
        }
        // The CRD forbids quotes, backslashes and control characters; a realm from elsewhere
        // loses them rather than failing the route.
        let realm: String = config
            .realm
            .chars()
            .filter(|c| !matches!(c, '"' | '\\') && !c.is_control())
            .collect();
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        let mut salt = [0u8; 16];
        salt.fill_with(|| fastrand::u8(..));
        Ok(Self {
            users,
            challenge,
            salt,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub async fn check(&self, parts: &mut Parts) -> Outcome {
        let refused = || Outcome::Refused(Some(self.challenge.clone()));
        let Some((user, password)) = credentials(parts) else {
            return refused();
        };
        let Some(hash) = self.users.get(&user) else {
            return refused();
        };
        let ok = match &**hash {
            Hash::Bcrypt(_) => self.verify_bcrypt(&user, hash, password).await,
            _ => verify(hash, &password),
        };
        if !ok {
            return refused();
        }
        Outcome::Accepted(Identity {
            method: AuthMethod::Basic,
            subject: Some(user),
            claims: None,
            client_id: None,
        })
    }
}

impl Basic {
    async fn verify_bcrypt(&self, user: &str, hash: &Arc<Hash>, password: Vec<u8>) -> bool {
        let fingerprint: [u8; 32] = Sha256::new()
            .chain_update(self.salt)
            .chain_update(&password)
            .finalize()
            .into();
        let remembered = self.verified.lock().unwrap().get(user).copied();
        if remembered.is_some_and(|r| bool::from(r.ct_eq(&fingerprint))) {
            return true;
        }
        let Ok(_slot) = bcrypt_slots().acquire().await else {
            return false;
        };
        let hash = hash.clone();
        let ok = tokio::task::spawn_blocking(move || verify(&hash, &password))
            .await
            .unwrap_or(false);
        if ok {
            let mut verified = self.verified.lock().unwrap();
            verified.insert(user.to_owned(), fingerprint);
        }
        ok
    }
}

fn parse_hash(hash: &str) -> Result<Hash, &'static str> {
    if let Some(b64) = hash.strip_prefix("{SHA}") {
        let digest = STANDARD
            .decode(b64)
            .map_err(|_| "{SHA} hash is not base64")?;
        return digest
            .try_into()
            .map(Hash::Sha1)
            .map_err(|_| "{SHA} hash is not 20 bytes");
    }
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        let (salt, digest) = rest.split_once('$').ok_or("apr1 hash has no salt")?;
        if salt.is_empty() || salt.len() > 8 || digest.len() != 22 {
            return Err("apr1 hash has a bad salt or length");
        }
        return Ok(Hash::Apr1 {
            salt: salt.to_owned(),
            hash: digest.to_owned(),
        });
    }
    if ["$2y$", "$2a$", "$2b$", "$2x$"]
        .iter()
        .any(|p| hash.starts_with(p))
    {
        hash.parse::<bcrypt::HashParts>()
            .map_err(|_| "malformed bcrypt hash")?;
        return Ok(Hash::Bcrypt(hash.to_owned()));
    }
    Err("unsupported hash (use bcrypt, {SHA} or apr1)")
}

/// User and password of `Authorization: Basic`.
fn credentials(parts: &Parts) -> Option<(String, Vec<u8>)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn verify(hash: &Hash, password: &[u8]) -> bool {
    match hash {
        Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        Hash::Sha1(digest) => Sha1::digest(password).as_slice().ct_eq(digest).into(),
        Hash::Apr1 { salt, hash } => apr1(password, salt.as_bytes())
            .as_bytes()
            .ct_eq(hash.as_bytes())
            .into(),
    }
}

/// Apache's MD5 crypt (`$apr1$`): the FreeBSD MD5 crypt with another magic string. Returns the
/// 22-character digest part.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut digest = ctx.finalize();

    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(digest);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(digest);
        } else {
            c.update(password);
        }
        digest = c.finalize();
    }

    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    to64(d(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use portico_api::policy::{Authentication, BasicAuth};

    use super::super::test_support::*;
    use super::super::{AuthConfigError, AuthLayer, AuthMethod};
    use super::*;

    fn layer(htpasswd: &str) -> Result<AuthLayer, AuthConfigError> {
        let config = Authentication {
            basic: Some(BasicAuth {
                realm: "Shop".into(),
                htpasswd: htpasswd.into(),
            }),
            ..Default::default()
        };
        AuthLayer::new(&config, &env())
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn apr1_matches_openssl() {
        // openssl passwd -apr1 -salt portico wonderland
        assert_eq!(apr1(b"wonderland", b"portico"), "1ChCvguPk.d7BjaxyXJFh.");
        // openssl passwd -apr1 -salt dxoRF9zV ''
        assert_eq!(apr1(b"", b"dxoRF9zV").len(), 22);
    }

    #[tokio::test]
    async fn every_hash_kind_verifies_and_wrong_passwords_are_refused() {
        // `htpasswd -B` writes `$2y$`; the bcrypt crate writes `$2b$`: same algorithm.
        let bcrypt = bcrypt::hash("b-pass", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let file = format!(
            "# users\n\
             apr:$apr1$portico$1ChCvguPk.d7BjaxyXJFh.\n\
             sha:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\n\
             bc:{bcrypt}\n"
        );
        let l = layer(&file).unwrap();
        for (user, password) in [("apr", "wonderland"), ("sha", "secret"), ("bc", "b-pass")] {
            let ok = run(
                &l,
                request("/", &[("authorization", &basic(user, password))]),
            )
            .await;
            assert_eq!(ok.status, 200, "{user}");
            let id = ok.identity.unwrap();
            assert_eq!(id.method, AuthMethod::Basic);
            assert_eq!(id.subject.as_deref(), Some(user));
            // The credentials go on to the backend, as with nginx's auth_basic.
            assert!(ok.upstream.unwrap().contains_key("authorization"));

            let bad = run(&l, request("/", &[("authorization", &basic(user, "nope"))])).await;
            assert_eq!(bad.status, 401, "{user}");
            assert_eq!(bad.headers["www-authenticate"], r#"Basic realm="Shop""#);
            assert!(bad.upstream.is_none());
        }
        let unknown = run(&l, request("/", &[("authorization", &basic("eve", "x"))])).await;
        assert_eq!(unknown.status, 401);
        let garbage = run(&l, request("/", &[("authorization", "Basic !!!")])).await;
        assert_eq!(garbage.status, 401);
    }

    #[tokio::test]
    async fn an_empty_file_refuses_everyone() {
        let l = layer("").unwrap();
        let seen = run(&l, request("/", &[("authorization", &basic("a", "b"))])).await;
        assert_eq!(seen.status, 401);
    }

    #[test]
    fn bad_lines_are_configuration_errors() {
        for (file, line) in [
            ("alice:$apr1$x\n", 1),
            ("ok:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nbob\n", 2),
            ("carol:plaintext\n", 1),
            ("dave:$2y$05$short\n", 1),
            (":{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n", 1),
        ] {
            match layer(file) {
                Err(AuthConfigError::Htpasswd { line: l, .. }) => assert_eq!(l, line, "{file}"),
                other => panic!("{file}: {other:?}"),
            }
        }
    }
}
