//! An OPTIONS probe of a SIP address (cusax-wire 2 OFF-2, the draft's OPEN ISSUE): its 200
//! may say who the far end is on XMPP (`Call-Info: <xmpp:…>;purpose=impp`, RFC 3261 Table 2
//! allows it in OPTIONS responses). Sans-I/O like [`super::call::Call`]: the driver hands it
//! responses and the time, it answers with what to send and, once, what it learnt.

use std::time::Instant;

use super::call::CallSettings;
use super::cusax_headers::SipCusax;
use super::digest::Challenge;
use super::header::{all, status_code, top_via_branch};
use super::message::Normalised;
use super::registration::{Entropy, random_hex};
use super::transaction::{ClientOutput, NonInviteClient};

/// What a probe asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutput {
    Transmit(Vec<u8>),
    /// The probe is over: the far end's `Call-Info` impp JID, if its 200 named one.
    Done(Option<String>),
}

pub struct Probe {
    settings: CallSettings,
    entropy: Box<dyn Entropy>,
    target: String,
    call_id: String,
    tag: String,
    cseq: u32,
    branch: String,
    transaction: NonInviteClient,
    challenged: bool,
    done: bool,
}

impl Probe {
    /// Sends OPTIONS to `target` (a SIP URI) from our account.
    pub fn start(
        settings: CallSettings,
        mut entropy: Box<dyn Entropy>,
        target: &str,
        now: Instant,
    ) -> (Self, Vec<ProbeOutput>) {
        let call_id = random_hex(entropy.as_mut(), 16);
        let tag = random_hex(entropy.as_mut(), 8);
        let branch = format!("z9hG4bK{}", random_hex(entropy.as_mut(), 10));
        let request = options(&settings, target, &call_id, &tag, 1, &branch, None, entropy.as_mut());
        let (transaction, outputs) = NonInviteClient::start(request.to_bytes(), settings.reliability, now);
        let probe = Self {
            settings,
            entropy,
            target: target.to_owned(),
            call_id,
            tag,
            cseq: 1,
            branch,
            transaction,
            challenged: false,
            done: false,
        };
        (probe, transmits(outputs))
    }

    /// Whether `response` answers this probe's current request.
    pub fn matches(&self, response: &Normalised) -> bool {
        top_via_branch(response).as_deref() == Some(self.branch.as_str())
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        (!self.done).then(|| self.transaction.next_timeout()).flatten()
    }

    pub fn on_timeout(&mut self, now: Instant) -> Vec<ProbeOutput> {
        let outputs = self.transaction.on_timeout(now);
        let timed_out = outputs.contains(&ClientOutput::TimedOut);
        let mut out = transmits(outputs);
        if timed_out && !std::mem::replace(&mut self.done, true) {
            out.push(ProbeOutput::Done(None));
        }
        out
    }

    pub fn on_response(&mut self, response: &Normalised, now: Instant) -> Vec<ProbeOutput> {
        let Some(status) = status_code(&response.start_line) else { return Vec::new() };
        let outputs = self.transaction.on_response(status, now);
        let mut out = transmits(outputs);
        if status < 200 || self.done {
            return out;
        }
        if matches!(status, 401 | 407) && !self.challenged && self.settings.password.is_some() {
            let header = if status == 407 { "Proxy-Authenticate" } else { "WWW-Authenticate" };
            if let Ok(challenge) = Challenge::choose(all(response, header)) {
                self.challenged = true;
                self.cseq += 1;
                self.branch = format!("z9hG4bK{}", random_hex(self.entropy.as_mut(), 10));
                let request = options(
                    &self.settings,
                    &self.target,
                    &self.call_id,
                    &self.tag,
                    self.cseq,
                    &self.branch,
                    Some((challenge, status == 407)),
                    self.entropy.as_mut(),
                );
                let (transaction, outputs) =
                    NonInviteClient::start(request.to_bytes(), self.settings.reliability, now);
                self.transaction = transaction;
                out.extend(transmits(outputs));
                return out;
            }
        }
        self.done = true;
        let impp = (200..300).contains(&status).then(|| SipCusax::read(&response.headers).impp).flatten();
        out.push(ProbeOutput::Done(impp));
        out
    }
}

