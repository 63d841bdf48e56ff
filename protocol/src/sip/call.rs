//! One call: the INVITE dialog (RFC 3261 sections 12 to 15) on either side, sans-I/O.
//!
//! A [`Call`] owns its transactions, its dialog state (tags, route set, remote target, CSeq)
//! and the 2xx retransmission and ACK that RFC 6026 leaves to the dialog. The driver hands
//! it every message with its Call-ID and the time; it answers with [`CallOutput`]s. SDP is
//! opaque here: the caller builds and reads it with [`crate::sdp`].

use std::time::{Duration, Instant};

use super::digest::Challenge;
use super::header::{NameAddr, all, cseq, status_code, top_via_branch};
use super::message::Normalised;
use super::registration::{Entropy, random_hex};
use super::transaction::{
    ClientOutput, InviteClient, InviteClientOutput, NonInviteClient, Reliability, ServerOutput,
    ServerTransaction, T1, T2,
};

/// What every call of one account shares.
#[derive(Clone)]
pub struct CallSettings {
    /// Our address of record (From of our requests, To of our answers).
    pub local_uri: String,
    /// Our Contact URI.
    pub contact: String,
    /// `UDP` or `TCP`, for the Via.
    pub transport: String,
    pub sent_by: String,
    pub reliability: Reliability,
    pub user_agent: String,
    /// For proxy (407) and UAS (401) challenges on our requests.
    pub auth_user: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for CallSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSettings")
            .field("local_uri", &self.local_uri)
            .field("contact", &self.contact)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Outgoing, INVITE sent.
    Dialing,
    /// Outgoing, the far end rings.
    Ringing,
    /// Incoming, waiting for the user.
    Incoming,
    Active,
    /// Up, with the media on hold (by either side).
    Held,
    Ended,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Dialing => "dialing",
            CallState::Ringing => "ringing",
            CallState::Incoming => "incoming",
            CallState::Active => "active",
            CallState::Held => "held",
            CallState::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutput {
    Transmit(Vec<u8>),
    State {
        state: CallState,
        reason: String,
    },
    /// The far end's SDP: its offer (incoming call) or its answer.
    RemoteSdp(Vec<u8>),
    /// The far end offers new media in the dialog (a re-INVITE: hold, resume): answer with
    /// [`Call::answer_reoffer`].
    Reoffer(Vec<u8>),
    /// The far end answered our INVITE: the headers of its 2xx, for what they say beyond SIP
    /// (the CUSAX echo and contact).
    Answered(Vec<(String, String)>),
}

/// The dialog once both tags are known.
#[derive(Debug, Clone)]
struct Dialog {
    remote_tag: String,
    remote_target: String,
    /// In the order requests visit them.
    route_set: Vec<String>,
}

enum Role {
    Caller {
        invite: InviteClient,
        invite_request: Normalised,
        branch: String,
        sdp: Vec<u8>,
        challenged: bool,
        /// Headers beyond SIP's own (CUSAX), on every INVITE of the call setup.
        extra: Vec<(String, String)>,
    },
    Callee {
        server: ServerTransaction,
        invite: Normalised,
    },
}

/// A re-INVITE of ours (hold or resume) and the state it leads to.
struct ReInvite {
    branch: String,
    transaction: InviteClient,
    hold: bool,
    ack: Option<Vec<u8>>,
}

/// RFC 3261 section 13.3.1.4: the callee repeats its 2xx until the ACK comes.
struct OkRetransmit {
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

pub struct Call {
    settings: CallSettings,
    entropy: Box<dyn Entropy>,
    call_id: String,
    local_tag: String,
    remote_uri: String,
    /// The far end's display name (From of an incoming call, To of our answered one).
    remote_name: String,
    local_cseq: u32,
    dialog: Option<Dialog>,
    role: Role,
    state: CallState,
    /// The ACK for our 2xx-answered INVITE, repeated when the 2xx is.
    ack: Option<Vec<u8>>,
    /// A BYE or CANCEL we sent.
    ending: Option<(String, NonInviteClient)>,
    /// Our 2xx to an INVITE (initial or re-INVITE), repeated until the ACK comes.
    ok: Option<OkRetransmit>,
    reinvite: Option<ReInvite>,
    /// A re-INVITE from the far end, waiting for our answer.
    reoffer: Option<(ServerTransaction, Normalised)>,
    /// The CSeq of the far end's latest INVITE, to tell new re-INVITEs from retransmissions.
    remote_invite_cseq: Option<u32>,
    /// A provisional response to our INVITE came: a CANCEL may go now (RFC 3261 9.1).
    provisional_seen: bool,
    /// The user hung up before any provisional response: CANCEL when one comes.
    cancel_deferred: bool,
    /// An incoming call rings until then, then is declined as not answered.
    ring_until: Option<Instant>,
}

impl Call {
    /// Starts an outgoing call to `target` with our SDP offer; `extra` headers (CUSAX) go on
    /// the INVITE.
    pub fn dial(
        settings: CallSettings,
        mut entropy: Box<dyn Entropy>,
        target: &str,
        sdp: Vec<u8>,
        extra: Vec<(String, String)>,
        now: Instant,
    ) -> (Self, Vec<CallOutput>) {
        let call_id = random_hex(entropy.as_mut(), 16);
        let local_tag = random_hex(entropy.as_mut(), 8);
        let branch = format!("z9hG4bK{}", random_hex(entropy.as_mut(), 10));
        let request = Invite {
            settings: &settings,
            call_id: &call_id,
            local_tag: &local_tag,
            target,
            cseq: 1,
            sdp: &sdp,
            extra: &extra,
        }
        .build(&branch, None, entropy.as_mut());
        let (invite, outputs) = InviteClient::start(request.clone(), settings.reliability, now);
        let call = Self {
            settings,
            entropy,
            call_id,
            local_tag,
            remote_uri: target.to_owned(),
            remote_name: String::new(),
            local_cseq: 1,
            dialog: None,
            role: Role::Caller { invite, invite_request: request, branch, sdp, challenged: false, extra },
            state: CallState::Dialing,
            ack: None,
            ending: None,
            ok: None,
            reinvite: None,
            reoffer: None,
            remote_invite_cseq: None,
            provisional_seen: false,
            cancel_deferred: false,
            ring_until: None,
        };
        let mut out: Vec<CallOutput> =
            outputs.into_iter().filter_map(invite_transmit).map(CallOutput::Transmit).collect();
        out.push(CallOutput::State { state: CallState::Dialing, reason: String::new() });
        (call, out)
    }

