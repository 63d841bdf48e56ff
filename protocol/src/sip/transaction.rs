//! SIP transactions (RFC 3261 section 17) as sans-I/O state machines: the caller feeds
//! responses and the current time, and gets back what to send and when to wake up.
//!
//! The caller matches responses to a transaction by the top Via branch (section 17.1.3);
//! the machines here only decide what happens next.

use std::time::{Duration, Instant};

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

    /// The transport failed (RFC 3261 section 17.1.4): the transaction ends at once.
    pub fn on_transport_error(&mut self) {
        self.state = NonInviteState::Terminated;
        self.retransmit = None;
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

    /// A final response came or the transaction gave up: the user has its answer.
    pub fn is_done(&self) -> bool {
        matches!(self.state, NonInviteState::Completed | NonInviteState::Terminated)
    }

    pub fn is_terminated(&self) -> bool {
        self.state == NonInviteState::Terminated
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
        assert!(t.is_done() && !t.is_terminated());
        // A retransmitted 200 is absorbed.
        assert_eq!(t.on_response(200, at + Duration::from_millis(10)), []);
        assert_eq!(t.next_timeout(), Some(at + T4));
        assert_eq!(t.on_timeout(at + T4), []);
        assert!(t.is_terminated());
    }

    #[test]
    fn tcp_ends_at_the_final_response_and_on_transport_errors() {
        let start = Instant::now();
        let (mut t, _) = NonInviteClient::start(b"R".to_vec(), Reliability::Reliable, start);
        assert_eq!(t.on_response(401, start), [ClientOutput::Response(401)]);
        assert!(t.is_terminated());
        let (mut t, _) = NonInviteClient::start(b"R".to_vec(), Reliability::Reliable, start);
        t.on_transport_error();
        assert!(t.is_terminated() && t.next_timeout().is_none());
    }

    #[test]
    fn a_late_response_after_timeout_is_ignored() {
        let start = Instant::now();
        let (mut t, _) = NonInviteClient::start(b"R".to_vec(), Reliability::Reliable, start);
        assert_eq!(t.on_timeout(start + 64 * T1), [ClientOutput::TimedOut]);
        assert_eq!(t.on_response(200, start + 65 * T1), []);
    }
}