fn transmits(outputs: Vec<ClientOutput>) -> Vec<ProbeOutput> {
    outputs
        .into_iter()
        .filter_map(|o| match o {
            ClientOutput::Transmit(bytes) => Some(ProbeOutput::Transmit(bytes)),
            _ => None,
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn options(
    s: &CallSettings,
    target: &str,
    call_id: &str,
    tag: &str,
    cseq: u32,
    branch: &str,
    auth: Option<(Challenge, bool)>,
    entropy: &mut dyn Entropy,
) -> Normalised {
    let mut headers = vec![
        ("Via".to_owned(), format!("SIP/2.0/{} {};rport;branch={branch}", s.transport, s.sent_by)),
        ("Max-Forwards".to_owned(), "70".to_owned()),
        ("From".to_owned(), format!("<{}>;tag={tag}", s.local_uri)),
        ("To".to_owned(), format!("<{target}>")),
        ("Call-ID".to_owned(), call_id.to_owned()),
        ("CSeq".to_owned(), format!("{cseq} OPTIONS")),
        ("Contact".to_owned(), format!("<{}>", s.contact)),
        ("Accept".to_owned(), "application/sdp".to_owned()),
        ("User-Agent".to_owned(), s.user_agent.clone()),
    ];
    if let (Some((challenge, proxy)), Some(password)) = (auth, s.password.as_deref()) {
        let cnonce = random_hex(entropy, 8);
        let value = challenge.answer(&s.auth_user, password, "OPTIONS", target, 1, &cnonce);
        headers.push((if proxy { "Proxy-Authorization" } else { "Authorization" }.to_owned(), value));
    }
    headers.push(("Content-Length".to_owned(), "0".to_owned()));
    Normalised { start_line: format!("OPTIONS {target} SIP/2.0"), headers, body: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::normalise;
    use crate::sip::test_support::Counter;
    use crate::sip::transaction::Reliability;

    fn settings() -> CallSettings {
        CallSettings {
            local_uri: "sip:bob@127.0.0.1".into(),
            contact: "sip:bob@127.0.0.1:5070".into(),
            transport: "UDP".into(),
            sent_by: "127.0.0.1:5070".into(),
            reliability: Reliability::Unreliable,
            user_agent: "cusaxd/test".into(),
            auth_user: "bob".into(),
            password: Some("secret-bob".into()),
        }
    }

    fn sent(out: &[ProbeOutput]) -> Normalised {
        out.iter()
            .find_map(|o| match o {
                ProbeOutput::Transmit(b) => Some(normalise(b).unwrap()),
                _ => None,
            })
            .unwrap()
    }

    fn answer(request: &Normalised, status: &str, extra: &str) -> Normalised {
        let via = request.header("Via").unwrap();
        let cseq = request.header("CSeq").unwrap();
        let text = format!(
            "SIP/2.0 {status}\r\nVia: {via}\r\nFrom: <sip:bob@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>;tag=2\r\n\
             Call-ID: x\r\nCSeq: {cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        normalise(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_challenged_probe_answers_and_reads_the_impp_jid() {
        let t0 = Instant::now();
        let (mut probe, out) = Probe::start(settings(), Box::new(Counter(0)), "sip:alice@127.0.0.1", t0);
        let first = sent(&out);
        assert_eq!(first.start_line, "OPTIONS sip:alice@127.0.0.1 SIP/2.0");
        let challenge = answer(
            &first,
            "407 Proxy Authentication Required",
            "Proxy-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"abc\", qop=\"auth\"\r\n",
        );
        let out = probe.on_response(&challenge, t0);
        let second = sent(&out);
        assert!(
            second.header("Proxy-Authorization").is_some_and(|a| a.contains("uri=\"sip:alice@127.0.0.1\""))
        );
        assert!(!probe.matches(&challenge), "the retry has a branch of its own");
        let ok = answer(
            &second,
            "200 OK",
            "Call-Info: <http://x/y.png>;purpose=icon, <xmpp:alice@localhost>;purpose=impp\r\n",
        );
        assert!(probe.matches(&ok));
        assert_eq!(probe.on_response(&ok, t0), vec![ProbeOutput::Done(Some("alice@localhost".into()))]);
        assert!(probe.is_done() && probe.next_timeout().is_none());
    }

    #[test]
    fn a_refusal_or_silence_ends_the_probe_with_nothing() {
        let t0 = Instant::now();
        let (mut probe, out) = Probe::start(settings(), Box::new(Counter(0)), "sip:alice@127.0.0.1", t0);
        let refused =
            answer(&sent(&out), "404 Not Found", "Call-Info: <xmpp:alice@localhost>;purpose=impp\r\n");
        assert_eq!(probe.on_response(&refused, t0), vec![ProbeOutput::Done(None)]);
        let (mut silent, _) = Probe::start(settings(), Box::new(Counter(0)), "sip:alice@127.0.0.1", t0);
        let mut now = t0;
        let mut ended = Vec::new();
        while let Some(at) = silent.next_timeout() {
            now = at.max(now);
            ended.extend(silent.on_timeout(now).into_iter().filter(|o| matches!(o, ProbeOutput::Done(_))));
        }
        assert_eq!(ended, vec![ProbeOutput::Done(None)], "Timer F ends it once");
    }
}
