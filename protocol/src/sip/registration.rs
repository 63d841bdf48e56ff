//! Keeping a SIP registration (RFC 3261 section 10) alive, sans-I/O: REGISTER with digest
//! authentication, refresh before expiry, retry with jittered backoff, and unREGISTER. The
//! Contact carries `+sip.instance` and `reg-id` (RFC 5626/5627); a GRUU granted in the 200 is
//! read and reported.
//!
//! The driver feeds responses ([`Registration::on_response`]), timeouts and transport errors
//! with the current time; the machine answers with [`RegistrationEvent`]s.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::digest::Challenge;
use super::header::{NameAddr, all, cseq, status_code, top_via_branch};
use super::message::Normalised;
use super::transaction::{ClientOutput, NonInviteClient, Reliability};

/// Randomness from outside (the OS CSPRNG in the daemon, a fixed sequence in tests).
pub trait Entropy: Send + Sync {
    fn fill(&mut self, bytes: &mut [u8]);
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(entropy: &mut dyn Entropy, bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    entropy.fill(&mut raw);
    raw.iter().fold(String::with_capacity(bytes * 2), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// A random (version 4) UUID as a URN, for `+sip.instance`.
pub fn instance_urn(entropy: &mut dyn Entropy) -> String {
    format!("urn:uuid:{}", uuid_v4(entropy))
}

/// A random (version 4) UUID in its usual text form (RFC 9562 section 5.4).
pub fn uuid_v4(entropy: &mut dyn Entropy) -> String {
    let mut b = [0u8; 16];
    entropy.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// What the registration is made of.
#[derive(Clone)]
pub struct RegistrationConfig {
    /// Our address of record (From and To).
    pub aor: String,
    /// The Request-URI of the REGISTER (the registrar's domain).
    pub registrar: String,
    pub auth_user: String,
    pub password: Option<String>,
    /// The URI others reach us at over this transport (`sip:alice@192.0.2.1:5070;transport=tcp`).
    pub contact: String,
    /// `UDP`, `TCP` or `TLS`, for the Via.
    pub transport: String,
    /// `host:port` we send from, for the Via.
    pub sent_by: String,
    /// `urn:uuid:...`, stable across restarts.
    pub instance: String,
    /// The expiry we ask for, in seconds.
    pub expires: u32,
    pub reliability: Reliability,
    pub user_agent: String,
}

impl std::fmt::Debug for RegistrationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationConfig")
            .field("aor", &self.aor)
            .field("registrar", &self.registrar)
            .field("contact", &self.contact)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    Registering,
    Registered {
        expires: u32,
        pub_gruu: Option<String>,
    },
    /// `retry_in` is `None` when retrying cannot help (wrong password, refused).
    Failed {
        reason: String,
        retry_in: Option<Duration>,
    },
    Unregistered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationEvent {
    Transmit(Vec<u8>),
    State(RegistrationState),
}

/// Backoff after failures (see [`backoff`]); the jitter keeps many clients out of step.
/// The longest Retry-After we honour (a day); a larger one is someone else's mistake.
const RETRY_AFTER_MAX: u64 = 24 * 3600;
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How long to wait before attempt `failures + 1`: a ceiling of 2 s doubling per failure up
/// to 5 minutes, and a wait drawn between half and all of it.
pub fn backoff(failures: u32, entropy: &mut dyn Entropy) -> Duration {
    let ceiling = BACKOFF_FIRST.saturating_mul(1 << failures.min(8)).min(BACKOFF_MAX);
    let mut byte = [0u8];
    entropy.fill(&mut byte);
    ceiling / 2 + ceiling / 2 * u32::from(byte[0]) / 255
}

struct Pending {
    branch: String,
    transaction: NonInviteClient,
    unregister: bool,
    /// The request answers the challenge of the response just before it (not credentials
    /// cached from an earlier round, as a refresh sends them).
    fresh_credentials: bool,
}

pub struct Registration {
    config: RegistrationConfig,
    entropy: Box<dyn Entropy>,
    call_id: String,
    from_tag: String,
    cseq: u32,
    expires: u32,
    /// The challenge our credentials answer, its kind (401 or 407) and its nonce count.
    challenge: Option<(Challenge, bool, u32)>,
    pending: Option<Pending>,
    /// When to send the next REGISTER (a refresh or a retry).
    next_register: Option<Instant>,
    failures: u32,
    state: RegistrationState,
    unregistering: bool,
}

impl Registration {
    pub fn new(config: RegistrationConfig, mut entropy: Box<dyn Entropy>) -> Self {
        let call_id = random_hex(entropy.as_mut(), 16);
        let from_tag = random_hex(entropy.as_mut(), 8);
        let expires = config.expires;
        Self {
            config,
            entropy,
            call_id,
            from_tag,
            cseq: 0,
            expires,
            challenge: None,
            pending: None,
            next_register: None,
            failures: 0,
            state: RegistrationState::Unregistered,
            unregistering: false,
        }
    }

    pub fn state(&self) -> &RegistrationState {
        &self.state
    }

    /// Sends the first REGISTER.
    pub fn start(&mut self, now: Instant) -> Vec<RegistrationEvent> {
        self.unregistering = false;
        self.send(now, false)
    }

    /// Removes our binding (Expires: 0). The state becomes `Unregistered` when the registrar
    /// confirms, or at once when nothing is registered.
    pub fn unregister(&mut self, now: Instant) -> Vec<RegistrationEvent> {
        self.unregistering = true;
        self.next_register = None;
        match self.state {
            RegistrationState::Registered { .. } | RegistrationState::Registering => self.send(now, true),
            _ => {
                self.pending = None;
                self.set_state(RegistrationState::Unregistered)
            }
        }
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        let transaction = self.pending.as_ref().and_then(|p| p.transaction.next_timeout());
        match (transaction, self.next_register) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_timeout(&mut self, now: Instant) -> Vec<RegistrationEvent> {
        let mut events = Vec::new();
        if let Some(pending) = self.pending.as_mut() {
            for output in pending.transaction.on_timeout(now) {
                match output {
                    ClientOutput::Transmit(bytes) => events.push(RegistrationEvent::Transmit(bytes)),
                    ClientOutput::TimedOut => {
                        self.pending = None;
                        events.extend(self.fail_temporarily(
                            "no answer from the registrar".into(),
                            None,
                            now,
                        ));
                        return events;
                    }
                    ClientOutput::Response(_) => {}
                }
            }
            if pending.transaction.is_terminated() {
                self.pending = None;
            }
        }
        if self.next_register.is_some_and(|at| now >= at) && self.pending.is_none() {
            self.next_register = None;
            events.extend(self.send(now, false));
        }
        events
    }

    /// Whether a response belongs to our pending REGISTER.
    pub fn owns(&self, response: &Normalised) -> bool {
        let Some(pending) = &self.pending else { return false };
        top_via_branch(response).is_some_and(|b| b == pending.branch)
            && cseq(response).is_some_and(|(n, m)| n == self.cseq && m.eq_ignore_ascii_case("REGISTER"))
    }

    pub fn on_response(&mut self, response: &Normalised, now: Instant) -> Vec<RegistrationEvent> {
        if !self.owns(response) {
            return Vec::new();
        }
        let Some(status) = status_code(&response.start_line) else { return Vec::new() };
        let Some(pending) = self.pending.as_mut() else { return Vec::new() };
        let outputs = pending.transaction.on_response(status, now);
        if !outputs.contains(&ClientOutput::Response(status)) || status < 200 {
            return Vec::new();
        }
        let unregister = pending.unregister;
        let fresh_credentials = pending.fresh_credentials;
        // The answer is in: later copies of it do not match any REGISTER we wait for.
        self.pending = None;
        let reason = response.start_line.split_once(' ').map(|(_, r)| r).unwrap_or_default().to_owned();
        match status {
            200..=299 if unregister => {
                self.pending = None;
                self.set_state(RegistrationState::Unregistered)
            }
            200..=299 => self.registered(response, now),
            401 | 407 => self.challenged(response, status == 407, fresh_credentials, now),
            423 => {
                let minimum = response.header("Min-Expires").and_then(|v| v.trim().parse::<u32>().ok());
                match minimum {
                    Some(min) if min > self.expires => {
                        self.expires = min;
                        self.pending = None;
                        self.send(now, unregister)
                    }
                    _ => self.fail_for_good(format!("the registrar refused our expiry: {reason}")),
                }
            }
            403 | 404 | 603 => {
                self.fail_for_good(format!("the registrar refused the registration: {reason}"))
            }
            _ => {
                let retry_after = response
                    .header("Retry-After")
                    .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
                    .map(|seconds| Duration::from_secs(seconds.min(RETRY_AFTER_MAX)));
                self.fail_temporarily(format!("the registrar answered {reason}"), retry_after, now)
            }
        }
    }

    fn registered(&mut self, response: &Normalised, now: Instant) -> Vec<RegistrationEvent> {
        let ours = all(response, "Contact").filter_map(NameAddr::parse).find(|c| {
            c.param("+sip.instance").is_some_and(|i| i.trim_matches(['<', '>']) == self.config.instance)
                || c.uri == self.config.contact
        });
        let granted = ours
            .as_ref()
            .and_then(|c| c.param("expires")?.parse::<u32>().ok())
            .or_else(|| response.header("Expires")?.trim().parse().ok())
            .unwrap_or(self.expires);
        if granted == 0 {
            return self.fail_temporarily("the registrar kept no binding for us".into(), None, now);
        }
        self.failures = 0;
        // Refresh at about 80 % of the granted time (RFC 3261 10.2.4 leaves the margin to us).
        self.next_register = Some(now + Duration::from_secs(u64::from(granted)) * 4 / 5);
        let pub_gruu = ours.and_then(|c| c.param("pub-gruu").map(str::to_owned));
        self.set_state(RegistrationState::Registered { expires: granted, pub_gruu })
    }

    fn challenged(
        &mut self,
        response: &Normalised,
        proxy: bool,
        fresh_credentials: bool,
        now: Instant,
    ) -> Vec<RegistrationEvent> {
        let header = if proxy { "Proxy-Authenticate" } else { "WWW-Authenticate" };
        let challenge = match Challenge::choose(all(response, header)) {
            Ok(challenge) => challenge,
            Err(e) => return self.fail_for_good(format!("cannot answer the registrar's challenge: {e}")),
        };
        if self.config.password.is_none() {
            return self.fail_for_good("the registrar asks for a password and none is configured".into());
        }
        // Credentials computed for the challenge just before, refused without "stale": the
        // password is wrong. Cached ones (a refresh) may simply meet a new nonce.
        if fresh_credentials && !challenge.stale {
            return self
                .fail_for_good("the registrar refused our credentials: wrong username or password".into());
        }
        self.challenge = Some((challenge, proxy, 0));
        self.pending = None;
        let unregister = self.unregistering;
        let events = self.send(now, unregister);
        if let Some(pending) = self.pending.as_mut() {
            pending.fresh_credentials = true;
        }
        events
    }

    fn fail_for_good(&mut self, reason: String) -> Vec<RegistrationEvent> {
        self.pending = None;
        self.next_register = None;
        if self.unregistering {
            return self.set_state(RegistrationState::Unregistered);
        }
        self.set_state(RegistrationState::Failed { reason, retry_in: None })
    }

    fn fail_temporarily(
        &mut self,
        reason: String,
        at_least: Option<Duration>,
        now: Instant,
    ) -> Vec<RegistrationEvent> {
        if self.unregistering {
            return self.set_state(RegistrationState::Unregistered);
        }
        let wait = backoff(self.failures, self.entropy.as_mut());
        let wait = at_least.map_or(wait, |floor| wait.max(floor));
        self.failures += 1;
        self.next_register = Some(now + wait);
        self.set_state(RegistrationState::Failed { reason, retry_in: Some(wait) })
    }

    fn set_state(&mut self, state: RegistrationState) -> Vec<RegistrationEvent> {
        if self.state == state {
            return Vec::new();
        }
        self.state = state.clone();
        vec![RegistrationEvent::State(state)]
    }

    fn send(&mut self, now: Instant, unregister: bool) -> Vec<RegistrationEvent> {
        self.cseq += 1;
        let branch = format!("z9hG4bK{}", random_hex(self.entropy.as_mut(), 10));
        let c = &self.config;
        let expires = if unregister { 0 } else { self.expires };
        let mut request = format!(
            "REGISTER {registrar} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {sent_by};rport;branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag={tag}\r\n\
             To: <{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <{contact}>;+sip.instance=\"<{instance}>\";reg-id=1;audio\r\n\
             Expires: {expires}\r\n\
             Supported: gruu, outbound, path\r\n\
             User-Agent: {agent}\r\n",
            registrar = c.registrar,
            transport = c.transport,
            sent_by = c.sent_by,
            aor = c.aor,
            tag = self.from_tag,
            call_id = self.call_id,
            cseq = self.cseq,
            contact = c.contact,
            instance = c.instance,
            agent = c.user_agent,
        );

        if let (Some((challenge, proxy, nc)), Some(password)) =
            (self.challenge.as_mut(), c.password.as_deref())
        {
            *nc += 1;
            let cnonce = random_hex(self.entropy.as_mut(), 8);
            let answer = challenge.answer(&c.auth_user, password, "REGISTER", &c.registrar, *nc, &cnonce);
            let name = if *proxy { "Proxy-Authorization" } else { "Authorization" };
            let _ = write!(request, "{name}: {answer}\r\n");
        }
        request.push_str("Content-Length: 0\r\n\r\n");
        let (transaction, outputs) = NonInviteClient::start(request.into_bytes(), c.reliability, now);
        self.pending = Some(Pending { branch, transaction, unregister, fresh_credentials: false });
        let mut events: Vec<RegistrationEvent> = outputs
            .into_iter()
            .filter_map(|o| match o {
                ClientOutput::Transmit(bytes) => Some(RegistrationEvent::Transmit(bytes)),
                _ => None,
            })
            .collect();
        if !unregister && !matches!(self.state, RegistrationState::Registered { .. }) {
            events.extend(self.set_state(RegistrationState::Registering));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::normalise;

    use crate::sip::test_support::Counter;

    fn config(reliability: Reliability) -> RegistrationConfig {
        RegistrationConfig {
            aor: "sip:alice@127.0.0.1".into(),
            registrar: "sip:127.0.0.1".into(),
            auth_user: "alice".into(),
            password: Some("secret-alice".into()),
            contact: "sip:alice@127.0.0.1:5070".into(),
            transport: "UDP".into(),
            sent_by: "127.0.0.1:5070".into(),
            instance: "urn:uuid:00000000-0000-4000-8000-000000000001".into(),
            expires: 600,
            reliability,
            user_agent: "cusaxd/test".into(),
        }
    }

    fn sent(events: &[RegistrationEvent]) -> Normalised {
        let bytes = events
            .iter()
            .find_map(|e| match e {
                RegistrationEvent::Transmit(b) => Some(b.clone()),
                _ => None,
            })
            .expect("a REGISTER");
        normalise(&bytes).unwrap()
    }

    /// A response to `request`, as a registrar would build it.
    fn answer(request: &Normalised, status: &str, extra: &str) -> Normalised {
        let text = format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=srv\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            request.header("Via").unwrap(),
            request.header("From").unwrap(),
            request.header("To").unwrap(),
            request.header("Call-ID").unwrap(),
            request.header("CSeq").unwrap(),
        );
        normalise(text.as_bytes()).unwrap()
    }

    const CHALLENGE: &str = "WWW-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"n1\", qop=\"auth\"\r\n";

    #[test]
    fn registers_through_a_challenge_and_refreshes_at_80_percent() {
        let mut r = Registration::new(config(Reliability::Unreliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        let events = r.start(t0);
        assert!(events.contains(&RegistrationEvent::State(RegistrationState::Registering)));
        let first = sent(&events);
        assert_eq!(first.start_line, "REGISTER sip:127.0.0.1 SIP/2.0");
        let contact = first.header("Contact").unwrap();
        assert!(
            contact.contains("+sip.instance=\"<urn:uuid:00000000-0000-4000-8000-000000000001>\";reg-id=1")
        );
        assert!(first.header("Authorization").is_none());

        let events = r.on_response(&answer(&first, "401 Unauthorized", CHALLENGE), t0);
        let second = sent(&events);
        let authorization = second.header("Authorization").unwrap();
        assert!(authorization.contains("username=\"alice\"") && authorization.contains("nc=00000001"));
        assert_eq!(second.header("Call-ID"), first.header("Call-ID"));
        assert_eq!(second.header("CSeq"), Some("2 REGISTER"));

        let ok = answer(
            &second,
            "200 OK",
            "Contact: <sip:alice@127.0.0.1:5070>;expires=300;+sip.instance=\"<urn:uuid:00000000-0000-4000-8000-000000000001>\";pub-gruu=\"sip:alice@127.0.0.1;gr=urn:uuid:00000000-0000-4000-8000-000000000001\"\r\n",
        );
        let events = r.on_response(&ok, t0);
        assert_eq!(
            events,
            [RegistrationEvent::State(RegistrationState::Registered {
                expires: 300,
                pub_gruu: Some("sip:alice@127.0.0.1;gr=urn:uuid:00000000-0000-4000-8000-000000000001".into()),
            })]
        );
        // The refresh goes out at 240 s, with the cached credentials and the next nonce count.
        let refresh_at = t0 + Duration::from_secs(240);
        let mut wake = r.next_timeout().unwrap();
        while wake < refresh_at {
            assert!(r.on_timeout(wake).is_empty());
            wake = r.next_timeout().unwrap();
        }
        assert_eq!(wake, refresh_at);
        let refresh = sent(&r.on_timeout(wake));
        assert!(refresh.header("Authorization").unwrap().contains("nc=00000002"));
        assert_eq!(refresh.header("CSeq"), Some("3 REGISTER"));
    }

    #[test]
    fn wrong_credentials_fail_for_good() {
        let mut r = Registration::new(config(Reliability::Reliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        let first = sent(&r.start(t0));
        let second = sent(&r.on_response(&answer(&first, "401 Unauthorized", CHALLENGE), t0));
        let retry = CHALLENGE.replace("n1", "n2");
        let events = r.on_response(&answer(&second, "401 Unauthorized", &retry), t0);
        assert_eq!(
            events,
            [RegistrationEvent::State(RegistrationState::Failed {
                reason: "the registrar refused our credentials: wrong username or password".into(),
                retry_in: None,
            })]
        );
        assert_eq!(r.next_timeout(), None, "no retry loop");
    }

    #[test]
    fn a_refresh_that_meets_a_new_nonce_answers_it() {
        let mut r = Registration::new(config(Reliability::Reliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        let first = sent(&r.start(t0));
        let second = sent(&r.on_response(&answer(&first, "401 Unauthorized", CHALLENGE), t0));
        r.on_response(&answer(&second, "200 OK", "Expires: 600\r\n"), t0);
        let refresh = sent(&r.on_timeout(t0 + Duration::from_secs(480)));
        assert!(refresh.header("Authorization").is_some(), "the refresh carries the cached credentials");
        // The registrar wants a new nonce, without stale=true: answered, not "wrong password".
        let new_nonce = CHALLENGE.replace("n1", "n9");
        let again = sent(
            &r.on_response(&answer(&refresh, "401 Unauthorized", &new_nonce), t0 + Duration::from_secs(480)),
        );
        assert!(again.header("Authorization").unwrap().contains("nonce=\"n9\""));
        assert_eq!(r.state(), &RegistrationState::Registered { expires: 600, pub_gruu: None });
    }

    #[test]
    fn a_huge_retry_after_is_bounded() {
        let mut r = Registration::new(config(Reliability::Reliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        let first = sent(&r.start(t0));
        let events = r.on_response(
            &answer(&first, "503 Service Unavailable", "Retry-After: 18446744073709551615\r\n"),
            t0,
        );
        assert!(
            matches!(&events[..], [RegistrationEvent::State(RegistrationState::Failed { retry_in: Some(w), .. })] if *w == Duration::from_secs(RETRY_AFTER_MAX))
        );
    }

    #[test]
    fn a_failed_udp_register_waits_for_its_retry_without_spinning() {
        let mut r = Registration::new(config(Reliability::Unreliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        let first = sent(&r.start(t0));
        r.on_response(&answer(&first, "500 Server Error", ""), t0);
        let wake = r.next_timeout().unwrap();
        assert!(wake >= t0 + Duration::from_secs(1), "woke at once: a spin");
        assert!(sent(&r.on_timeout(wake)).start_line.starts_with("REGISTER "));
    }

    #[test]
    fn a_stale_nonce_is_answered_again() {
        let mut r = Registration::new(config(Reliability::Reliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        let first = sent(&r.start(t0));
        let second = sent(&r.on_response(&answer(&first, "401 Unauthorized", CHALLENGE), t0));
        let stale =
            "WWW-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"n2\", qop=\"auth\", stale=true\r\n";
        let third = sent(&r.on_response(&answer(&second, "401 Unauthorized", stale), t0));
        assert!(third.header("Authorization").unwrap().contains("nonce=\"n2\""));
    }

    #[test]
    fn no_answer_backs_off_with_jitter_and_retries() {
        let mut r = Registration::new(config(Reliability::Unreliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        r.start(t0);
        let mut now = t0;
        let mut failures = Vec::new();
        while failures.len() < 3 {
            now = r.next_timeout().unwrap();
            for event in r.on_timeout(now) {
                if let RegistrationEvent::State(RegistrationState::Failed { retry_in: Some(wait), .. }) =
                    event
                {
                    failures.push(wait);
                }
            }
        }
        // Ceilings 2 s, 4 s, 8 s; each wait between half and all of its ceiling.
        for (wait, ceiling) in failures.iter().zip([2u64, 4, 8]) {
            let ceiling = Duration::from_secs(ceiling);
            assert!(*wait >= ceiling / 2 && *wait <= ceiling, "{wait:?} for {ceiling:?}");
        }
        assert!(now - t0 >= Duration::from_secs(3 * 32), "three full timeouts passed");
    }

    #[test]
    fn retry_after_and_423_are_honoured() {
        let mut r = Registration::new(config(Reliability::Reliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        let first = sent(&r.start(t0));
        let events = r.on_response(&answer(&first, "503 Service Unavailable", "Retry-After: 120\r\n"), t0);
        assert!(
            matches!(&events[..], [RegistrationEvent::State(RegistrationState::Failed { retry_in: Some(w), .. })] if *w == Duration::from_secs(120))
        );

        let mut r = Registration::new(config(Reliability::Reliable), Box::new(Counter(0)));
        let first = sent(&r.start(t0));
        let again =
            sent(&r.on_response(&answer(&first, "423 Interval Too Brief", "Min-Expires: 1800\r\n"), t0));
        assert_eq!(again.header("Expires"), Some("1800"));
    }

    #[test]
    fn unregister_sends_expires_zero_and_ends_unregistered() {
        let mut r = Registration::new(config(Reliability::Reliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        let first = sent(&r.start(t0));
        r.on_response(&answer(&first, "200 OK", "Expires: 600\r\n"), t0);
        let bye = sent(&r.unregister(t0));
        assert_eq!(bye.header("Expires"), Some("0"));
        let events = r.on_response(&answer(&bye, "200 OK", ""), t0);
        assert_eq!(events, [RegistrationEvent::State(RegistrationState::Unregistered)]);
        assert_eq!(r.next_timeout(), None);
    }

    #[test]
    fn responses_of_other_transactions_are_ignored() {
        let mut r = Registration::new(config(Reliability::Reliable), Box::new(Counter(0)));
        let t0 = Instant::now();
        let first = sent(&r.start(t0));
        let mut other = answer(&first, "200 OK", "");
        for (name, value) in other.headers.iter_mut() {
            if name == "Via" {
                *value = value.replace("branch=", "branch=x");
            }
        }
        assert!(r.on_response(&other, t0).is_empty());
        assert_eq!(r.state(), &RegistrationState::Registering);
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        assert!(!format!("{:?}", config(Reliability::Reliable)).contains("secret-alice"));
    }

    #[test]
    fn instance_urns_are_version_4_uuids() {
        let urn = instance_urn(&mut Counter(0));
        assert_eq!(urn.len(), "urn:uuid:".len() + 36);
        assert_eq!(&urn[23..24], "4");
        assert!(matches!(&urn[28..29], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn an_auth_user_other_than_the_aor_user_signs_the_request() {
        let mut other = config(Reliability::Reliable);
        other.auth_user = "1001-alice".into();
        let mut r = Registration::new(other, Box::new(Counter(0)));
        let t0 = Instant::now();
        let first = sent(&r.start(t0));
        assert_eq!(first.header("From").map(|f| f.starts_with("<sip:alice@127.0.0.1>")), Some(true));
        let second = sent(&r.on_response(&answer(&first, "401 Unauthorized", CHALLENGE), t0));
        assert!(second.header("Authorization").unwrap().contains("username=\"1001-alice\""));
    }
}