    /// Takes an incoming INVITE (no To tag): rings (180) and waits for the user.
    pub fn incoming(
        settings: CallSettings,
        mut entropy: Box<dyn Entropy>,
        invite: &Normalised,
        now: Instant,
    ) -> Option<(Self, Vec<CallOutput>)> {
        let call_id = invite.header("Call-ID")?.to_owned();
        let from = NameAddr::parse(invite.header("From")?)?;
        let remote_tag = from.param("tag")?.to_owned();
        let remote_target = NameAddr::parse(invite.header("Contact")?)?.uri;
        let local_tag = random_hex(entropy.as_mut(), 8);
        let reliability = settings.reliability;
        let mut call = Self {
            settings,
            entropy,
            call_id,
            local_tag,
            remote_name: from.display,
            remote_uri: from.uri,
            local_cseq: 0,
            dialog: Some(Dialog {
                remote_tag,
                remote_target,
                route_set: all(invite, "Record-Route").map(str::to_owned).collect(),
            }),
            role: Role::Callee { server: ServerTransaction::new(true, reliability), invite: invite.clone() },
            state: CallState::Incoming,
            ack: None,
            ending: None,
            ok: None,
            reinvite: None,
            reoffer: None,
            remote_invite_cseq: cseq(invite).map(|(n, _)| n),
            provisional_seen: false,
            cancel_deferred: false,
            ring_until: Some(now + RING_TIMEOUT),
        };
        let mut out = call.respond(180, "Ringing", None, &[], now);
        if !invite.body.is_empty() {
            out.push(CallOutput::RemoteSdp(invite.body.clone()));
        }
        out.push(CallOutput::State { state: CallState::Incoming, reason: String::new() });
        Some((call, out))
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn state(&self) -> CallState {
        self.state
    }

    /// Whether `message` belongs to this call: its Call-ID, and the tags of our dialog (RFC
    /// 3261 12.2.2) where the message carries them.
    pub fn matches(&self, message: &Normalised) -> bool {
        if message.header("Call-ID") != Some(self.call_id.as_str()) {
            return false;
        }
        let tag = |name: &str| {
            message.header(name).and_then(NameAddr::parse).and_then(|a| a.param("tag").map(str::to_owned))
        };
        let remote_tag = self.dialog.as_ref().map(|d| d.remote_tag.as_str()).filter(|t| !t.is_empty());
        if status_code(&message.start_line).is_some() {
            // Responses to our requests: From is ours.
            return tag("From").as_deref() == Some(self.local_tag.as_str());
        }
        // Requests from the far end: From is theirs, To is ours once the dialog exists.
        let from_matches = remote_tag.is_none_or(|r| tag("From").as_deref() == Some(r));
        let to_matches = tag("To").is_none_or(|t| t == self.local_tag);
        from_matches && to_matches
    }

    /// The far end's URI (To of an outgoing call, From of an incoming one).
    /// The far end's display name, or "" when it gave none.
    pub fn remote_name(&self) -> &str {
        &self.remote_name
    }

    pub fn remote_uri(&self) -> &str {
        &self.remote_uri
    }

    /// Answers an incoming call with our SDP answer; `extra` headers (CUSAX) go on the 2xx.
    pub fn answer(&mut self, sdp: Vec<u8>, extra: &[(String, String)], now: Instant) -> Vec<CallOutput> {
        if self.state != CallState::Incoming {
            return Vec::new();
        }
        let mut out = self.respond(200, "OK", Some(sdp), extra, now);
        self.state = CallState::Active;
        out.push(CallOutput::State { state: CallState::Active, reason: String::new() });
        out
    }

    /// Ends the call: BYE when up, CANCEL while dialing, a decline (603) while ringing here.
    pub fn hangup(&mut self, now: Instant) -> Vec<CallOutput> {
        match self.state {
            CallState::Incoming => self.reject(603, "Decline", "declined", now),
            CallState::Dialing | CallState::Ringing => self.cancel(now),
            CallState::Active | CallState::Held => self.bye(now),
            CallState::Ended => Vec::new(),
        }
    }

    /// Rejects an incoming call with a failure response; `why` becomes the end reason.
    pub fn reject(&mut self, status: u16, phrase: &str, why: &str, now: Instant) -> Vec<CallOutput> {
        if self.state != CallState::Incoming || !(300..700).contains(&status) {
            return Vec::new();
        }
        let mut out = self.respond(status, phrase, None, &[], now);
        out.extend(self.end(why));
        out
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        let mut times = Vec::new();
        match &self.role {
            Role::Caller { invite, .. } => times.extend(invite.next_timeout()),
            Role::Callee { server, .. } => times.extend(server.next_timeout()),
        }
        times.extend(self.ok.as_ref().map(|o| o.next));
        times.extend(self.ring_until.filter(|_| self.state == CallState::Incoming));
        times.extend(self.reinvite.as_ref().and_then(|r| r.transaction.next_timeout()));
        times.extend(self.reoffer.as_ref().and_then(|(t, _)| t.next_timeout()));
        times.extend(self.ending.as_ref().and_then(|(_, t)| t.next_timeout()));
        times.into_iter().min()
    }

    pub fn on_timeout(&mut self, now: Instant) -> Vec<CallOutput> {
        let mut out = Vec::new();
        if self.state == CallState::Incoming && self.ring_until.is_some_and(|at| now >= at) {
            out.extend(self.reject(480, "Temporarily Unavailable", "not answered", now));
        }
        let mut timed_out = false;
        match &mut self.role {
            Role::Caller { invite, .. } => {
                for o in invite.on_timeout(now) {
                    match o {
                        InviteClientOutput::Transmit(b) => out.push(CallOutput::Transmit(b)),
                        InviteClientOutput::TimedOut => timed_out = true,
                        InviteClientOutput::Response(_) => {}
                    }
                }
            }
            Role::Callee { server, .. } => {
                out.extend(server.on_timeout(now).into_iter().filter_map(transmit).map(CallOutput::Transmit));
            }
        }
        if let Some((server, _)) = &mut self.reoffer {
            out.extend(server.on_timeout(now).into_iter().filter_map(transmit).map(CallOutput::Transmit));
        }
        if let Some(retransmit) = &mut self.ok
            && now >= retransmit.next
        {
            if now >= retransmit.give_up {
                // No ACK ever came: the dialog is dead (RFC 3261 13.3.1.4).
                self.ok = None;
                out.extend(self.bye(now));
                return out;
            }
            retransmit.interval = (retransmit.interval * 2).min(T2);
            retransmit.next = now + retransmit.interval;
            out.push(CallOutput::Transmit(retransmit.bytes.clone()));
        }
        if let Some(reinvite) = &mut self.reinvite {
            let outputs = reinvite.transaction.on_timeout(now);
            out.extend(outputs.iter().cloned().filter_map(invite_transmit).map(CallOutput::Transmit));
            if outputs.contains(&InviteClientOutput::TimedOut) {
                // RFC 3261 14.1: a re-INVITE with no answer ends the dialog.
                self.reinvite = None;
                out.extend(self.bye(now));
                return out;
            }
            if reinvite.transaction.is_terminated() {
                self.reinvite = None;
            }
        }
        if timed_out {
            out.extend(self.end("no answer (408)"));
        }
        if let Some((_, transaction)) = &mut self.ending {
            let finished = transaction.on_timeout(now).contains(&ClientOutput::TimedOut);
            if finished || transaction.is_terminated() {
                self.ending = None;
                if self.state != CallState::Ended {
                    out.extend(self.end("hung up"));
                }
            }
        }
        out
    }

    /// A message with this call's Call-ID.
    pub fn on_message(&mut self, message: &Normalised, now: Instant) -> Vec<CallOutput> {
        match status_code(&message.start_line) {
            Some(status) => self.on_response(message, status, now),
            None => self.on_request(message, now),
        }
    }

    fn on_response(&mut self, response: &Normalised, status: u16, now: Instant) -> Vec<CallOutput> {
        let branch = top_via_branch(response).unwrap_or_default();
        let method = cseq(response).map(|(_, m)| m).unwrap_or_default();
        // A CANCEL shares the INVITE's branch; the CSeq method tells their responses apart.
        if let Some((ending_branch, transaction)) = &mut self.ending
            && *ending_branch == branch
            && method != "INVITE"
        {
            let finished = transaction
                .on_response(status, now)
                .iter()
                .any(|o| matches!(o, ClientOutput::Response(s) if *s >= 200));
            if finished && self.state != CallState::Ended && cseq(response).is_some_and(|(_, m)| m == "BYE") {
                return self.end("hung up");
            }
            return Vec::new();
        }
        if self.reinvite.as_ref().is_some_and(|r| r.branch == branch) && method == "INVITE" {
            return self.on_reinvite_response(response, status, now);
        }
        let Role::Caller { invite, branch: invite_branch, challenged, .. } = &mut self.role else {
            return Vec::new();
        };
        if *invite_branch != branch {
            // A retransmitted 2xx of the INVITE: its branch is the INVITE's; anything else is stale.
            return Vec::new();
        }
        let was_challenged = *challenged;
        let reported = invite.on_response(response, now);
        let mut out: Vec<CallOutput> =
            reported.iter().cloned().filter_map(invite_transmit).map(CallOutput::Transmit).collect();
        if !reported.contains(&InviteClientOutput::Response(status)) {
            return out;
        }
        if (100..200).contains(&status) {
            self.provisional_seen = true;
            if std::mem::take(&mut self.cancel_deferred) {
                out.extend(self.send_cancel(now));
                return out;
            }
        }
        match status {
            180 | 183 if self.state == CallState::Dialing => {
                self.state = CallState::Ringing;
                out.push(CallOutput::State { state: CallState::Ringing, reason: String::new() });
            }
            200..=299 => out.extend(self.on_invite_ok(response, now)),
            401 | 407
                if !was_challenged && self.settings.password.is_some() && self.state != CallState::Ended =>
            {
                let header = if status == 407 { "Proxy-Authenticate" } else { "WWW-Authenticate" };
                match Challenge::choose(all(response, header)) {
                    Ok(challenge) => {
                        out.extend(self.send_authenticated_invite(challenge, status == 407, now))
                    }
                    Err(e) => out.extend(self.end(&format!("cannot authenticate the call: {e}"))),
                }
            }
            300..=699 if self.state != CallState::Ended => {
                let phrase =
                    response.start_line.split_once(' ').map(|(_, r)| r).unwrap_or_default().to_owned();
                let reason = match status {
                    486 | 600 => format!("busy ({phrase})"),
                    603 => format!("declined ({phrase})"),
                    480 => format!("unavailable ({phrase})"),
                    487 => "cancelled (487)".to_owned(),
                    _ => phrase,
                };
                out.extend(self.end(&reason));
            }
            _ => {}
        }
        out
    }

    fn on_invite_ok(&mut self, response: &Normalised, now: Instant) -> Vec<CallOutput> {
        if let Some(ack) = &self.ack {
            // The 2xx again: our ACK was lost.
            return vec![CallOutput::Transmit(ack.clone())];
        }
        let Some(remote_tag) =
            response.header("To").and_then(NameAddr::parse).and_then(|t| t.param("tag").map(str::to_owned))
        else {
            return Vec::new();
        };
        if let Some(to) = response.header("To").and_then(NameAddr::parse).filter(|to| !to.display.is_empty())
        {
            self.remote_name = to.display;
        }
        let remote_target = response
            .header("Contact")
            .and_then(NameAddr::parse)
            .map(|c| c.uri)
            .unwrap_or_else(|| self.remote_uri.clone());
        let mut route_set: Vec<String> = all(response, "Record-Route").map(str::to_owned).collect();
        route_set.reverse();
        self.dialog = Some(Dialog { remote_tag, remote_target, route_set });
        let ack_cseq = cseq(response).map(|(n, _)| n).unwrap_or(self.local_cseq);
        let ack = self.in_dialog_request("ACK", ack_cseq, None).to_bytes();
        self.ack = Some(ack.clone());
        let mut out = vec![CallOutput::Transmit(ack), CallOutput::Answered(response.headers.clone())];
        if !response.body.is_empty() {
            out.push(CallOutput::RemoteSdp(response.body.clone()));
        }
        if self.state == CallState::Ended {
            // Answered after we cancelled: hang up at once (RFC 3261 9.1).
            out.extend(self.bye(now));
        } else {
            self.state = CallState::Active;
            out.push(CallOutput::State { state: CallState::Active, reason: String::new() });
        }
        out
    }

    fn on_request(&mut self, request: &Normalised, now: Instant) -> Vec<CallOutput> {
        let method = request.start_line.split(' ').next().unwrap_or_default().to_owned();
        let from_tag =
            request.header("From").and_then(NameAddr::parse).and_then(|f| f.param("tag").map(str::to_owned));
        if from_tag.as_deref() == Some(self.local_tag.as_str()) && method != "ACK" {
            // Our own request came back to us: a loop (RFC 3261 8.2.2.2).
            return vec![CallOutput::Transmit(response_to(
                request,
                482,
                "Loop Detected",
                &self.local_tag,
                &self.settings,
            ))];
        }
        match method.as_str() {
            "ACK" => {
                self.ok = None;
                if let Role::Callee { server, .. } = &mut self.role {
                    server.on_ack(now);
                }
                // With a delayed offer (an INVITE without SDP), the answer comes in the ACK.
                if request.body.is_empty() {
                    Vec::new()
                } else {
                    vec![CallOutput::RemoteSdp(request.body.clone())]
                }
            }
            // A re-INVITE from the far end (hold, resume), or its retransmission.
            "INVITE" if matches!(self.state, CallState::Active | CallState::Held) => {
                if let Some((server, _)) = &mut self.reoffer {
                    return server
                        .on_retransmission()
                        .into_iter()
                        .filter_map(transmit)
                        .map(CallOutput::Transmit)
                        .collect();
                }
                let has_to_tag =
                    request.header("To").and_then(NameAddr::parse).is_some_and(|t| t.param("tag").is_some());
                if !has_to_tag {
                    // The initial INVITE again: a retransmission gets our 2xx, a merged copy 482.
                    let same = matches!(&self.role, Role::Callee { invite, .. } if top_via_branch(invite) == top_via_branch(request));
                    if !same {
                        let looped =
                            response_to(request, 482, "Loop Detected", &self.local_tag, &self.settings);
                        return vec![CallOutput::Transmit(looped)];
                    }
                    return self.ok.iter().map(|ok| CallOutput::Transmit(ok.bytes.clone())).collect();
                }
                let number = cseq(request).map(|(n, _)| n).unwrap_or(0);
                if self.remote_invite_cseq.is_some_and(|seen| number <= seen) {
                    // A retransmission of a re-INVITE we answered: the 2xx again, if not ACKed.
                    return self.ok.iter().map(|ok| CallOutput::Transmit(ok.bytes.clone())).collect();
                }
                self.remote_invite_cseq = Some(number);
                if self.reinvite.as_ref().is_some_and(|r| r.ack.is_none()) {
                    // Both sides re-INVITE at once (RFC 3261 14.2): "491 Request Pending".
                    return vec![CallOutput::Transmit(response_to(
                        request,
                        491,
                        "Request Pending",
                        &self.local_tag,
                        &self.settings,
                    ))];
                }
                if let Some(target) = request.header("Contact").and_then(NameAddr::parse)
                    && let Some(dialog) = &mut self.dialog
                {
                    dialog.remote_target = target.uri;
                }
                self.reoffer =
                    Some((ServerTransaction::new(true, self.settings.reliability), request.clone()));
                vec![CallOutput::Reoffer(request.body.clone())]
            }
            "INVITE" if self.state == CallState::Incoming => match &mut self.role {
                // The same INVITE over another path (a fork that came back): a merged request,
                // refused with 482 (RFC 3261 8.2.2.2); the same branch is a retransmission.
                Role::Callee { invite, .. } if top_via_branch(invite) != top_via_branch(request) => {
                    vec![CallOutput::Transmit(response_to(
                        request,
                        482,
                        "Loop Detected",
                        &self.local_tag,
                        &self.settings,
                    ))]
                }
                Role::Callee { server, .. } => server
                    .on_retransmission()
                    .into_iter()
                    .filter_map(transmit)
                    .map(CallOutput::Transmit)
                    .collect(),
                Role::Caller { .. } => Vec::new(),
            },
            "CANCEL" => {
                let mut out = vec![self.ok_to(request)];
                if self.state == CallState::Incoming {
                    out.extend(self.respond(487, "Request Terminated", None, &[], now));
                    out.extend(self.end("cancelled by the caller"));
                }
                out
            }
            "BYE" => {
                let mut out = vec![self.ok_to(request)];
                if self.state != CallState::Ended {
                    out.extend(self.end("the other side hung up"));
                }
                out
            }
            _ => vec![CallOutput::Transmit(response_to(
                request,
                501,
                "Not Implemented",
                &self.local_tag,
                &self.settings,
            ))],
        }
    }

    /// `200 OK` to a request of the far end that needs nothing more (BYE, CANCEL).
    fn ok_to(&self, request: &Normalised) -> CallOutput {
        CallOutput::Transmit(response_to(request, 200, "OK", &self.local_tag, &self.settings))
    }

    fn end(&mut self, reason: &str) -> Vec<CallOutput> {
        if self.state == CallState::Ended {
            return Vec::new();
        }
        self.state = CallState::Ended;
        vec![CallOutput::State { state: CallState::Ended, reason: reason.to_owned() }]
    }

    fn bye(&mut self, now: Instant) -> Vec<CallOutput> {
        if self.dialog.is_none() {
            return self.end("hung up");
        }
        self.local_cseq += 1;
        let request = self.in_dialog_request("BYE", self.local_cseq, None);
        let branch = top_via_branch(&request).unwrap_or_default();
        let (transaction, outputs) =
            NonInviteClient::start(request.to_bytes(), self.settings.reliability, now);
        self.ending = Some((branch, transaction));
        let mut out: Vec<CallOutput> =
            outputs.into_iter().filter_map(client_transmit).map(CallOutput::Transmit).collect();
        // The call is over for the user now; the BYE transaction finishes in the background.
        out.extend(self.end("hung up"));
        out
    }

    /// Ends an unanswered outgoing call: CANCEL now if a provisional response came, else as
    /// soon as one does (RFC 3261 9.1); a 2xx that crosses it gets ACK and BYE.
    fn cancel(&mut self, now: Instant) -> Vec<CallOutput> {
        let mut out = if self.provisional_seen {
            self.send_cancel(now)
        } else {
            self.cancel_deferred = true;
            Vec::new()
        };
        out.extend(self.end("cancelled"));
        out
    }

    fn send_cancel(&mut self, now: Instant) -> Vec<CallOutput> {
        let Role::Caller { invite_request, branch, .. } = &self.role else { return Vec::new() };
        // RFC 3261 9.1: the INVITE's Request-URI, Call-ID, From, To, CSeq number and top Via.
        let mut headers = Vec::new();
        for name in ["Via", "From", "To", "Call-ID"] {
            if let Some(value) = invite_request.header(name) {
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
        headers.push(("Max-Forwards".to_owned(), "70".to_owned()));
        headers.push(("CSeq".to_owned(), format!("{} CANCEL", self.local_cseq)));
        for route in all(invite_request, "Route") {
            headers.push(("Route".to_owned(), route.to_owned()));
        }
        headers.push(("Content-Length".to_owned(), "0".to_owned()));
        let uri = invite_request.start_line.split(' ').nth(1).unwrap_or_default();
        let request = Normalised { start_line: format!("CANCEL {uri} SIP/2.0"), headers, body: Vec::new() };
        let (transaction, outputs) =
            NonInviteClient::start(request.to_bytes(), self.settings.reliability, now);
        self.ending = Some((branch.clone(), transaction));
        let mut out: Vec<CallOutput> =
            outputs.into_iter().filter_map(client_transmit).map(CallOutput::Transmit).collect();
        out.extend(self.end("cancelled"));
        out
    }

    /// Sends the INVITE again with credentials for `challenge` (RFC 3261 22.2).
    fn send_authenticated_invite(
        &mut self,
        challenge: Challenge,
        proxy: bool,
        now: Instant,
    ) -> Vec<CallOutput> {
        self.local_cseq += 1;
        let branch = format!("z9hG4bK{}", random_hex(self.entropy.as_mut(), 10));
        let Role::Caller { invite, invite_request, branch: current, sdp, challenged, extra } = &mut self.role
        else {
            return Vec::new();
        };
        let request = Invite {
            settings: &self.settings,
            call_id: &self.call_id,
            local_tag: &self.local_tag,
            target: &self.remote_uri,
            cseq: self.local_cseq,
            sdp,
            extra,
        }
        .build(&branch, Some((challenge, proxy)), self.entropy.as_mut());
        let (transaction, outputs) = InviteClient::start(request.clone(), self.settings.reliability, now);
        *invite = transaction;
        *invite_request = request;
        *current = branch;
        *challenged = true;
        // A provisional response to the first INVITE does not let us CANCEL this one.
        self.provisional_seen = false;
        outputs.into_iter().filter_map(invite_transmit).map(CallOutput::Transmit).collect()
    }

    /// A request inside the dialog: to the remote target, along the route set.
    fn in_dialog_request(&mut self, method: &str, cseq_number: u32, body: Option<Vec<u8>>) -> Normalised {
        let dialog = self.dialog.clone().unwrap_or(Dialog {
            remote_tag: String::new(),
            remote_target: self.remote_uri.clone(),
            route_set: Vec::new(),
        });
        let s = &self.settings;
        let branch = format!("z9hG4bK{}", random_hex(self.entropy.as_mut(), 10));
        let mut headers = vec![
            ("Via".to_owned(), format!("SIP/2.0/{} {};rport;branch={branch}", s.transport, s.sent_by)),
            ("Max-Forwards".to_owned(), "70".to_owned()),
            ("From".to_owned(), format!("<{}>;tag={}", s.local_uri, self.local_tag)),
            ("To".to_owned(), format!("<{}>;tag={}", self.remote_uri, dialog.remote_tag)),
            ("Call-ID".to_owned(), self.call_id.clone()),
            ("CSeq".to_owned(), format!("{cseq_number} {method}")),
        ];
        for route in &dialog.route_set {
            headers.push(("Route".to_owned(), route.clone()));
        }
        headers.push(("User-Agent".to_owned(), s.user_agent.clone()));
        let body = body.unwrap_or_default();
        headers.push(("Content-Length".to_owned(), body.len().to_string()));
        Normalised { start_line: format!("{method} {} SIP/2.0", dialog.remote_target), headers, body }
    }

    /// A response to the incoming INVITE through its server transaction.
    fn respond(
        &mut self,
        status: u16,
        reason: &str,
        sdp: Option<Vec<u8>>,
        extra: &[(String, String)],
        now: Instant,
    ) -> Vec<CallOutput> {
        let Role::Callee { server, invite } = &mut self.role else { return Vec::new() };
        let response = invite_response(invite, status, reason, &self.local_tag, &self.settings, sdp, extra);
        let (_, outputs) = server.respond(status, response.clone(), now);
        if (200..300).contains(&status) {
            self.ok =
                Some(OkRetransmit { bytes: response, next: now + T1, interval: T1, give_up: now + 64 * T1 });
        }
        outputs.into_iter().filter_map(transmit).map(CallOutput::Transmit).collect()
    }

    /// Puts the call on hold (`hold`) or takes it off, with a re-INVITE carrying `sdp`.
    /// Nothing happens while another re-INVITE is under way or the call is not up.
    pub fn update_media(&mut self, sdp: Vec<u8>, hold: bool, now: Instant) -> Vec<CallOutput> {
        // A re-INVITE whose 2xx we ACKed is over for this purpose (RFC 3261 14.1).
        let in_progress = self.reinvite.as_ref().is_some_and(|r| r.ack.is_none());
        if !matches!(self.state, CallState::Active | CallState::Held) || in_progress || self.dialog.is_none()
        {
            return Vec::new();
        }
        self.local_cseq += 1;
        let mut request = self.in_dialog_request("INVITE", self.local_cseq, Some(sdp));
        let at = request.headers.len().saturating_sub(1);
        request.headers.splice(
            at..at,
            [
                ("Contact".to_owned(), format!("<{}>;audio", self.settings.contact)),
                ("Content-Type".to_owned(), "application/sdp".to_owned()),
            ],
        );
        let branch = top_via_branch(&request).unwrap_or_default();
        let (transaction, outputs) = InviteClient::start(request, self.settings.reliability, now);
        self.reinvite = Some(ReInvite { branch, transaction, hold, ack: None });
        outputs.into_iter().filter_map(invite_transmit).map(CallOutput::Transmit).collect()
    }

    /// Answers the far end's re-INVITE with `sdp`; `held` says whether the media is now on
    /// hold (by either side).
    pub fn answer_reoffer(&mut self, sdp: Vec<u8>, held: bool, now: Instant) -> Vec<CallOutput> {
        let Some((mut server, request)) = self.reoffer.take() else { return Vec::new() };
        let response = invite_response(&request, 200, "OK", &self.local_tag, &self.settings, Some(sdp), &[]);
        let (_, outputs) = server.respond(200, response.clone(), now);
        self.ok =
            Some(OkRetransmit { bytes: response, next: now + T1, interval: T1, give_up: now + 64 * T1 });
        let mut out: Vec<CallOutput> =
            outputs.into_iter().filter_map(transmit).map(CallOutput::Transmit).collect();
        out.extend(self.set_up_state(held, String::new()));
        out
    }

    /// Refuses the far end's re-INVITE (its SDP was unusable); the call stays as it was.
    pub fn refuse_reoffer(&mut self, now: Instant) -> Vec<CallOutput> {
        let Some((mut server, request)) = self.reoffer.take() else { return Vec::new() };
        let response =
            invite_response(&request, 488, "Not Acceptable Here", &self.local_tag, &self.settings, None, &[]);
        server
            .respond(488, response, now)
            .1
            .into_iter()
            .filter_map(transmit)
            .map(CallOutput::Transmit)
            .collect()
    }

    fn set_up_state(&mut self, held: bool, reason: String) -> Vec<CallOutput> {
        let state = if held { CallState::Held } else { CallState::Active };
        if self.state == state || self.state == CallState::Ended {
            return Vec::new();
        }
        self.state = state;
        vec![CallOutput::State { state, reason }]
    }

    /// A response to our re-INVITE.
    fn on_reinvite_response(&mut self, response: &Normalised, status: u16, now: Instant) -> Vec<CallOutput> {
        let Some(reinvite) = &mut self.reinvite else { return Vec::new() };
        let reported = reinvite.transaction.on_response(response, now);
        let mut out: Vec<CallOutput> =
            reported.iter().cloned().filter_map(invite_transmit).map(CallOutput::Transmit).collect();
        if !reported.contains(&InviteClientOutput::Response(status)) || status < 200 {
            return out;
        }
        if let Some(ack) = &reinvite.ack {
            out.push(CallOutput::Transmit(ack.clone()));
            return out;
        }
        let hold = reinvite.hold;
        if (200..300).contains(&status) {
            let number = cseq(response).map(|(n, _)| n).unwrap_or(self.local_cseq);
            let ack = self.in_dialog_request("ACK", number, None).to_bytes();
            if let Some(reinvite) = &mut self.reinvite {
                reinvite.ack = Some(ack.clone());
            }
            out.push(CallOutput::Transmit(ack));
            if !response.body.is_empty() {
                out.push(CallOutput::RemoteSdp(response.body.clone()));
            }
            out.extend(self.set_up_state(hold, String::new()));
        } else {
            self.reinvite = None;
            let phrase = response.start_line.split_once(' ').map(|(_, r)| r).unwrap_or_default();
            let what = if hold { "hold" } else { "resume" };
            if self.state != CallState::Ended {
                out.push(CallOutput::State {
                    state: self.state,
                    reason: format!("{what} refused: {phrase}"),
                });
            }
        }
        out
    }
}

/// A response to an INVITE (initial or re-INVITE): with Record-Route, Contact, Allow and
/// the SDP for 2xx (RFC 3261 12.1.1), plain for failures.
fn invite_response(
    invite: &Normalised,
    status: u16,
    reason: &str,
    local_tag: &str,
    settings: &CallSettings,
    sdp: Option<Vec<u8>>,
    cusax: &[(String, String)],
) -> Vec<u8> {
    let response = response_to(invite, status, reason, local_tag, settings);
    if status >= 300 {
        return response;
    }
    let Ok(mut parsed) = super::message::normalise(&response) else { return response };
    let at = parsed.headers.len().saturating_sub(1);
    let mut extra: Vec<(String, String)> =
        all(invite, "Record-Route").map(|r| ("Record-Route".to_owned(), r.to_owned())).collect();
    // RFC 3840 feature tags are header parameters: what this Contact can do.
    extra.push(("Contact".to_owned(), format!("<{}>;audio", settings.contact)));
    extra.push(("Allow".to_owned(), ALLOW.to_owned()));
    extra.extend(cusax.iter().cloned());
    if let Some(body) = sdp {
        extra.push(("Content-Type".to_owned(), "application/sdp".to_owned()));
        parsed.body = body;
    }
    parsed.headers.splice(at..at, extra);
    if let Some(length) = parsed.headers.iter_mut().find(|(n, _)| n == "Content-Length") {
        length.1 = parsed.body.len().to_string();
    }
    parsed.to_bytes()
}

/// How long an incoming call rings before we decline it (baresip's call_local_timeout).
const RING_TIMEOUT: Duration = Duration::from_secs(120);

/// The methods we handle in a dialog.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";

fn transmit(output: ServerOutput) -> Option<Vec<u8>> {
    match output {
        ServerOutput::Transmit(bytes) => Some(bytes),
        _ => None,
    }
}

fn client_transmit(output: ClientOutput) -> Option<Vec<u8>> {
    match output {
        ClientOutput::Transmit(bytes) => Some(bytes),
        _ => None,
    }
}

/// A response to `request` (RFC 3261 section 8.2.6): its Vias, From, Call-ID and CSeq, its To
/// with our tag added when it has none.
pub fn response_to(
    request: &Normalised,
    status: u16,
    reason: &str,
    local_tag: &str,
    settings: &CallSettings,
) -> Vec<u8> {
    let mut headers = Vec::new();
    for (name, value) in &request.headers {
        match name.as_str() {
            "Via" | "From" | "Call-ID" | "CSeq" => headers.push((name.clone(), value.clone())),
            "To" if status != 100
                && !local_tag.is_empty()
                && NameAddr::parse(value).is_some_and(|t| t.param("tag").is_none()) =>
            {
                headers.push((name.clone(), format!("{value};tag={local_tag}")))
            }
            "To" => headers.push((name.clone(), value.clone())),
            _ => {}
        }
    }
    headers.push(("Server".to_owned(), settings.user_agent.clone()));
    headers.push(("Content-Length".to_owned(), "0".to_owned()));
    Normalised { start_line: format!("SIP/2.0 {status} {reason}"), headers, body: Vec::new() }.to_bytes()
}

/// What an INVITE of ours is made of.
struct Invite<'a> {
    settings: &'a CallSettings,
    call_id: &'a str,
    local_tag: &'a str,
    target: &'a str,
    cseq: u32,
    sdp: &'a [u8],
    extra: &'a [(String, String)],
}

impl Invite<'_> {
    fn build(&self, branch: &str, auth: Option<(Challenge, bool)>, entropy: &mut dyn Entropy) -> Normalised {
        let s = self.settings;
        let mut headers = vec![
            ("Via".to_owned(), format!("SIP/2.0/{} {};rport;branch={branch}", s.transport, s.sent_by)),
            ("Max-Forwards".to_owned(), "70".to_owned()),
            ("From".to_owned(), format!("<{}>;tag={}", s.local_uri, self.local_tag)),
            ("To".to_owned(), format!("<{}>", self.target)),
            ("Call-ID".to_owned(), self.call_id.to_owned()),
            ("CSeq".to_owned(), format!("{} INVITE", self.cseq)),
            ("Contact".to_owned(), format!("<{}>;audio", s.contact)),
            ("Allow".to_owned(), ALLOW.to_owned()),
            ("User-Agent".to_owned(), s.user_agent.clone()),
        ];
        if let (Some((challenge, proxy)), Some(password)) = (auth, s.password.as_deref()) {
            let cnonce = random_hex(entropy, 8);
            let value = challenge.answer(&s.auth_user, password, "INVITE", self.target, 1, &cnonce);
            headers.push((if proxy { "Proxy-Authorization" } else { "Authorization" }.to_owned(), value));
        }
        headers.extend(self.extra.iter().cloned());
        headers.push(("Content-Type".to_owned(), "application/sdp".to_owned()));
        headers.push(("Content-Length".to_owned(), self.sdp.len().to_string()));
        Normalised { start_line: format!("INVITE {} SIP/2.0", self.target), headers, body: self.sdp.to_vec() }
    }
}

fn invite_transmit(output: InviteClientOutput) -> Option<Vec<u8>> {
    match output {
        InviteClientOutput::Transmit(bytes) => Some(bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::normalise;

    use crate::sip::test_support::Counter;

    fn settings() -> CallSettings {
        CallSettings {
            local_uri: "sip:alice@127.0.0.1".into(),
            contact: "sip:alice@127.0.0.1:5070".into(),
            transport: "UDP".into(),
            sent_by: "127.0.0.1:5070".into(),
            reliability: Reliability::Unreliable,
            user_agent: "cusaxd/test".into(),
            auth_user: "alice".into(),
            password: Some("secret-alice".into()),
        }
    }

    fn sent(out: &[CallOutput]) -> Vec<Normalised> {
        out.iter()
            .filter_map(|o| match o {
                CallOutput::Transmit(b) => Some(normalise(b).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn states(out: &[CallOutput]) -> Vec<(CallState, String)> {
        out.iter()
            .filter_map(|o| match o {
                CallOutput::State { state, reason } => Some((*state, reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// A response from the far end (through a record-routing proxy) to `request`.
    fn reply(request: &Normalised, status: &str, extra: &str, body: &str) -> Normalised {
        let to = request.header("To").unwrap();
        let to = if to.contains("tag=") { to.to_owned() } else { format!("{to};tag=bob1") };
        let vias: String = all(request, "Via").map(|v| format!("Via: {v}\r\n")).collect();
        let text = format!(
            "SIP/2.0 {status}\r\n{vias}From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            request.header("From").unwrap(),
            request.header("Call-ID").unwrap(),
            request.header("CSeq").unwrap(),
            body.len()
        );
        normalise(text.as_bytes()).unwrap()
    }

    const ROUTE: &str = "Record-Route: <sip:127.0.0.1:5060;lr>\r\nContact: <sip:bob@127.0.0.1:5102>\r\n";

    #[test]
    fn an_outgoing_call_authenticates_rings_is_answered_and_hangs_up_with_bye() {
        let t0 = Instant::now();
        let (mut call, out) = Call::dial(
            settings(),
            Box::new(Counter(0)),
            "sip:bob@127.0.0.1",
            b"v=0\r\n".to_vec(),
            Vec::new(),
            t0,
        );
        let invite = sent(&out).remove(0);
        assert_eq!(invite.start_line, "INVITE sip:bob@127.0.0.1 SIP/2.0");
        assert_eq!(invite.body, b"v=0\r\n");
        assert_eq!(states(&out), [(CallState::Dialing, String::new())]);

        // Kamailio asks for proxy authentication; the transaction ACKs, the call retries.
        let challenge = "Proxy-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"abc\", qop=\"auth\"\r\n";
        let out = call.on_message(&reply(&invite, "407 Proxy Authentication Required", challenge, ""), t0);
        let msgs = sent(&out);
        assert_eq!(msgs[0].start_line, "ACK sip:bob@127.0.0.1 SIP/2.0");
        assert_eq!(msgs[1].header("CSeq"), Some("2 INVITE"));
        assert!(msgs[1].header("Proxy-Authorization").unwrap().contains("uri=\"sip:bob@127.0.0.1\""));
        let invite = msgs[1].clone();

        let out = call.on_message(&reply(&invite, "180 Ringing", "", ""), t0);
        assert_eq!(states(&out), [(CallState::Ringing, String::new())]);
        let ok = reply(&invite, "200 OK", ROUTE, "v=0\r\n");
        let out = call.on_message(&ok, t0);
        let ack = sent(&out).remove(0);
        assert_eq!(ack.start_line, "ACK sip:bob@127.0.0.1:5102 SIP/2.0");
        assert_eq!(ack.header("Route"), Some("<sip:127.0.0.1:5060;lr>"));
        assert_eq!(ack.header("CSeq"), Some("2 ACK"));
        assert!(out.contains(&CallOutput::RemoteSdp(b"v=0\r\n".to_vec())));
        assert_eq!(states(&out), [(CallState::Active, String::new())]);
        // A retransmitted 200 gets the same ACK again.
        assert_eq!(sent(&call.on_message(&ok, t0 + T1)), [ack]);

        let out = call.hangup(t0 + Duration::from_secs(5));
        let bye = sent(&out).remove(0);
        assert_eq!(bye.start_line, "BYE sip:bob@127.0.0.1:5102 SIP/2.0");
        assert_eq!(bye.header("CSeq"), Some("3 BYE"));
        assert_eq!(bye.header("To"), Some("<sip:bob@127.0.0.1>;tag=bob1"));
        assert_eq!(states(&out), [(CallState::Ended, "hung up".into())]);
    }

    #[test]
    fn busy_declined_and_unanswered_calls_end_with_their_reason() {
        let t0 = Instant::now();
        for (status, reason) in [
            ("486 Busy Here", "busy (486 Busy Here)"),
            ("603 Decline", "declined (603 Decline)"),
            ("480 Temporarily Unavailable", "unavailable (480 Temporarily Unavailable)"),
        ] {
            let (mut call, out) =
                Call::dial(settings(), Box::new(Counter(0)), "sip:bob@127.0.0.1", Vec::new(), Vec::new(), t0);
            let invite = sent(&out).remove(0);
            let out = call.on_message(&reply(&invite, status, "", ""), t0);
            assert_eq!(states(&out), [(CallState::Ended, reason.to_owned())]);
            assert!(sent(&out)[0].start_line.starts_with("ACK "));
        }
        let (mut call, _) =
            Call::dial(settings(), Box::new(Counter(0)), "sip:bob@127.0.0.1", Vec::new(), Vec::new(), t0);
        let mut out = Vec::new();
        while let Some(at) = call.next_timeout() {
            out.extend(call.on_timeout(at));
        }
        assert_eq!(states(&out), [(CallState::Ended, "no answer (408)".into())]);
    }

    #[test]
    fn cancelling_a_ringing_call_sends_cancel_on_the_invite_branch() {
        let t0 = Instant::now();
        let (mut call, out) =
            Call::dial(settings(), Box::new(Counter(0)), "sip:bob@127.0.0.1", Vec::new(), Vec::new(), t0);
        let invite = sent(&out).remove(0);
        call.on_message(&reply(&invite, "180 Ringing", "", ""), t0);
        let out = call.hangup(t0);
        let cancel = sent(&out).remove(0);
        assert_eq!(cancel.start_line, "CANCEL sip:bob@127.0.0.1 SIP/2.0");
        assert_eq!(cancel.header("Via"), invite.header("Via"));
        assert_eq!(cancel.header("CSeq"), Some("1 CANCEL"));
        assert_eq!(states(&out), [(CallState::Ended, "cancelled".into())]);
        // The 487 for the INVITE is ACKed.
        let out = call.on_message(&reply(&invite, "487 Request Terminated", "", ""), t0);
        assert!(sent(&out)[0].start_line.starts_with("ACK "));
    }

    fn incoming_invite() -> Normalised {
        normalise(
            b"INVITE sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy\r\n\
              Via: SIP/2.0/UDP 127.0.0.1:5102;branch=z9hG4bKbob\r\nRecord-Route: <sip:127.0.0.1:5060;lr>\r\n\
              From: <sip:bob@127.0.0.1>;tag=b7\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: in-1\r\nCSeq: 20 INVITE\r\n\
              Contact: <sip:bob@127.0.0.1:5102>\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n",
        )
        .unwrap()
    }

    #[test]
    fn an_incoming_call_rings_is_answered_retransmits_200_until_ack_and_ends_on_bye() {
        let t0 = Instant::now();
        let (mut call, out) =
            Call::incoming(settings(), Box::new(Counter(0)), &incoming_invite(), t0).unwrap();
        let ringing = sent(&out).remove(0);
        assert_eq!(ringing.start_line, "SIP/2.0 180 Ringing");
        assert_eq!(all(&ringing, "Via").count(), 2);
        let local_tag =
            NameAddr::parse(ringing.header("To").unwrap()).unwrap().param("tag").unwrap().to_owned();
        assert!(out.contains(&CallOutput::RemoteSdp(b"v=0\r\n".to_vec())));
        assert_eq!(states(&out), [(CallState::Incoming, String::new())]);
        assert_eq!(call.remote_uri(), "sip:bob@127.0.0.1");
        // A retransmitted INVITE gets the 180 again.
        assert_eq!(sent(&call.on_message(&incoming_invite(), t0)), std::slice::from_ref(&ringing));

        let out = call.answer(b"v=0 answer\r\n".to_vec(), &[], t0);
        let ok = sent(&out).remove(0);
        assert_eq!(ok.start_line, "SIP/2.0 200 OK");
        assert_eq!(ok.header("Record-Route"), Some("<sip:127.0.0.1:5060;lr>"));
        assert_eq!(ok.header("Contact"), Some("<sip:alice@127.0.0.1:5070>;audio"));
        assert_eq!(ok.header("Content-Length"), Some("12"));
        assert!(ok.header("To").unwrap().ends_with(&format!("tag={local_tag}")));
        assert_eq!(states(&out), [(CallState::Active, String::new())]);
        // No ACK yet: the 200 goes again after T1, then 2 T1.
        let at = call.next_timeout().unwrap();
        assert_eq!(at, t0 + T1);
        assert_eq!(sent(&call.on_timeout(at)), std::slice::from_ref(&ok));
        let ack = normalise(format!("ACK sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5102;branch=z9hG4bKack\r\nFrom: <sip:bob@127.0.0.1>;tag=b7\r\nTo: <sip:alice@127.0.0.1>;tag={local_tag}\r\nCall-ID: in-1\r\nCSeq: 20 ACK\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap();
        call.on_message(&ack, t0 + T1);
        assert!(call.next_timeout().is_none_or(|t| t >= t0 + 64 * T1), "no more 200s after the ACK");

        let bye = normalise(format!("BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5102;branch=z9hG4bKbye\r\nFrom: <sip:bob@127.0.0.1>;tag=b7\r\nTo: <sip:alice@127.0.0.1>;tag={local_tag}\r\nCall-ID: in-1\r\nCSeq: 21 BYE\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap();
        let out = call.on_message(&bye, t0 + Duration::from_secs(3));
        assert_eq!(sent(&out)[0].start_line, "SIP/2.0 200 OK");
        assert_eq!(states(&out), [(CallState::Ended, "the other side hung up".into())]);
    }

    #[test]
    fn an_incoming_call_can_be_declined_rejected_busy_or_cancelled() {
        let t0 = Instant::now();
        let (mut call, _) = Call::incoming(settings(), Box::new(Counter(0)), &incoming_invite(), t0).unwrap();
        let out = call.reject(486, "Busy Here", "rejected as busy", t0);
        assert_eq!(sent(&out)[0].start_line, "SIP/2.0 486 Busy Here");
        let (mut call, _) = Call::incoming(settings(), Box::new(Counter(0)), &incoming_invite(), t0).unwrap();
        let out = call.hangup(t0);
        assert_eq!(sent(&out)[0].start_line, "SIP/2.0 603 Decline");
        let (mut call, _) = Call::incoming(settings(), Box::new(Counter(0)), &incoming_invite(), t0).unwrap();
        let cancel = normalise(b"CANCEL sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy\r\nFrom: <sip:bob@127.0.0.1>;tag=b7\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: in-1\r\nCSeq: 20 CANCEL\r\nContent-Length: 0\r\n\r\n").unwrap();
        let out = call.on_message(&cancel, t0);
        let replies: Vec<String> = sent(&out).iter().map(|m| m.start_line.clone()).collect();
        assert_eq!(replies, ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]);
        assert_eq!(states(&out), [(CallState::Ended, "cancelled by the caller".into())]);
    }

    #[test]
    fn an_invite_without_the_headers_a_dialog_needs_is_refused() {
        let mut invite = incoming_invite();
        invite.headers.retain(|(n, _)| n != "Contact");
        assert!(Call::incoming(settings(), Box::new(Counter(0)), &invite, Instant::now()).is_none());
    }

    /// An outgoing call, answered: the call and the 2xx that set it up.
    fn active_call(t0: Instant) -> (Call, Normalised) {
        let (mut call, out) = Call::dial(
            settings(),
            Box::new(Counter(0)),
            "sip:bob@127.0.0.1",
            b"v=0\r\n".to_vec(),
            Vec::new(),
            t0,
        );
        let invite = sent(&out).remove(0);
        let ok = reply(&invite, "200 OK", ROUTE, "v=0\r\n");
        call.on_message(&ok, t0);
        (call, ok)
    }

    #[test]
    fn hold_and_resume_with_re_invites() {
        let t0 = Instant::now();
        let (mut call, _) = active_call(t0);
        let out = call.update_media(b"a=sendonly\r\n".to_vec(), true, t0);
        let reinvite = sent(&out).remove(0);
        assert_eq!(reinvite.start_line, "INVITE sip:bob@127.0.0.1:5102 SIP/2.0");
        assert_eq!(reinvite.header("CSeq"), Some("2 INVITE"));
        assert_eq!(reinvite.header("To"), Some("<sip:bob@127.0.0.1>;tag=bob1"));
        assert_eq!(reinvite.header("Route"), Some("<sip:127.0.0.1:5060;lr>"));
        assert_eq!(reinvite.body, b"a=sendonly\r\n");
        // A second change while the first is under way waits.
        assert!(call.update_media(Vec::new(), false, t0).is_empty());
        let out = call.on_message(&reply(&reinvite, "200 OK", "", "a=recvonly\r\n"), t0);
        let ack = sent(&out).remove(0);
        assert_eq!(
            (ack.start_line.as_str(), ack.header("CSeq")),
            ("ACK sip:bob@127.0.0.1:5102 SIP/2.0", Some("2 ACK"))
        );
        assert_eq!(states(&out), [(CallState::Held, String::new())]);
        // Resume once the re-INVITE transaction is over.
        while let Some(at) = call.next_timeout() {
            call.on_timeout(at);
        }
        let out = call.update_media(b"a=sendrecv\r\n".to_vec(), false, t0 + Duration::from_secs(40));
        let resume = sent(&out).remove(0);
        let out =
            call.on_message(&reply(&resume, "200 OK", "", "a=sendrecv\r\n"), t0 + Duration::from_secs(40));
        assert_eq!(states(&out), [(CallState::Active, String::new())]);
    }

    #[test]
    fn a_refused_hold_keeps_the_call_as_it_was() {
        let t0 = Instant::now();
        let (mut call, _) = active_call(t0);
        let reinvite = sent(&call.update_media(Vec::new(), true, t0)).remove(0);
        let out = call.on_message(&reply(&reinvite, "488 Not Acceptable Here", "", ""), t0);
        assert!(sent(&out)[0].start_line.starts_with("ACK "));
        assert_eq!(states(&out), [(CallState::Active, "hold refused: 488 Not Acceptable Here".into())]);
        assert_eq!(call.state(), CallState::Active);
    }

    #[test]
    fn the_far_end_holds_us_with_a_re_invite() {
        let t0 = Instant::now();
        let (mut call, ok) = active_call(t0);
        let to_tag = "bob1";
        let local_from = ok.header("From").unwrap();
        let reinvite = normalise(format!("INVITE sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5102;branch=z9hG4bKhold\r\nFrom: <sip:bob@127.0.0.1>;tag={to_tag}\r\nTo: {local_from}\r\nCall-ID: {}\r\nCSeq: 5 INVITE\r\nContact: <sip:bob@127.0.0.1:5102>\r\nContent-Type: application/sdp\r\nContent-Length: 12\r\n\r\na=sendonly\r\n", ok.header("Call-ID").unwrap()).as_bytes()).unwrap();
        let out = call.on_message(&reinvite, t0);
        assert_eq!(out, [CallOutput::Reoffer(b"a=sendonly\r\n".to_vec())]);
        let out = call.answer_reoffer(b"a=recvonly\r\n".to_vec(), true, t0);
        let answer = sent(&out).remove(0);
        assert_eq!(answer.start_line, "SIP/2.0 200 OK");
        assert_eq!(answer.header("CSeq"), Some("5 INVITE"));
        assert_eq!(answer.body, b"a=recvonly\r\n");
        assert_eq!(states(&out), [(CallState::Held, String::new())]);
        // Until the ACK, the 200 is repeated; a retransmitted re-INVITE gets it too.
        assert_eq!(sent(&call.on_message(&reinvite, t0)), std::slice::from_ref(&answer));
    }

    #[test]
    fn a_hangup_before_any_provisional_response_cancels_when_one_comes() {
        let t0 = Instant::now();
        let (mut call, out) =
            Call::dial(settings(), Box::new(Counter(0)), "sip:bob@127.0.0.1", Vec::new(), Vec::new(), t0);
        let invite = sent(&out).remove(0);
        let out = call.hangup(t0);
        assert!(sent(&out).is_empty(), "no CANCEL before a provisional response");
        assert_eq!(states(&out), [(CallState::Ended, "cancelled".into())]);
        let out = call.on_message(&reply(&invite, "100 Trying", "", ""), t0);
        assert_eq!(sent(&out)[0].start_line, "CANCEL sip:bob@127.0.0.1 SIP/2.0");
        assert!(states(&out).is_empty(), "the call ended once");
        // The callee answered anyway: ACK and BYE, and no second end.
        let out = call.on_message(&reply(&invite, "200 OK", ROUTE, ""), t0);
        let methods: Vec<String> =
            sent(&out).iter().map(|m| m.start_line.split(' ').next().unwrap().to_owned()).collect();
        assert_eq!(methods, ["ACK", "BYE"]);
        assert!(states(&out).is_empty());
    }

    #[test]
    fn an_unanswered_incoming_call_is_declined_after_ringing_two_minutes() {
        let t0 = Instant::now();
        let (mut call, _) = Call::incoming(settings(), Box::new(Counter(0)), &incoming_invite(), t0).unwrap();
        let mut out = Vec::new();
        while let Some(at) = call.next_timeout() {
            if at > t0 + Duration::from_secs(121) {
                break;
            }
            out.extend(call.on_timeout(at));
        }
        assert_eq!(
            sent(&out).last().map(|m| m.start_line.clone()).as_deref(),
            Some("SIP/2.0 480 Temporarily Unavailable")
        );
        assert_eq!(states(&out), [(CallState::Ended, "not answered".into())]);
    }

    #[test]
    fn messages_are_matched_by_call_id_and_dialog_tags() {
        let t0 = Instant::now();
        let (call, ok) = active_call(t0);
        assert!(call.matches(&ok));
        let mut foreign = ok.clone();
        for (name, value) in foreign.headers.iter_mut() {
            if name == "From" {
                *value = value.replace("tag=", "tag=x");
            }
        }
        assert!(!call.matches(&foreign), "a response to someone else's request");
        let (incoming, out) =
            Call::incoming(settings(), Box::new(Counter(0)), &incoming_invite(), t0).unwrap();
        let local_tag =
            NameAddr::parse(sent(&out)[0].header("To").unwrap()).unwrap().param("tag").unwrap().to_owned();
        let bye = |to_tag: &str| {
            normalise(format!("BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5102;branch=z9hG4bKb\r\nFrom: <sip:bob@127.0.0.1>;tag=b7\r\nTo: <sip:alice@127.0.0.1>;tag={to_tag}\r\nCall-ID: in-1\r\nCSeq: 21 BYE\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap()
        };
        assert!(incoming.matches(&bye(&local_tag)));
        assert!(!incoming.matches(&bye("other")), "a BYE for another dialog of the same Call-ID");
        assert!(incoming.matches(&incoming_invite()), "the INVITE's retransmission has no To tag yet");
    }

    #[test]
    fn the_answer_to_a_delayed_offer_comes_in_the_ack() {
        let t0 = Instant::now();
        let mut invite = incoming_invite();
        invite.body.clear();
        let (mut call, out) = Call::incoming(settings(), Box::new(Counter(0)), &invite, t0).unwrap();
        assert!(!out.iter().any(|o| matches!(o, CallOutput::RemoteSdp(_))), "no offer to read");
        let ok = sent(&call.answer(b"v=0 our offer\r\n".to_vec(), &[], t0)).remove(0);
        let local_tag = NameAddr::parse(ok.header("To").unwrap()).unwrap().param("tag").unwrap().to_owned();
        let ack = normalise(format!("ACK sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5102;branch=z9hG4bKack\r\nFrom: <sip:bob@127.0.0.1>;tag=b7\r\nTo: <sip:alice@127.0.0.1>;tag={local_tag}\r\nCall-ID: in-1\r\nCSeq: 20 ACK\r\nContent-Type: application/sdp\r\nContent-Length: 12\r\n\r\nv=0 answer\r\n").as_bytes()).unwrap();
        assert_eq!(call.on_message(&ack, t0), [CallOutput::RemoteSdp(b"v=0 answer\r\n".to_vec())]);
    }

    #[test]
    fn a_merged_request_gets_482_and_a_retransmission_the_last_response() {
        let t0 = Instant::now();
        let (mut call, out) =
            Call::incoming(settings(), Box::new(Counter(0)), &incoming_invite(), t0).unwrap();
        let ringing = sent(&out).remove(0);
        assert_eq!(sent(&call.on_message(&incoming_invite(), t0)), std::slice::from_ref(&ringing));
        let mut forked = incoming_invite();
        for (name, value) in forked.headers.iter_mut() {
            if name == "Via" && value.contains("z9hG4bKproxy") {
                *value = value.replace("z9hG4bKproxy", "z9hG4bKother-path");
            }
        }
        let out = call.on_message(&forked, t0);
        assert_eq!(sent(&out)[0].start_line, "SIP/2.0 482 Loop Detected");
        assert_eq!(call.state(), CallState::Incoming, "the first request still rings");
    }

    #[test]
    fn the_far_ends_display_name_is_kept() {
        let t0 = Instant::now();
        let mut invite = incoming_invite();
        for (name, value) in invite.headers.iter_mut() {
            if name == "From" {
                *value = "\"Bob Builder\" <sip:bob@127.0.0.1>;tag=b7".into();
            }
        }
        let (call, _) = Call::incoming(settings(), Box::new(Counter(0)), &invite, t0).unwrap();
        assert_eq!(call.remote_name(), "Bob Builder");
    }

    #[test]
    fn our_own_invite_coming_back_is_a_loop() {
        let t0 = Instant::now();
        let (mut call, out) =
            Call::dial(settings(), Box::new(Counter(0)), "sip:alice@127.0.0.1", Vec::new(), Vec::new(), t0);
        let invite = sent(&out).remove(0);
        assert!(call.matches(&invite), "same Call-ID and our From tag");
        let out = call.on_message(&invite, t0);
        assert_eq!(sent(&out)[0].start_line, "SIP/2.0 482 Loop Detected");
    }

    #[test]
    fn a_merged_copy_after_answering_gets_482_and_a_retransmission_our_200() {
        let t0 = Instant::now();
        let (mut call, _) = Call::incoming(settings(), Box::new(Counter(0)), &incoming_invite(), t0).unwrap();
        let ok = sent(&call.answer(b"v=0\r\n".to_vec(), &[], t0)).remove(0);
        assert_eq!(sent(&call.on_message(&incoming_invite(), t0)), std::slice::from_ref(&ok));
        let mut forked = incoming_invite();
        for (name, value) in forked.headers.iter_mut() {
            if name == "Via" && value.contains("z9hG4bKproxy") {
                *value = value.replace("z9hG4bKproxy", "z9hG4bKother-path");
            }
        }
        assert_eq!(sent(&call.on_message(&forked, t0))[0].start_line, "SIP/2.0 482 Loop Detected");
    }

    #[test]
    fn a_cancel_waits_for_a_provisional_response_to_the_authenticated_invite() {
        let t0 = Instant::now();
        let (mut call, out) =
            Call::dial(settings(), Box::new(Counter(0)), "sip:bob@127.0.0.1", Vec::new(), Vec::new(), t0);
        let invite = sent(&out).remove(0);
        call.on_message(&reply(&invite, "100 Trying", "", ""), t0);
        let challenge = "Proxy-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"abc\", qop=\"auth\"\r\n";
        let out = call.on_message(&reply(&invite, "407 Proxy Authentication Required", challenge, ""), t0);
        let second = sent(&out)[1].clone();
        // The 100 came for the first INVITE; the second has had none yet.
        assert!(sent(&call.hangup(t0)).is_empty());
        let out = call.on_message(&reply(&second, "100 Trying", "", ""), t0);
        assert_eq!(sent(&out)[0].start_line, "CANCEL sip:bob@127.0.0.1 SIP/2.0");
        assert_eq!(sent(&out)[0].header("CSeq"), Some("2 CANCEL"));
    }
}
