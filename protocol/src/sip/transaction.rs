//! SIP transactions (RFC 3261 section 17) as sans-I/O state machines: the caller feeds
//! responses and the current time, and gets back what to send and when to wake up.
//!
//! The caller matches responses to a transaction by the top Via branch (section 17.1.3);
//! the machines here only decide what happens next.

use std::time::{Duration, Instant};

use super::header::{all, cseq, status_code};
use super::message::Normalised;

/// RFC 3261 timer T1: the round-trip estimate.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 timer T2: the longest retransmit interval for non-INVITE requests.
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 timer T4: how long a message may stay in the network.
pub const T4: Duration = Duration::from_secs(5);

/// Whether the transport retransmits by itself (TCP, TLS) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Unreliable,
    Reliable,
}

/// What a client transaction asks of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Send the request (again).
    Transmit(Vec<u8>),
    /// A response for the transaction user (provisional or final).
    Response(u16),
    /// No final response came in time (Timer F): the request failed with 408.
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// A non-INVITE client transaction (RFC 3261 section 17.1.2, figure 6).
#[derive(Debug, Clone)]
pub struct NonInviteClient {
    request: Vec<u8>,
    reliability: Reliability,
    state: NonInviteState,
    /// Timer E: the next retransmission, and the interval after it.
    retransmit: Option<(Instant, Duration)>,
    /// Timer F: the transaction times out.
    give_up: Instant,
    /// Timer K: absorb retransmitted responses, then end.
    linger_until: Option<Instant>,
}

impl NonInviteClient {
    /// Starts the transaction: the request goes out at once.
    pub fn start(request: Vec<u8>, reliability: Reliability, now: Instant) -> (Self, Vec<ClientOutput>) {
        let retransmit = (reliability == Reliability::Unreliable).then_some((now + T1, T1));
        let transaction = Self {
            request: request.clone(),
            reliability,
            state: NonInviteState::Trying,
            retransmit,
            give_up: now + 64 * T1,
            linger_until: None,
        };
        (transaction, vec![ClientOutput::Transmit(request)])
    }

    /// A response whose top Via branch is this transaction's.
    pub fn on_response(&mut self, status: u16, now: Instant) -> Vec<ClientOutput> {
        match (self.state, status) {
            (NonInviteState::Trying | NonInviteState::Proceeding, 100..=199) => {
                self.state = NonInviteState::Proceeding;
                vec![ClientOutput::Response(status)]
            }
            (NonInviteState::Trying | NonInviteState::Proceeding, 200..=699) => {
                self.state = NonInviteState::Completed;
                self.retransmit = None;
                match self.reliability {
                    Reliability::Unreliable => self.linger_until = Some(now + T4),
                    Reliability::Reliable => self.state = NonInviteState::Terminated,
                }
                vec![ClientOutput::Response(status)]
            }
            // Retransmitted responses, or junk status codes: absorbed.
            _ => Vec::new(),
        }
    }

    /// Call at (or after) [`NonInviteClient::next_timeout`].
    pub fn on_timeout(&mut self, now: Instant) -> Vec<ClientOutput> {
        let mut out = Vec::new();
        match self.state {
            NonInviteState::Trying | NonInviteState::Proceeding => {
                if now >= self.give_up {
                    self.state = NonInviteState::Terminated;
                    self.retransmit = None;
                    out.push(ClientOutput::TimedOut);
                } else if let Some((at, interval)) = self.retransmit
                    && now >= at
                {
                    // In Proceeding the interval is T2; in Trying it doubles up to T2.
                    let next =
                        if self.state == NonInviteState::Proceeding { T2 } else { (interval * 2).min(T2) };
                    self.retransmit = Some((now + next, next));
                    out.push(ClientOutput::Transmit(self.request.clone()));
                }
            }
            NonInviteState::Completed => {
                if self.linger_until.is_some_and(|at| now >= at) {
                    self.state = NonInviteState::Terminated;
                }
            }
            NonInviteState::Terminated => {}
        }
        out
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        match self.state {
            NonInviteState::Trying | NonInviteState::Proceeding => {
                Some(self.retransmit.map_or(self.give_up, |(at, _)| at.min(self.give_up)))
            }
            NonInviteState::Completed => self.linger_until,
            NonInviteState::Terminated => None,
        }
    }

