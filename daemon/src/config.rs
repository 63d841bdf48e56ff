//! The config file: `$XDG_CONFIG_HOME/cusax/config.toml`, or the path given with `--config`.
//!
//! Reading happens in two steps so that every error can name the file, the line and the key:
//! serde turns the TOML into the `Raw*` structs (unknown keys and wrong types fail there, and
//! the error's byte span is mapped back to the dotted key it falls in), then [`validate`]
//! checks meanings (URIs, JIDs, where passwords may live) with the spans kept by
//! [`toml::Spanned`].

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cusax_protocol::sip::{SipUri, SipUriError};
use cusax_protocol::xmpp::{AccountJid, AccountJidError};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where the config comes from, kept so that `Reload()` reads the same file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// Given with `--config`: then a missing file is an error, not "no accounts".
    pub explicit: bool,
}

impl ConfigSource {
    /// `--config PATH` when given, else the XDG config directory.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Self, ConfigError> {
        if let Some(path) = explicit {
            return Ok(Self { path, explicit: true });
        }
        let dirs = directories::ProjectDirs::from("org", "cusax", "cusax").ok_or(ConfigError::NoHome)?;
        Ok(Self { path: dirs.config_dir().join("config.toml"), explicit: false })
    }
}

/// A validated config. Both accounts are optional: the daemon runs with one, the other or none.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub sip: Option<SipAccount>,
    pub xmpp: Option<XmppAccount>,
    pub tls: TlsSettings,
    pub media: MediaSettings,
    pub correlation: CorrelationSettings,
    pub presence: PresenceSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SipAccount {
    pub aor: SipUri,
    pub registrar: Option<SipUri>,
    pub proxy: Option<SipUri>,
    /// Authentication user when it differs from the AoR's user part.
    pub username: Option<String>,
    pub password: Secret,
    pub transport: Option<SipTransport>,
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, PartialEq)]
pub struct XmppAccount {
    pub jid: AccountJid,
    pub password: Secret,
    /// `host:port` that skips the SRV lookup.
    pub server: Option<ServerAddress>,
    /// TLS from the first byte on `server` (XEP-0368), instead of STARTTLS.
    pub direct_tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where an account's password comes from. A literal never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// No password configured: the server must not ask for one.
    None,
    /// Written in the config file itself, which must then be private to the user.
    Literal(String),
    /// A file holding only the password, private to the user (mode 0600 or stricter).
    File(PathBuf),
    /// A Secret Service item, looked up by this name.
    SecretService(String),
}

impl Secret {
    /// The password itself (`None` when none is configured), read when it is needed so that
    /// a changed password file takes effect at the next login.
    pub async fn read(&self) -> Result<Option<String>, String> {
        match self {
            Secret::None => Ok(None),
            Secret::Literal(text) => Ok(Some(text.clone())),
            Secret::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
                Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
            }
            Secret::SecretService(_) => {
                Err("passwords from the Secret Service are not supported yet; use password_file".into())
            }
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::None => f.write_str("None"),
            Secret::Literal(_) => f.write_str("Literal(<redacted>)"),
            Secret::File(path) => f.debug_tuple("File").field(path).finish(),
            Secret::SecretService(name) => f.debug_tuple("SecretService").field(name).finish(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of extra trust anchors (a private CA), on top of the system roots.
    pub extra_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    /// Codec preference, most preferred first; never empty, no repeats.
    pub codecs: Vec<Codec>,
    pub input: AudioEndpoint,
    pub output: AudioEndpoint,
    /// Where calls' RTP/RTCP port pairs come from.
    pub rtp_ports: RangeInclusive<u16>,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            codecs: vec![Codec::Opus, Codec::Pcmu, Codec::Pcma],
            input: AudioEndpoint::Default,
            output: AudioEndpoint::Default,
            rtp_ports: 16384..=32767,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Opus,
    Pcmu,
    Pcma,
}

/// A sound device, or a headless stand-in for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioEndpoint {
    Default,
    Null,
    File(PathBuf),
    Device(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationSettings {
    pub share_with: ShareWith,
    /// How long a conversation context lives without traffic (cusax-wire.md 7.2).
    pub thread_idle: Duration,
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        Self { share_with: ShareWith::Mutual, thread_idle: Duration::from_secs(30 * 60) }
    }
}

/// Who receives our SIP addresses in messages and headers (cusax-wire.md 7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareWith {
    #[default]
    Mutual,
    Roster,
    Nobody,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceSettings {
    pub on_the_phone: OnThePhone,
}

/// How a running call shows in our presence (cusax-wire.md 7.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnThePhone {
    #[default]
    ShowAway,
    PepOnly,
    Off,
}

/// A config that could not be used. `Display` gives one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot find the home directory to locate the config; give --config PATH")]
    NoHome,
    #[error("{path}: cannot read the config: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {key}: {problem}")]
    Invalid { path: PathBuf, line: usize, column: usize, key: String, problem: Problem },
}

