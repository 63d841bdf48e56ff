//! HTTP Digest authentication as SIP uses it: RFC 2617 with RFC 7616's SHA-256, as RFC 8760
//! updates SIP. We answer `WWW-Authenticate` (401) and `Proxy-Authenticate` (407) challenges
//! with `qop=auth` when offered, MD5 or SHA-256.

use std::fmt::Write as _;

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a Digest challenge")]
    NotDigest,
    #[error("the challenge has no {0}")]
    Missing(&'static str),
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    #[error("the challenge offers only qop {0:?}; we do qop=auth")]
    Qop(String),
    #[error("malformed challenge parameters")]
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 => Sha256::digest(data.as_bytes()).to_vec(),
        };
        bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }
}

/// One parsed Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// `qop=auth` was offered (the only qop we use); false for an RFC 2069 challenge.
    pub qop_auth: bool,
    /// `stale=true`: the nonce expired but our credentials were right.
    pub stale: bool,
}

impl Challenge {
    /// Reads the value of a `WWW-Authenticate` or `Proxy-Authenticate` header.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim();
        let (scheme, params) = value.split_once(char::is_whitespace).ok_or(DigestError::NotDigest)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let params = auth_params(params)?;
        let get =
            |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            Some(other) => return Err(DigestError::Algorithm(other)),
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(list) if list.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")) => true,
            Some(list) => return Err(DigestError::Qop(list)),
        };
        Ok(Self {
            realm: get("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: get("nonce").ok_or(DigestError::Missing("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// Picks the challenge to answer from all the headers of one response: SHA-256 before
    /// MD5, as RFC 8760 section 2.4 asks; unreadable ones are skipped.
    pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, DigestError> {
        let mut best: Option<Self> = None;
        let mut first_error = None;
        for value in values {
            match Self::parse(value) {
                Ok(c)
                    if best.as_ref().is_none_or(|b| {
                        b.algorithm == Algorithm::Md5 && c.algorithm == Algorithm::Sha256
                    }) =>
                {
                    best = Some(c)
                }
                Ok(_) => {}
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        best.ok_or(first_error.unwrap_or(DigestError::NotDigest))
    }

    /// The `Authorization` / `Proxy-Authorization` header value for a request. `nc` counts the
    /// requests made with this nonce (from 1); `cnonce` is fresh client randomness.
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let a = self.algorithm;
        let ha1 = a.hash(&format!("{username}:{}:{password}", self.realm));
        let ha2 = a.hash(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            a.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            a.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={}",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            a.name()
        );
        if self.qop_auth {
            let _ = write!(header, ", qop=auth, nc={nc}, cnonce=\"{}\"", quote(cnonce));
        }
        if let Some(opaque) = &self.opaque {
            let _ = write!(header, ", opaque=\"{}\"", quote(opaque));
        }
        header
    }
}

fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `name=value, name="quoted, value"` into pairs, unquoted.
fn auth_params(text: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut params = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or(DigestError::Malformed)?;
        let name = name.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.ok_or(DigestError::Malformed)?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        if name.is_empty() {
            return Err(DigestError::Malformed);
        }
        params.push((name, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 2617 section 3.5 example, computed independently by the digest_auth crate.
    #[test]
    fn md5_with_qop_auth_matches_an_independent_implementation() {
        let www = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let challenge = Challenge::parse(www).unwrap();
        let ours = challenge.answer("Mufasa", "Circle Of Life", "GET", "/dir/index.html", 1, "0a4f113b");
        assert!(ours.contains("response=\"6629fae49393a05397450978507c4ef1\""), "{ours}");

        let mut prompt = digest_auth::parse(www).unwrap();
        let context = digest_auth::AuthContext::new_with_method(
            "Mufasa",
            "Circle Of Life",
            "/dir/index.html",
            Option::<&[u8]>::None,
            digest_auth::HttpMethod::GET,
        );
        prompt.nc = 0;
        let oracle = prompt.respond(&context).unwrap();
        let theirs = oracle.response.clone();
        let ours_for_their_cnonce = challenge.answer(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            oracle.nc,
            oracle.cnonce.as_deref().unwrap(),
        );
        assert!(ours_for_their_cnonce.contains(&format!("response=\"{theirs}\"")), "{ours_for_their_cnonce}");
    }

    #[test]
    fn sha256_for_a_sip_method_matches_an_independent_implementation() {
        let www = r#"Digest realm="127.0.0.1", nonce="Z2hv5mdodMwmYhbL", algorithm=SHA-256, qop="auth""#;
        let challenge = Challenge::parse(www).unwrap();
        assert_eq!(challenge.algorithm, Algorithm::Sha256);
        let mut prompt = digest_auth::parse(www).unwrap();
        let context = digest_auth::AuthContext::new_with_method(
            "alice",
            "secret-alice",
            "sip:127.0.0.1",
            Option::<&[u8]>::None,
            digest_auth::HttpMethod::from("REGISTER"),
        );
        let oracle = prompt.respond(&context).unwrap();
        let ours = challenge.answer(
            "alice",
            "secret-alice",
            "REGISTER",
            "sip:127.0.0.1",
            oracle.nc,
            oracle.cnonce.as_deref().unwrap(),
        );
        assert!(ours.contains(&format!("response=\"{}\"", oracle.response)), "{ours}");
        assert!(ours.contains("algorithm=SHA-256") && ours.contains("qop=auth, nc=00000001"), "{ours}");
    }

    #[test]
    fn rfc2069_challenges_without_qop_still_work() {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert!(!c.qop_auth);
        let answer = c.answer("u", "p", "REGISTER", "sip:r", 1, "c");
        assert!(!answer.contains("qop") && answer.contains("algorithm=MD5"));
    }

    #[test]
    fn prefers_sha256_and_reads_stale() {
        let chosen = Challenge::choose([
            "Digest realm=\"r\", nonce=\"a\", algorithm=MD5, qop=\"auth\"",
            "Digest realm=\"r\", nonce=\"b\", algorithm=SHA-256, qop=\"auth\", stale=TRUE",
        ])
        .unwrap();
        assert_eq!((chosen.algorithm, chosen.nonce.as_str(), chosen.stale), (Algorithm::Sha256, "b", true));
    }

    #[test]
    fn bad_challenges_get_named_errors() {
        assert_eq!(Challenge::parse("Basic realm=\"r\""), Err(DigestError::NotDigest));
        assert_eq!(Challenge::parse("Digest nonce=\"n\""), Err(DigestError::Missing("realm")));
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"),
            Err(DigestError::Algorithm("SHA-512-256".into()))
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""),
            Err(DigestError::Qop("auth-int".into()))
        );
        assert_eq!(Challenge::parse("Digest realm=\"unterminated"), Err(DigestError::Malformed));
        assert_eq!(Challenge::parse("Digest"), Err(DigestError::NotDigest));
        assert_eq!(Challenge::choose([]), Err(DigestError::NotDigest));
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let c = Challenge::parse(r#"Digest realm="a, \"b\"", nonce="n,n""#).unwrap();
        assert_eq!(c.realm, "a, \"b\"");
        assert_eq!(c.nonce, "n,n");
        assert!(c.answer("u", "p", "M", "sip:x", 1, "c").contains(r#"realm="a, \"b\"""#));
    }
}