    pub fn is_terminated(&self) -> bool {
        self.state == NonInviteState::Terminated
    }
}

/// What an INVITE client transaction tells its user and asks of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteClientOutput {
    Transmit(Vec<u8>),
    /// A response for the user: provisional, 2xx (each retransmission too: the user answers
    /// every 2xx with its ACK, RFC 6026), or the first copy of a failure.
    Response(u16),
    /// No response at all within Timer B.
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InviteClientState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

/// An INVITE client transaction (RFC 3261 section 17.1.1 as RFC 6026 amends it). For a
/// failure response it builds and sends the ACK itself; the ACK for a 2xx belongs to the
/// dialog.
#[derive(Debug, Clone)]
pub struct InviteClient {
    invite: Normalised,
    reliability: Reliability,
    state: InviteClientState,
    /// Timer A: the next retransmission, and the interval after it.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B while calling; Timer D in Completed; Timer M in Accepted.
    deadline: Instant,
    ack: Option<Vec<u8>>,
}

impl InviteClient {
    pub fn start(
        invite: Normalised,
        reliability: Reliability,
        now: Instant,
    ) -> (Self, Vec<InviteClientOutput>) {
        let bytes = invite.to_bytes();
        let retransmit = (reliability == Reliability::Unreliable).then_some((now + T1, T1));
        let transaction = Self {
            invite,
            reliability,
            state: InviteClientState::Calling,
            retransmit,
            deadline: now + 64 * T1,
            ack: None,
        };
        (transaction, vec![InviteClientOutput::Transmit(bytes)])
    }