impl ConfigError {
    /// The short, stable name of what is wrong (`unknown-key`, `bad-sip-uri`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ConfigError::NoHome => "no-home",
            ConfigError::Read { .. } => "unreadable",
            ConfigError::Invalid { problem, .. } => problem.name(),
        }
    }
}

/// What is wrong at one place in the config file. Displays as `[name] detail`.
#[derive(Debug)]
pub enum Problem {
    Syntax(String),
    UnknownKey(String),
    MissingKey(String),
    WrongType(String),
    BadValue(String),
    BadSipUri(SipUriError),
    BadJid(AccountJidError),
    /// A literal password in a config file that group or others can access.
    ExposedPassword {
        mode: u32,
    },
    PasswordFile(String),
}

impl Problem {
    /// The short, stable name of the problem (`unknown-key`, `bad-sip-uri`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Problem::Syntax(_) => "syntax",
            Problem::UnknownKey(_) => "unknown-key",
            Problem::MissingKey(_) => "missing-key",
            Problem::WrongType(_) => "wrong-type",
            Problem::BadValue(_) => "bad-value",
            Problem::BadSipUri(_) => "bad-sip-uri",
            Problem::BadJid(_) => "bad-jid",
            Problem::ExposedPassword { .. } => "exposed-password",
            Problem::PasswordFile(_) => "password-file",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.name())?;
        match self {
            Problem::Syntax(detail)
            | Problem::UnknownKey(detail)
            | Problem::MissingKey(detail)
            | Problem::WrongType(detail)
            | Problem::BadValue(detail)
            | Problem::PasswordFile(detail) => f.write_str(detail),
            Problem::BadSipUri(e) => e.fmt(f),
            Problem::BadJid(e) => e.fmt(f),
            Problem::ExposedPassword { mode } => write!(
                f,
                "a literal password needs a config file only its owner can access (mode {mode:04o} \
                 gives group or others access): chmod 600 the file, or use password_file or \
                 {{ secret = \"...\" }}"
            ),
        }
    }
}

impl std::error::Error for Problem {}

impl From<SipUriError> for Problem {
    fn from(e: SipUriError) -> Self {
        Problem::BadSipUri(e)
    }
}

impl From<AccountJidError> for Problem {
    fn from(e: AccountJidError) -> Self {
        Problem::BadJid(e)
    }
}

impl Config {
    /// Reads and validates the config. A missing file at the default location means "no
    /// accounts yet"; a missing file given with `--config` is an error.
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        let text = match fs::read_to_string(&source.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !source.explicit => {
                return Ok(Self::empty());
            }
            Err(e) => {
                return Err(ConfigError::Read { path: source.path.clone(), source: e });
            }
        };
        let mode = fs::metadata(&source.path)
            .map_err(|e| ConfigError::Read { path: source.path.clone(), source: e })?
            .permissions()
            .mode();
        Self::parse(&text, &source.path, mode)
    }

    /// A config with no accounts and every setting at its default.
    pub fn empty() -> Self {
        Self {
            sip: None,
            xmpp: None,
            tls: TlsSettings::default(),
            media: MediaSettings::default(),
            correlation: CorrelationSettings::default(),
            presence: PresenceSettings::default(),
        }
    }

    /// Validates `text`, read from `path` whose permission bits are `mode`. Relative paths in
    /// the file are taken relative to the file's folder.
    pub fn parse(text: &str, path: &Path, mode: u32) -> Result<Self, ConfigError> {
        let at = |span: Range<usize>, key: String, problem: Problem| {
            let (line, column) = line_column(text, span.start);
            ConfigError::Invalid { path: path.to_owned(), line, column, key, problem }
        };
        let table = DeTable::parse(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            at(span, "(document)".into(), Problem::Syntax(e.message().to_owned()))
        })?;
        let raw = RawConfig::deserialize(toml::de::Deserializer::from(table.clone())).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (key, problem) = classify(e.message(), &table, &span);
            at(span, key, problem)
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        validate(raw, base, mode).map_err(|(span, key, problem)| at(span, key, problem))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Names the problem from serde's message, and the dotted key from where the span falls.
fn classify(message: &str, table: &Spanned<DeTable<'_>>, span: &Range<usize>) -> (String, Problem) {
    let mut path = key_path_at(table.get_ref(), span.start).unwrap_or_default();
    let first_line = message.lines().next().unwrap_or(message).to_owned();
    let quoted = first_line.split('`').nth(1).map(str::to_owned);
    let problem = if first_line.starts_with("unknown field") {
        // The span covers the unknown key itself; make sure the path ends in its name.
        if let Some(name) = &quoted
            && path.last() != Some(name)
        {
            path.push(name.clone());
        }
        Problem::UnknownKey(first_line)
    } else if first_line.starts_with("missing field") {
        if let Some(name) = quoted {
            path.push(name);
        }
        Problem::MissingKey(first_line)
    } else if first_line.starts_with("invalid type") {
        Problem::WrongType(first_line)
    } else {
        Problem::BadValue(first_line)
    };
    let key = if path.is_empty() { "(document)".to_owned() } else { path.join(".") };
    (key, problem)
}

/// The keys leading to the innermost entry whose key or value holds `offset`. Tables declared
/// with a `[header]` have a value span that covers only the header, so every entry is searched
/// rather than only those whose parent span holds the offset.
fn key_path_at(table: &DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    table.iter().find_map(|(key, value)| {
        let name = key.get_ref().to_string();
        if key.span().contains(&offset) {
            return Some(vec![name]);
        }
        let inner = key_path_in_value(value.get_ref(), offset);
        match inner {
            Some(mut rest) => {
                rest.insert(0, name);
                Some(rest)
            }
            None => value.span().contains(&offset).then(|| vec![name]),
        }
    })
}