    pub fn on_response(&mut self, response: &Normalised, now: Instant) -> Vec<InviteClientOutput> {
        let Some(status) = status_code(&response.start_line) else { return Vec::new() };
        use InviteClientState::*;
        match (self.state, status) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.retransmit = None;
                vec![InviteClientOutput::Response(status)]
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.retransmit = None;
                self.deadline = now + 64 * T1;
                vec![InviteClientOutput::Response(status)]
            }
            (Accepted, 200..=299) => vec![InviteClientOutput::Response(status)],
            (Calling | Proceeding, 300..=699) => {
                self.state = Completed;
                self.retransmit = None;
                let ack = self.failure_ack(response);
                self.ack = Some(ack.clone());
                match self.reliability {
                    Reliability::Unreliable => self.deadline = now + Duration::from_secs(32),
                    Reliability::Reliable => self.state = Terminated,
                }
                vec![InviteClientOutput::Transmit(ack), InviteClientOutput::Response(status)]
            }
            // A retransmitted failure: the ACK got lost, send it again.
            (Completed, 300..=699) => {
                self.ack.clone().map(InviteClientOutput::Transmit).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    pub fn on_timeout(&mut self, now: Instant) -> Vec<InviteClientOutput> {
        use InviteClientState::*;
        match self.state {
            Calling if now >= self.deadline => {
                self.state = Terminated;
                self.retransmit = None;
                vec![InviteClientOutput::TimedOut]
            }
            Calling => match self.retransmit {
                Some((at, interval)) if now >= at => {
                    self.retransmit = Some((now + interval * 2, interval * 2));
                    vec![InviteClientOutput::Transmit(self.invite.to_bytes())]
                }
                _ => Vec::new(),
            },
            Completed | Accepted if now >= self.deadline => {
                self.state = Terminated;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        use InviteClientState::*;
        match self.state {
            Calling => Some(self.retransmit.map_or(self.deadline, |(at, _)| at.min(self.deadline))),
            Completed | Accepted => Some(self.deadline),
            Proceeding | Terminated => None,
        }
    }

    pub fn is_terminated(&self) -> bool {
        self.state == InviteClientState::Terminated
    }

    /// RFC 3261 section 17.1.1.3: same Request-URI, top Via, From, Call-ID and Route as the
    /// INVITE; To from the response; CSeq with method ACK.
    fn failure_ack(&self, response: &Normalised) -> Vec<u8> {
        let request_uri = self.invite.start_line.split(' ').nth(1).unwrap_or_default();
        let mut headers = Vec::new();
        if let Some(via) = self.invite.header("Via") {
            headers.push(("Via".to_owned(), via.to_owned()));
        }
        headers.push(("Max-Forwards".to_owned(), "70".to_owned()));
        for name in ["From", "Call-ID"] {
            if let Some(value) = self.invite.header(name) {
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
        if let Some(to) = response.header("To") {
            headers.push(("To".to_owned(), to.to_owned()));
        }
        if let Some((number, _)) = cseq(&self.invite) {
            headers.push(("CSeq".to_owned(), format!("{number} ACK")));
        }
        for route in all(&self.invite, "Route") {
            headers.push(("Route".to_owned(), route.to_owned()));
        }
        headers.push(("Content-Length".to_owned(), "0".to_owned()));
        Normalised { start_line: format!("ACK {request_uri} SIP/2.0"), headers, body: Vec::new() }.to_bytes()
    }
}

/// What a server transaction asks of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    Transmit(Vec<u8>),
    /// INVITE server only: the ACK for our failure response arrived.
    Acknowledged,
    /// INVITE server only: our failure response was never acknowledged (Timer H).
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// A server transaction, INVITE or not (RFC 3261 sections 17.2.1 and 17.2.2, with RFC 6026's
/// Accepted state). The user answers through [`ServerTransaction::respond`]; retransmitted
/// requests are answered here with the last response.
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    invite: bool,
    reliability: Reliability,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    /// Timer G: the next retransmission of a failure response, and the interval after it.
    retransmit: Option<(Instant, Duration)>,
    /// Timer J, H, I or L, by state.
    deadline: Option<Instant>,
}

impl ServerTransaction {
    /// A new transaction for a request that just arrived (`invite`: its method is INVITE).
    pub fn new(invite: bool, reliability: Reliability) -> Self {
        Self {
            invite,
            reliability,
            state: if invite { ServerState::Proceeding } else { ServerState::Trying },
            last_response: None,
            retransmit: None,
            deadline: None,
        }
    }

    /// Sends a response from the user. Responses after the final one are refused (`false`).
    pub fn respond(&mut self, status: u16, bytes: Vec<u8>, now: Instant) -> (bool, Vec<ServerOutput>) {
        use ServerState::*;
        if !matches!(self.state, Trying | Proceeding) {
            return (false, Vec::new());
        }
        self.last_response = Some(bytes.clone());
        let unreliable = self.reliability == Reliability::Unreliable;
        match (self.invite, status) {
            (_, 100..=199) => self.state = Proceeding,
            (true, 200..=299) => {
                // The dialog retransmits the 2xx until the ACK comes (RFC 6026).
                self.state = Accepted;
                self.deadline = Some(now + 64 * T1);
            }
            (true, _) => {
                self.state = Completed;
                self.retransmit = unreliable.then_some((now + T1, T1));
                self.deadline = Some(now + 64 * T1);
            }
            (false, _) => {
                self.state = if unreliable { Completed } else { Terminated };
                self.deadline = unreliable.then_some(now + 64 * T1);
            }
        }
        (true, vec![ServerOutput::Transmit(bytes)])
    }

    /// The same request came again: answer with the last response, if any.
    pub fn on_retransmission(&mut self) -> Vec<ServerOutput> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed => {
                self.last_response.clone().map(ServerOutput::Transmit).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    /// An ACK for this INVITE transaction (for a failure response; a 2xx ACK is the dialog's).
    pub fn on_ack(&mut self, now: Instant) -> Vec<ServerOutput> {
        if self.state != ServerState::Completed || !self.invite {
            return Vec::new();
        }
        self.retransmit = None;
        match self.reliability {
            Reliability::Unreliable => {
                self.state = ServerState::Confirmed;
                self.deadline = Some(now + T4);
            }
            Reliability::Reliable => {
                self.state = ServerState::Terminated;
                self.deadline = None;
            }
        }
        vec![ServerOutput::Acknowledged]
    }

    pub fn on_timeout(&mut self, now: Instant) -> Vec<ServerOutput> {
        if self.deadline.is_some_and(|at| now >= at) {
            let unacknowledged = self.invite && self.state == ServerState::Completed;
            self.state = ServerState::Terminated;
            self.deadline = None;
            self.retransmit = None;
            return if unacknowledged { vec![ServerOutput::TimedOut] } else { Vec::new() };
        }
        match self.retransmit {
            Some((at, interval)) if now >= at && self.state == ServerState::Completed => {
                let next = (interval * 2).min(T2);
                self.retransmit = Some((now + next, next));
                self.last_response.clone().map(ServerOutput::Transmit).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        match (self.retransmit.map(|(at, _)| at), self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the user has sent its final response.
    pub fn is_answered(&self) -> bool {
        !matches!(self.state, ServerState::Trying | ServerState::Proceeding)
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the transaction's timers up to `until`, collecting what it asks for and when.
    fn run_until(t: &mut NonInviteClient, start: Instant, until: Duration) -> Vec<(Duration, ClientOutput)> {
        let mut seen = Vec::new();
        while let Some(at) = t.next_timeout() {
            if at > start + until {
                break;
            }
            for out in t.on_timeout(at) {
                seen.push((at - start, out));
            }
        }
        seen
    }

    #[test]
    fn udp_retransmits_with_timer_e_and_times_out_with_timer_f() {
        let start = Instant::now();
        let (mut t, first) = NonInviteClient::start(b"REGISTER".to_vec(), Reliability::Unreliable, start);
        assert_eq!(first, [ClientOutput::Transmit(b"REGISTER".to_vec())]);
        let seen = run_until(&mut t, start, Duration::from_secs(40));
        let times: Vec<u64> = seen
            .iter()
            .filter(|(_, o)| matches!(o, ClientOutput::Transmit(_)))
            .map(|(at, _)| at.as_millis() as u64)
            .collect();
        // 0.5, 1.5, 3.5, 7.5 s, then every T2 = 4 s until F = 32 s.
        assert_eq!(times, [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
        assert_eq!(seen.last(), Some(&(Duration::from_secs(32), ClientOutput::TimedOut)));
        assert!(t.is_terminated());
        assert_eq!(t.next_timeout(), None);
    }

    #[test]
    fn tcp_never_retransmits() {
        let start = Instant::now();
        let (mut t, _) = NonInviteClient::start(b"R".to_vec(), Reliability::Reliable, start);
        let seen = run_until(&mut t, start, Duration::from_secs(40));
        assert_eq!(seen, [(Duration::from_secs(32), ClientOutput::TimedOut)]);
    }

    #[test]
    fn a_provisional_response_slows_retransmission_to_t2() {
        let start = Instant::now();
        let (mut t, _) = NonInviteClient::start(b"R".to_vec(), Reliability::Unreliable, start);
        assert_eq!(t.on_response(100, start + Duration::from_millis(100)), [ClientOutput::Response(100)]);
        let seen = run_until(&mut t, start, Duration::from_secs(9));
        let times: Vec<u128> = seen.iter().map(|(at, _)| at.as_millis()).collect();
        assert_eq!(times, [500, 4500, 8500]);
    }

    #[test]
    fn a_final_response_is_reported_once_and_lingers_for_t4_on_udp() {
        let start = Instant::now();
        let (mut t, _) = NonInviteClient::start(b"R".to_vec(), Reliability::Unreliable, start);
        let at = start + Duration::from_millis(700);
        assert_eq!(t.on_response(200, at), [ClientOutput::Response(200)]);
        assert!(!t.is_terminated(), "it lingers for retransmitted responses");
        // A retransmitted 200 is absorbed.
        assert_eq!(t.on_response(200, at + Duration::from_millis(10)), []);
        assert_eq!(t.next_timeout(), Some(at + T4));
        assert_eq!(t.on_timeout(at + T4), []);
        assert!(t.is_terminated());
    }

    #[test]
    fn tcp_ends_at_the_final_response() {
        let start = Instant::now();
        let (mut t, _) = NonInviteClient::start(b"R".to_vec(), Reliability::Reliable, start);
        assert_eq!(t.on_response(401, start), [ClientOutput::Response(401)]);
        assert!(t.is_terminated());
    }

    #[test]
    fn a_late_response_after_timeout_is_ignored() {
        let start = Instant::now();
        let (mut t, _) = NonInviteClient::start(b"R".to_vec(), Reliability::Reliable, start);
        assert_eq!(t.on_timeout(start + 64 * T1), [ClientOutput::TimedOut]);
        assert_eq!(t.on_response(200, start + 65 * T1), []);
    }

    fn invite() -> Normalised {
        crate::sip::normalise(
            b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv\r\n\
              From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
              Route: <sip:127.0.0.1:5060;lr>\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
    }

    fn response(status: &str) -> Normalised {
        let text = format!(
            "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv\r\nFrom: <sip:alice@127.0.0.1>;tag=a\r\n\
             To: <sip:bob@127.0.0.1>;tag=b\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        crate::sip::normalise(text.as_bytes()).unwrap()
    }

    #[test]
    fn invite_retransmits_with_timer_a_until_a_provisional_response() {
        let start = Instant::now();
        let (mut t, first) = InviteClient::start(invite(), Reliability::Unreliable, start);
        assert!(matches!(&first[..], [InviteClientOutput::Transmit(_)]));
        let mut sent = Vec::new();
        while let Some(at) = t.next_timeout() {
            if at - start > Duration::from_secs(4) {
                break;
            }
            if !t.on_timeout(at).is_empty() {
                sent.push((at - start).as_millis());
            }
        }
        assert_eq!(sent, [500, 1500, 3500]);
        assert_eq!(t.on_response(&response("180 Ringing"), start), [InviteClientOutput::Response(180)]);
        assert_eq!(t.next_timeout(), None, "no retransmission, no Timer B once proceeding");
    }

    #[test]
    fn invite_times_out_with_timer_b() {
        let start = Instant::now();
        let (mut t, _) = InviteClient::start(invite(), Reliability::Reliable, start);
        assert_eq!(t.next_timeout(), Some(start + 64 * T1));
        assert_eq!(t.on_timeout(start + 64 * T1), [InviteClientOutput::TimedOut]);
        assert!(t.is_terminated());
    }

    #[test]
    fn a_failure_is_acknowledged_by_the_transaction_and_again_when_retransmitted() {
        let start = Instant::now();
        let (mut t, _) = InviteClient::start(invite(), Reliability::Unreliable, start);
        let out = t.on_response(&response("486 Busy Here"), start);
        let InviteClientOutput::Transmit(ack) = &out[0] else { panic!("{out:?}") };
        assert_eq!(out[1], InviteClientOutput::Response(486));
        let ack = crate::sip::normalise(ack).unwrap();
        assert_eq!(ack.start_line, "ACK sip:bob@127.0.0.1 SIP/2.0");
        assert_eq!(ack.header("CSeq"), Some("1 ACK"));
        assert_eq!(ack.header("To"), Some("<sip:bob@127.0.0.1>;tag=b"));
        assert_eq!(ack.header("Route"), Some("<sip:127.0.0.1:5060;lr>"));
        assert_eq!(ack.header("Via"), Some("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv"));
        // The 486 comes again (our ACK was lost): the ACK goes again, the user hears nothing.
        let again = t.on_response(&response("486 Busy Here"), start + T1);
        assert!(
            matches!(&again[..], [InviteClientOutput::Transmit(a)] if crate::sip::normalise(a).unwrap() == ack)
        );
        assert_eq!(t.next_timeout(), Some(start + Duration::from_secs(32)));
    }

    #[test]
    fn every_2xx_goes_to_the_user_until_timer_m() {
        let start = Instant::now();
        let (mut t, _) = InviteClient::start(invite(), Reliability::Unreliable, start);
        assert_eq!(t.on_response(&response("200 OK"), start), [InviteClientOutput::Response(200)]);
        // A retransmitted 2xx (our ACK was lost) reaches the user, who ACKs it again.
        assert_eq!(t.on_response(&response("200 OK"), start + T1), [InviteClientOutput::Response(200)]);
        assert_eq!(t.next_timeout(), Some(start + 64 * T1));
        t.on_timeout(start + 64 * T1);
        assert!(t.is_terminated());
    }

    #[test]
    fn a_non_invite_server_answers_retransmissions_and_lingers_with_timer_j() {
        let start = Instant::now();
        let mut t = ServerTransaction::new(false, Reliability::Unreliable);
        assert!(t.on_retransmission().is_empty(), "nothing to repeat yet");
        let (accepted, out) = t.respond(200, b"200".to_vec(), start);
        assert!(accepted && out == [ServerOutput::Transmit(b"200".to_vec())]);
        assert_eq!(t.on_retransmission(), [ServerOutput::Transmit(b"200".to_vec())]);
        assert!(!t.respond(500, b"500".to_vec(), start).0, "one final response only");
        assert_eq!(t.next_timeout(), Some(start + 64 * T1));
        t.on_timeout(start + 64 * T1);
        assert!(t.is_terminated());
    }

    #[test]
    fn an_invite_server_retransmits_a_failure_with_timer_g_until_the_ack() {
        let start = Instant::now();
        let mut t = ServerTransaction::new(true, Reliability::Unreliable);
        t.respond(180, b"180".to_vec(), start);
        assert_eq!(t.on_retransmission(), [ServerOutput::Transmit(b"180".to_vec())]);
        t.respond(486, b"486".to_vec(), start);
        let mut sent = Vec::new();
        for _ in 0..3 {
            let at = t.next_timeout().unwrap();
            if !t.on_timeout(at).is_empty() {
                sent.push((at - start).as_millis());
            }
        }
        assert_eq!(sent, [500, 1500, 3500]);
        assert_eq!(t.on_ack(start + Duration::from_secs(4)), [ServerOutput::Acknowledged]);
        assert_eq!(t.next_timeout(), Some(start + Duration::from_secs(4) + T4));
    }

    #[test]
    fn an_unacknowledged_failure_times_out_with_timer_h() {
        let start = Instant::now();
        let mut t = ServerTransaction::new(true, Reliability::Reliable);
        t.respond(603, b"603".to_vec(), start);
        assert_eq!(t.next_timeout(), Some(start + 64 * T1), "no Timer G on TCP");
        assert_eq!(t.on_timeout(start + 64 * T1), [ServerOutput::TimedOut]);
    }

    #[test]
    fn an_invite_server_hands_2xx_retransmission_to_the_dialog() {
        let start = Instant::now();
        let mut t = ServerTransaction::new(true, Reliability::Unreliable);
        t.respond(200, b"200".to_vec(), start);
        assert!(t.on_retransmission().is_empty(), "the dialog retransmits 2xx, not the transaction");
        assert_eq!(t.next_timeout(), Some(start + 64 * T1));
    }
}