fn key_path_in_value(value: &DeValue<'_>, offset: usize) -> Option<Vec<String>> {
    match value {
        DeValue::Table(table) => key_path_at(table, offset),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let inner = key_path_in_value(item.get_ref(), offset);
            match inner {
                Some(mut rest) => {
                    rest.insert(0, index.to_string());
                    Some(rest)
                }
                None => item.span().contains(&offset).then(|| vec![index.to_string()]),
            }
        }),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    sip: Option<RawSip>,
    xmpp: Option<RawXmpp>,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    media: RawMedia,
    #[serde(default)]
    correlation: RawCorrelation,
    #[serde(default)]
    presence: RawPresence,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    aor: Spanned<String>,
    registrar: Option<Spanned<String>>,
    proxy: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<RawPassword>>,
    password_file: Option<Spanned<PathBuf>>,
    transport: Option<SipTransport>,
    listen: Option<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXmpp {
    jid: Spanned<String>,
    password: Option<Spanned<RawPassword>>,
    password_file: Option<Spanned<PathBuf>>,
    server: Option<Spanned<String>>,
    direct_tls: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    extra_ca: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    codecs: Option<Spanned<Vec<Codec>>>,
    input: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    rtp_ports: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCorrelation {
    #[serde(default)]
    share_with: ShareWith,
    thread_idle: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPresence {
    #[serde(default)]
    on_the_phone: OnThePhone,
}

const UNQUOTED_PASSWORD: &str = "invalid type: a password is a quoted string or { secret = \"item name\" }";

/// `password = "literal"` or `password = { secret = "item name" }`.
enum RawPassword {
    Literal(String),
    SecretService(String),
}

impl<'de> Deserialize<'de> for RawPassword {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PasswordVisitor;
        impl<'de> Visitor<'de> for PasswordVisitor {
            type Value = RawPassword;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a table { secret = \"item name\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPassword, E> {
                Ok(RawPassword::Literal(v.to_owned()))
            }
            // serde's own message would echo the value: a password written without quotes.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawPassword, E> {
                Err(E::custom(UNQUOTED_PASSWORD))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawPassword, E> {
                Err(E::custom(UNQUOTED_PASSWORD))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawPassword, E> {
                Err(E::custom(UNQUOTED_PASSWORD))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawPassword, E> {
                Err(E::custom(UNQUOTED_PASSWORD))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPassword, A::Error> {
                let mut secret = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "secret" {
                        return Err(de::Error::unknown_field(&key, &["secret"]));
                    }
                    secret = Some(map.next_value::<String>()?);
                }
                secret.map(RawPassword::SecretService).ok_or_else(|| de::Error::missing_field("secret"))
            }
        }
        deserializer.deserialize_any(PasswordVisitor)
    }
}

type Invalid = (Range<usize>, String, Problem);

fn validate(raw: RawConfig, base: &Path, mode: u32) -> Result<Config, Invalid> {
    let sip = raw.sip.map(|sip| validate_sip(sip, base, mode)).transpose()?;
    let xmpp = raw.xmpp.map(|xmpp| validate_xmpp(xmpp, base, mode)).transpose()?;
    let extra_ca = raw.tls.extra_ca.map(|ca| readable_file(ca, base, "tls.extra_ca")).transpose()?;
    let defaults = MediaSettings::default();
    let codecs = match raw.media.codecs {
        None => defaults.codecs,
        Some(codecs) => {
            let span = codecs.span();
            let list = codecs.into_inner();
            if list.is_empty() {
                return Err((
                    span,
                    "media.codecs".into(),
                    Problem::BadValue("name at least one codec".into()),
                ));
            }
            if let Some(repeat) = list.iter().enumerate().find(|(i, c)| list[..*i].contains(c)) {
                let problem = Problem::BadValue(format!("{:?} is listed twice", repeat.1).to_lowercase());
                return Err((span, "media.codecs".into(), problem));
            }
            list
        }
    };
    let input = raw.media.input.map(|v| audio_endpoint(v, base, "media.input")).transpose()?;
    let output = raw.media.output.map(|v| audio_endpoint(v, base, "media.output")).transpose()?;
    let rtp_ports = match raw.media.rtp_ports {
        None => defaults.rtp_ports.clone(),
        Some(text) => parse_port_range(text.get_ref()).ok_or_else(|| {
            let problem = Problem::BadValue(format!(
                "{:?} is not a port range like \"16384-32767\" above 1023 with room for a port pair",
                text.get_ref()
            ));
            (text.span(), "media.rtp_ports".to_owned(), problem)
        })?,
    };
    let thread_idle = match raw.correlation.thread_idle {
        None => CorrelationSettings::default().thread_idle,
        Some(text) => parse_duration(text.get_ref()).ok_or_else(|| {
            let problem = Problem::BadValue(format!(
                "{:?} is not a duration like \"90s\", \"30m\" or \"2h\"",
                text.get_ref()
            ));
            (text.span(), "correlation.thread_idle".to_owned(), problem)
        })?,
    };
    Ok(Config {
        sip,
        xmpp,
        tls: TlsSettings { extra_ca },
        media: MediaSettings {
            codecs,
            input: input.unwrap_or(defaults.input),
            output: output.unwrap_or(defaults.output),
            rtp_ports,
        },
        correlation: CorrelationSettings { share_with: raw.correlation.share_with, thread_idle },
        presence: PresenceSettings { on_the_phone: raw.presence.on_the_phone },
    })
}

fn validate_sip(raw: RawSip, base: &Path, mode: u32) -> Result<SipAccount, Invalid> {
    let uri = |value: Spanned<String>, key: &str, aor: bool| {
        let parsed = if aor { SipUri::parse_aor(value.get_ref()) } else { SipUri::parse(value.get_ref()) };
        parsed.map_err(|e| (value.span(), key.to_owned(), Problem::from(e)))
    };
    let username = match raw.username {
        Some(name) if name.get_ref().is_empty() || name.get_ref().chars().any(char::is_control) => {
            return Err((
                name.span(),
                "sip.username".into(),
                Problem::BadValue("empty or with control characters".into()),
            ));
        }
        other => other.map(Spanned::into_inner),
    };
    Ok(SipAccount {
        aor: uri(raw.aor, "sip.aor", true)?,
        registrar: raw.registrar.map(|v| uri(v, "sip.registrar", false)).transpose()?,
        proxy: raw.proxy.map(|v| uri(v, "sip.proxy", false)).transpose()?,
        username,
        password: secret(raw.password, raw.password_file, base, mode, "sip")?,
        transport: raw.transport,
        listen: raw.listen,
    })
}

fn validate_xmpp(raw: RawXmpp, base: &Path, mode: u32) -> Result<XmppAccount, Invalid> {
    let jid = AccountJid::parse(raw.jid.get_ref())
        .map_err(|e| (raw.jid.span(), "xmpp.jid".to_owned(), Problem::from(e)))?;
    let server = raw
        .server
        .map(|text| {
            parse_server(text.get_ref()).ok_or_else(|| {
                let problem = Problem::BadValue(format!("{:?} is not host:port", text.get_ref()));
                (text.span(), "xmpp.server".to_owned(), problem)
            })
        })
        .transpose()?;
    let direct_tls = match (raw.direct_tls, &server) {
        (Some(direct), None) if *direct.get_ref() => {
            let problem =
                Problem::BadValue("direct_tls needs xmpp.server: without it the SRV records decide".into());
            return Err((direct.span(), "xmpp.direct_tls".to_owned(), problem));
        }
        (direct, _) => direct.is_some_and(|d| *d.get_ref()),
    };
    Ok(XmppAccount {
        jid,
        password: secret(raw.password, raw.password_file, base, mode, "xmpp")?,
        server,
        direct_tls,
    })
}

fn secret(
    password: Option<Spanned<RawPassword>>,
    password_file: Option<Spanned<PathBuf>>,
    base: &Path,
    mode: u32,
    section: &str,
) -> Result<Secret, Invalid> {
    match (password, password_file) {
        (Some(_), Some(file)) => Err((
            file.span(),
            format!("{section}.password_file"),
            Problem::BadValue("give either password or password_file, not both".into()),
        )),
        (Some(password), None) => {
            let span = password.span();
            match password.into_inner() {
                RawPassword::Literal(_) if mode & 0o077 != 0 => Err((
                    span,
                    format!("{section}.password"),
                    Problem::ExposedPassword { mode: mode & 0o7777 },
                )),
                RawPassword::Literal(text) => Ok(Secret::Literal(text)),
                RawPassword::SecretService(name) => Ok(Secret::SecretService(name)),
            }
        }
        (None, Some(file)) => {
            let key = format!("{section}.password_file");
            let span = file.span();
            let path = base.join(file.into_inner());
            let meta = fs::metadata(&path).map_err(|e| {
                (span.clone(), key.clone(), Problem::PasswordFile(format!("{}: {e}", path.display())))
            })?;
            if !meta.is_file() {
                return Err((span, key, Problem::PasswordFile(format!("{} is not a file", path.display()))));
            }
            let file_mode = meta.permissions().mode() & 0o7777;
            if file_mode & 0o077 != 0 {
                let problem = Problem::PasswordFile(format!(
                    "{} has mode {file_mode:04o}; a password file must be accessible to its owner only (chmod 600)",
                    path.display()
                ));
                return Err((span, key, problem));
            }
            Ok(Secret::File(path))
        }
        (None, None) => Ok(Secret::None),
    }
}

fn readable_file(value: Spanned<PathBuf>, base: &Path, key: &str) -> Result<PathBuf, Invalid> {
    let span = value.span();
    let path = base.join(value.into_inner());
    match fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err((span, key.to_owned(), Problem::BadValue(format!("{} is not a file", path.display())))),
        Err(e) => Err((span, key.to_owned(), Problem::BadValue(format!("{}: {e}", path.display())))),
    }
}

fn audio_endpoint(value: Spanned<String>, base: &Path, key: &str) -> Result<AudioEndpoint, Invalid> {
    let span = value.span();
    let text = value.into_inner();
    match text.as_str() {
        "default" => Ok(AudioEndpoint::Default),
        "null" => Ok(AudioEndpoint::Null),
        "" => Err((span, key.to_owned(), Problem::BadValue("empty device name; use \"default\"".into()))),
        _ => match text.strip_prefix("file:") {
            Some("") => {
                Err((span, key.to_owned(), Problem::BadValue("file: needs a path to a .wav file".into())))
            }
            Some(file) => Ok(AudioEndpoint::File(base.join(file))),
            None => Ok(AudioEndpoint::Device(text)),
        },
    }
}

/// `host:port` or `[v6]:port`.
fn parse_server(text: &str) -> Option<ServerAddress> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let valid = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    valid.then(|| ServerAddress { host: host.to_owned(), port })
}

/// `"90s"`, `"30m"`, `"2h"`: a whole number and one unit.
/// "LOW-HIGH": unprivileged, and holding at least one even port and the odd one after it.
fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (low, high) = text.split_once('-')?;
    let (low, high): (u16, u16) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    let first_even = low.checked_add(low % 2)?;
    (low >= 1024 && first_even < high).then_some(low..=high)
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let value: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => value,
        "m" => value.checked_mul(60)?,
        "h" => value.checked_mul(3600)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/cusax-test/config.toml"), 0o600)
    }

    fn error(text: &str) -> (String, usize, String) {
        match parse(text) {
            Err(ConfigError::Invalid { line, key, problem, .. }) => (problem.name().to_owned(), line, key),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_means_no_accounts_and_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::empty());
        assert_eq!(config.media.codecs, vec![Codec::Opus, Codec::Pcmu, Codec::Pcma]);
        assert_eq!(config.correlation.thread_idle, Duration::from_secs(1800));
    }

    #[test]
    fn full_config_reads_every_key() {
        let config = parse(
            r#"
[sip]
aor = "sip:alice@example.com"
registrar = "sip:example.com"
proxy = "sip:sip.example.com;transport=tls"
username = "alice-auth"
password = { secret = "sip" }
transport = "tls"
listen = "127.0.0.1:5070"

[xmpp]
jid = "alice@example.org"
password = "hunter2"
server = "[::1]:5222"

[media]
codecs = ["pcma", "opus"]
input = "file:tone.wav"
output = "null"

[correlation]
share_with = "roster"
thread_idle = "10m"

[presence]
on_the_phone = "pep-only"
"#,
        )
        .unwrap();
        let sip = config.sip.unwrap();
        assert_eq!(sip.aor.as_str(), "sip:alice@example.com");
        assert_eq!(sip.password, Secret::SecretService("sip".into()));
        assert_eq!(sip.transport, Some(SipTransport::Tls));
        assert_eq!(sip.listen, Some("127.0.0.1:5070".parse().unwrap()));
        let xmpp = config.xmpp.unwrap();
        assert_eq!(xmpp.jid.to_string(), "alice@example.org");
        assert_eq!(xmpp.password, Secret::Literal("hunter2".into()));
        assert_eq!(xmpp.server, Some(ServerAddress { host: "::1".into(), port: 5222 }));
        assert_eq!(config.media.codecs, vec![Codec::Pcma, Codec::Opus]);
        assert_eq!(config.media.input, AudioEndpoint::File("/etc/cusax-test/tone.wav".into()));
        assert_eq!(config.media.output, AudioEndpoint::Null);
        assert_eq!(config.correlation.share_with, ShareWith::Roster);
        assert_eq!(config.correlation.thread_idle, Duration::from_secs(600));
        assert_eq!(config.presence.on_the_phone, OnThePhone::PepOnly);
    }

    #[test]
    fn each_bad_input_is_named_with_line_and_key() {
        assert_eq!(error("[sip]\naor = \"sip:a@b\"\nfoo = 1\n"), ("unknown-key".into(), 3, "sip.foo".into()));
        assert_eq!(error("[nonsense]\n"), ("unknown-key".into(), 1, "nonsense".into()));
        assert_eq!(error("[xmpp]\njid = 5\n"), ("wrong-type".into(), 2, "xmpp.jid".into()));
        assert_eq!(error("[sip]\n\naor = \"tel:+1555\"\n"), ("bad-sip-uri".into(), 3, "sip.aor".into()));
        assert_eq!(error("[sip]\naor = \"sip:example.com\"\n"), ("bad-sip-uri".into(), 2, "sip.aor".into()));
        assert_eq!(error("[xmpp]\njid = \"example.org\"\n"), ("bad-jid".into(), 2, "xmpp.jid".into()));
        assert_eq!(error("[xmpp]\npassword = \"x\"\n"), ("missing-key".into(), 1, "xmpp.jid".into()));
        assert_eq!(
            error("[sip]\naor = \"sip:a@b\"\ntransport = \"sctp\"\n"),
            ("bad-value".into(), 3, "sip.transport".into())
        );
        assert_eq!(
            error("[media]\ncodecs = [\"pcmu\", \"g729\"]\n"),
            ("bad-value".into(), 2, "media.codecs.1".into())
        );
        assert_eq!(
            error("[media]\ncodecs = [\"pcmu\", \"pcmu\"]\n"),
            ("bad-value".into(), 2, "media.codecs".into())
        );
        assert_eq!(
            error("[correlation]\nthread_idle = \"soon\"\n"),
            ("bad-value".into(), 2, "correlation.thread_idle".into())
        );
        assert_eq!(
            error("[xmpp]\njid = \"a@b\"\nserver = \"b\"\n"),
            ("bad-value".into(), 3, "xmpp.server".into())
        );
        assert_eq!(
            error("[xmpp]\njid = \"a@b\"\ndirect_tls = true\n"),
            ("bad-value".into(), 3, "xmpp.direct_tls".into())
        );
        assert_eq!(
            error("[sip]\naor = \"sip:a@b\"\npassword = { vault = \"x\" }\n"),
            ("unknown-key".into(), 3, "sip.password.vault".into())
        );
        assert_eq!(error("x = \n"), ("syntax".into(), 1, "(document)".into()));
    }

    #[test]
    fn literal_password_needs_a_private_file() {
        let text = "[xmpp]\njid = \"a@b\"\npassword = \"hunter2\"\n";
        match Config::parse(text, Path::new("/x/config.toml"), 0o100644) {
            Err(ConfigError::Invalid {
                line: 3,
                key,
                problem: Problem::ExposedPassword { mode: 0o644 },
                ..
            }) => {
                assert_eq!(key, "xmpp.password")
            }
            other => panic!("{other:?}"),
        }
        assert!(Config::parse(text, Path::new("/x/config.toml"), 0o100600).is_ok());
        let secret = "[xmpp]\njid = \"a@b\"\npassword = { secret = \"xmpp\" }\n";
        assert!(Config::parse(secret, Path::new("/x/config.toml"), 0o100644).is_ok());
    }

    #[test]
    fn password_file_must_exist_and_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        fs::write(&file, "hunter2").unwrap();
        let config_path = dir.path().join("config.toml");
        let text = "[sip]\naor = \"sip:a@b\"\npassword_file = \"pw\"\n";
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        match Config::parse(text, &config_path, 0o644) {
            Err(e @ ConfigError::Invalid { line: 3, .. }) => assert_eq!(e.name(), "password-file"),
            other => panic!("{other:?}"),
        }
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let config = Config::parse(text, &config_path, 0o644).unwrap();
        assert_eq!(config.sip.unwrap().password, Secret::File(file));
        let missing = "[sip]\naor = \"sip:a@b\"\npassword_file = \"nope\"\n";
        assert_eq!(Config::parse(missing, &config_path, 0o644).unwrap_err().name(), "password-file");
    }

    #[test]
    fn error_text_names_file_line_and_key() {
        let e = parse("[sip]\naor = \"sip:a@b\"\nfoo = 1\n").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("/etc/cusax-test/config.toml:3:1: sip.foo: [unknown-key]"), "{text}");
    }

    #[test]
    fn an_unquoted_password_is_refused_without_echoing_it() {
        let e = parse("[sip]\naor = \"sip:a@b\"\npassword = 73519264\n").unwrap_err();
        let text = e.to_string();
        assert_eq!(e.name(), "wrong-type");
        assert!(text.contains(":3:") && text.contains("sip.password"), "{text}");
        assert!(!text.contains("73519264"), "{text}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let secret = Secret::Literal("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn durations_and_servers() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0m"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
        assert_eq!(parse_server("xmpp.example.org:5222").unwrap().to_string(), "xmpp.example.org:5222");
        assert_eq!(parse_server("[::1]:5222").unwrap().to_string(), "[::1]:5222");
        assert_eq!(parse_server("host:0"), None);
        assert_eq!(parse_server(":5222"), None);
        assert_eq!(parse_server("bad host:1"), None);
    }
}
