//! CUSAX correlation end to end (cusax-wire 2, 3): two cusaxd, alice and bob, each with a SIP
//! account on Kamailio (handing out GRUUs) and an XMPP account on Prosody, contacts of each
//! other with a mutual subscription.
//!
//! - A call added to a chat (REQ-1, REQ-2): the chat's first messages carry each side's SIP
//!   target; `StartCall` calls bob's GRUU with the thread; bob's cusaxd links the call to his
//!   chat with alice and echoes the thread in its 2xx (seen in alice's SIP trace).
//! - A chat added to a call (REQ-3, REQ-4): the INVITE and 2xx exchange XMPP-Contact; bob's
//!   `StartChat` sends the call's token, alice's cusaxd links the chat and echoes it.
//! - Off-line lookups both ways, verified through alice's vCard.
//! - Stock peers (sipp, baresip, slixmpp) and forged or misplaced CUSAX data: see the last
//!   tests.

use std::path::Path;

use cusax_tests::{
    Baresip, Cusaxd, PATIENCE, PrivateBus, Testbed, XmppPeer, busctl, calls_json, cusaxctl, free_port_block,
    sipp_command, status_json, wait_for, write_private,
};
use serde_json::{Value, json};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const CAROL: &str = "carol@localhost";
const CONVERSATION: &str = "org.cusax.Cusax1.Conversation";
const CALL: &str = "org.cusax.Cusax1.Call";

/// One user's cusaxd on its own bus, with the SIP trace in its log.
struct Side {
    bus: PrivateBus,
    daemon: Cusaxd,
    _dir: tempfile::TempDir,
    jid: &'static str,
}

impl Side {
    fn start(testbed: &Testbed, user: &str, jid: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let config = format!(
            "[sip]\naor = \"sip:{user}@127.0.0.1\"\nproxy = \"sip:127.0.0.1:{}\"\ntransport = \"udp\"\n\
             password = \"secret-{user}\"\n{}[media]\ncodecs = [\"pcmu\"]\ninput = \"null\"\noutput = \"null\"\n",
            testbed.port("SIP_PORT"),
            testbed.xmpp_config(cusax_tests::XmppServer::Prosody, user)
        );
        write_private(&path, &config).unwrap();
        let bus = PrivateBus::start().unwrap();
        let log = Path::new("debug,pulseaudio=info,cusaxd::sip::wire=trace");
        let daemon = Cusaxd::start_with_env(&bus, &path, &[("RUST_LOG", log)]).unwrap();
        wait_for(&format!("{user} registered and online"), || {
            let s = status_json(&bus);
            Some(()).filter(|_| s["SipState"] == "registered" && s["XmppState"] == "online")
        });
        Self { bus, daemon, _dir: dir, jid }
    }

    fn contact(&self, jid: &str) -> Option<Value> {
        let out = cusaxctl(&self.bus, &["contacts", "--json"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|c| c["Jid"] == jid)
    }

    fn requests(&self) -> String {
        String::from_utf8_lossy(&cusaxctl(&self.bus, &["contacts", "--json"]).stdout).into_owned()
    }
}

/// The test bed with GRUUs, and alice's and bob's cusaxd, contacts of each other.
fn alice_and_bob() -> (Testbed, Side, Side) {
    let testbed = Testbed::start_with(&["prosody", "kamailio"], &[("TESTBED_SIP_GRUU", "1")]).unwrap();
    let alice = Side::start(&testbed, "alice", ALICE);
    let bob = Side::start(&testbed, "bob", BOB);
    befriend(&alice, &bob);
    (testbed, alice, bob)
}

/// a and b see each other's presence (a mutual subscription), as two users would set it up.
fn befriend(a: &Side, b: &Side) {
    assert!(cusaxctl(&a.bus, &["subscribe", b.jid]).status.success());
    wait_for("the request at b", || {
        b.requests().contains(&format!("\"SubscriptionRequest\":\"{}\"", a.jid)).then_some(())
    });
    // Approving also asks to see a's presence back.
    assert!(cusaxctl(&b.bus, &["approve", a.jid]).status.success());
    wait_for("the request at a", || {
        a.requests().contains(&format!("\"SubscriptionRequest\":\"{}\"", b.jid)).then_some(())
    });
    assert!(cusaxctl(&a.bus, &["approve", b.jid]).status.success());
    for (side, other) in [(a, b.jid), (b, a.jid)] {
        wait_for("a mutual subscription", || side.contact(other).filter(|c| c["Subscription"] == "both"));
    }
}

/// `busctl --json=short call`: the reply's values.
fn call(bus: &PrivateBus, path: &str, iface: &str, method: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json=short", "call", "org.cusax.Cusax1", path, iface, method];
    all.extend_from_slice(args);
    let out = busctl(bus, &all);
    assert!(out.status.success(), "{method}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).map(|v| v["data"].clone()).unwrap_or(Value::Null)
}

fn property(bus: &PrivateBus, path: &str, iface: &str, name: &str) -> Value {
    let out = busctl(bus, &["--json=short", "get-property", "org.cusax.Cusax1", path, iface, name]);
    serde_json::from_slice::<Value>(&out.stdout).map(|v| v["data"].clone()).unwrap_or(Value::Null)
}

fn start_conversation(bus: &PrivateBus, jid: &str) -> String {
    let reply = call(
        bus,
        "/org/cusax/Cusax1",
        "org.cusax.Cusax1.Conversations",
        "StartConversation",
        &["sa{sv}", jid, "0"],
    );
    reply[0].as_str().unwrap().to_owned()
}

fn send_message(bus: &PrivateBus, conversation: &str, body: &str) {
    call(bus, conversation, CONVERSATION, "SendMessage", &["sa{sv}", body, "0"]);
}

/// The conversation object with `peer`, once there is one.
fn conversation_with(bus: &PrivateBus, peer: &str) -> Option<String> {
    let all = property(bus, "/org/cusax/Cusax1", "org.cusax.Cusax1.Conversations", "Conversations");
    all.as_array()?
        .iter()
        .filter_map(|p| p.as_str())
        .find(|p| property(bus, p, CONVERSATION, "Peer") == peer)
        .map(str::to_owned)
}

fn history_has(bus: &PrivateBus, peer: &str, body: &str) -> bool {
    let out = cusaxctl(bus, &["history", peer, "--json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|m| m["body"] == body)
}

/// The call in `state` at `bus`, once there is one.
fn call_in(bus: &PrivateBus, state: &str) -> Value {
    wait_for(&format!("a call {state}"), || calls_json(bus).into_iter().find(|c| c["State"] == state))
}

fn call_where(bus: &PrivateBus, path: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, || calls_json(bus).into_iter().find(|c| c["Path"] == path && ready(c)))
}

/// The SIP messages a daemon's trace shows (`sent` or `received`) whose first line starts
/// with `start`.
fn traced(log: &str, way: &str, start: &str) -> Vec<String> {
    // Each ends where the next log line begins (with its date).
    let next_line = |text: &str| {
        text.match_indices('\n')
            .map(|(at, _)| at)
            .find(|at| {
                text[at + 1..].chars().take(5).collect::<String>().ends_with('-')
                    && text[at + 1..].starts_with("20")
            })
            .unwrap_or(text.len())
    };
    log.split(&format!(" {way} sip="))
        .skip(1)
        .map(|chunk| chunk[..next_line(chunk)].to_owned())
        .filter(|m| m.starts_with(start))
        .collect()
}

fn header(message: &str, name: &str) -> Option<String> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

#[test]
fn a_call_added_to_a_chat_is_linked_on_both_sides_and_the_callee_echoes_the_thread() {
    let (_testbed, alice, bob) = alice_and_bob();

    // They chat: each side's first message of the thread carries its SIP target.
    let alice_chat = start_conversation(&alice.bus, BOB);
    send_message(&alice.bus, &alice_chat, "hi bob");
    let bob_chat = wait_for("bob's conversation", || conversation_with(&bob.bus, ALICE));
    send_message(&bob.bus, &bob_chat, "hi alice, call me");
    wait_for("bob's reply at alice", || history_has(&alice.bus, BOB, "hi alice, call me").then_some(()));

    // alice adds a call to the chat.
    let placed = call(&alice.bus, &alice_chat, CONVERSATION, "StartCall", &["a{sv}", "0"]);
    let call_path = placed[0].as_str().unwrap().to_owned();
    let incoming = call_in(&bob.bus, "incoming");
    assert_eq!(incoming["Conversation"], bob_chat, "bob's call belongs to his chat with alice: {incoming}");
    assert_eq!(incoming["Correlated"], true);
    assert!(incoming["PeerJid"].as_str().unwrap().starts_with("alice@localhost/"), "{incoming}");
    assert_eq!(incoming["Contact"], property(&bob.bus, &bob_chat, CONVERSATION, "Contact"));
    let bob_call = incoming["Path"].as_str().unwrap().to_owned();
    assert_eq!(property(&bob.bus, &bob_chat, CONVERSATION, "Calls"), json!([bob_call]));
    call(&bob.bus, &bob_call, CALL, "Answer", &[]);

    let up = call_where(&alice.bus, &call_path, "alice's call correlated", |c| {
        c["State"] == "active" && c["Correlated"] == true
    });
    assert_eq!(up["Conversation"], alice_chat);
    assert!(up["PeerJid"].as_str().unwrap().starts_with("bob@localhost/"), "bob's XMPP-Contact: {up}");
    assert_eq!(property(&alice.bus, &alice_chat, CONVERSATION, "Calls"), json!([call_path]));
    let status = String::from_utf8_lossy(&cusaxctl(&alice.bus, &["status"]).stdout).into_owned();
    assert!(status.contains("(correlated)"), "cusaxctl status shows the link: {status}");

    // On the wire: the INVITE went to bob's GRUU with the thread, and bob's 2xx echoed it.
    let log = alice.daemon.log_text();
    let invite = traced(&log, "sent", "INVITE ").pop().expect("alice's INVITE in her trace");
    assert!(invite.lines().next().unwrap().contains(";gr="), "to bob's GRUU: {invite}");
    let thread = header(&invite, "XMPP-Thread").expect("the INVITE names the thread");
    assert_eq!(header(&invite, "Call-Info").as_deref(), Some("<xmpp:alice@localhost>;purpose=impp"));
    let token = header(&invite, "XMPP-Contact").expect("the INVITE names alice's JID");
    let ok = traced(&log, "received", "SIP/2.0 200")
        .into_iter()
        .find(|m| header(m, "CSeq").is_some_and(|c| c.ends_with("INVITE")))
        .expect("bob's 2xx in alice's trace");
    assert_eq!(header(&ok, "XMPP-Thread").as_ref(), Some(&thread), "the echo");
    let echoed = header(&ok, "XMPP-Contact").expect("bob's XMPP-Contact");
    assert!(echoed.starts_with("<xmpp:bob@localhost/"), "{echoed}");
    assert_eq!(echoed.rsplit(';').next(), token.rsplit(';').next(), "the token copied");
    assert_eq!(header(&ok, "Call-Info").as_deref(), Some("<xmpp:bob@localhost>;purpose=impp"));
    // Threads and tokens are secrets: only the trace shows them.
    let secret = token.rsplit(';').next().unwrap();
    for line in log
        .lines()
        .chain(bob.daemon.log_text().lines())
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN "))
    {
        assert!(!line.contains(secret) && !line.contains(&thread), "a secret at info level: {line}");
    }
    call(&alice.bus, &call_path, CALL, "Hangup", &[]);
}

#[test]
fn a_chat_added_to_a_call_is_linked_by_its_token_and_lookups_work_both_ways() {
    let (_testbed, alice, bob) = alice_and_bob();
    // alice knows bob's SIP address from his presence.
    wait_for("bob's SIP side at alice", || {
        alice
            .contact(BOB)
            .filter(|c| c["SipAddresses"].as_array().is_some_and(|a| a.contains(&json!("sip:bob@127.0.0.1"))))
    });

    // Off-line: bob learns alice's SIP address from her JID, and her JID from it.
    let by_jid = wait_for("alice's verified SIP address at bob", || {
        let out = cusaxctl(&bob.bus, &["lookup", ALICE, "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).ok().filter(|c| c["Verified"] == true)
    });
    assert!(by_jid["SipAddresses"].as_array().unwrap().contains(&json!("sip:alice@127.0.0.1")), "{by_jid}");
    let out = cusaxctl(&bob.bus, &["lookup", "sip:alice@127.0.0.1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("JID       alice@localhost"), "{out:?}");
    assert!(text.contains("Verified  yes"), "{text}");
    let out = cusaxctl(&bob.bus, &["lookup", "sip:nobody@127.0.0.1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no contact"), "{out:?}");

    // alice calls bob's SIP address; both learn each other's JID from the SIP headers.
    let out = cusaxctl(&alice.bus, &["call", "sip:bob@127.0.0.1"]);
    assert!(out.status.success(), "{out:?}");
    let call_path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let incoming = call_in(&bob.bus, "incoming");
    assert!(incoming["PeerJid"].as_str().unwrap().starts_with("alice@localhost/"), "{incoming}");
    assert_eq!(incoming["Correlated"], false, "no chat yet");
    let bob_call = incoming["Path"].as_str().unwrap().to_owned();
    call_where(&bob.bus, &bob_call, "alice verified at bob", |c| c["ContactVerified"] == true);
    call(&bob.bus, &bob_call, CALL, "Answer", &[]);
    call_where(&alice.bus, &call_path, "bob's JID at alice", |c| {
        c["State"] == "active" && c["PeerJid"].as_str().is_some_and(|j| j.starts_with("bob@localhost/"))
    });

    // bob adds a chat to the call; alice's cusaxd links it, her first reply echoes the token.
    let chat = call(&bob.bus, &bob_call, CALL, "StartChat", &[]);
    let bob_chat = chat[0].as_str().unwrap().to_owned();
    assert!(
        property(&bob.bus, &bob_chat, CONVERSATION, "PeerResource").as_str().is_some_and(|r| !r.is_empty())
    );
    send_message(&bob.bus, &bob_chat, "about our call");
    let linked = call_where(&alice.bus, &call_path, "the chat linked at alice", |c| c["Correlated"] == true);
    let alice_chat = linked["Conversation"].as_str().unwrap().to_owned();
    assert_eq!(property(&alice.bus, &alice_chat, CONVERSATION, "Peer"), BOB);
    assert_eq!(property(&alice.bus, &alice_chat, CONVERSATION, "Calls"), json!([call_path]));
    assert_eq!(
        calls_json(&bob.bus).iter().find(|c| c["Path"] == bob_call).unwrap()["Correlated"],
        false,
        "no echo yet"
    );
    send_message(&alice.bus, &alice_chat, "yes, here");
    let confirmed = call_where(&bob.bus, &bob_call, "the echo at bob", |c| c["Correlated"] == true);
    assert_eq!(confirmed["Conversation"], bob_chat);
    call(&bob.bus, &bob_call, CALL, "Hangup", &[]);
}

/// A sipp UAC scenario: an INVITE with `headers` (through Kamailio's challenge), then the
/// 200 is ACKed and the callee's BYE answered.
fn uac_scenario(headers: &str) -> String {
    let invite = |cseq: u32, auth: &str| {
        format!(
            "<send retrans=\"500\"><![CDATA[\n\n\
             INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]\n\
             From: <sip:[caller]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]\n\
             To: <sip:[service]@[remote_ip]>\n\
             Call-ID: [call_id]\n\
             CSeq: {cseq} INVITE\n\
             Contact: <sip:[caller]@[local_ip]:[local_port];transport=[transport]>\n\
             Max-Forwards: 70\n{auth}{headers}\
             Content-Type: application/sdp\n\
             Content-Length: [len]\n\n\
             v=0\no=sipp 1 {cseq} IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\n\
             m=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\n\n]]></send>\n"
        )
    };
    let ack = |cseq: u32, to_tag: &str, uri: &str| {
        format!(
            "<send><![CDATA[\n\nACK {uri} SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch{}]\n{}\
             From: <sip:[caller]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]\n\
             To: <sip:[service]@[remote_ip]>{to_tag}\nCall-ID: [call_id]\nCSeq: {cseq} ACK\n\
             Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n",
            if cseq == 1 { "-3" } else { "" },
            if cseq == 1 { "" } else { "[routes]\n" }
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"cusax uac\">\n{}\
         <recv response=\"100\" optional=\"true\"/>\n<recv response=\"407\" auth=\"true\"/>\n{}{}\
         <recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\" optional=\"true\"/>\n\
         <recv response=\"200\" rrs=\"true\"/>\n{}\
         <recv request=\"BYE\"/>\n<send><![CDATA[\n\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n\
         [last_To:]\n[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n</scenario>\n",
        invite(1, ""),
        ack(1, "[peer_tag_param]", "sip:[service]@[remote_ip]:[remote_port]"),
        invite(2, "[authentication]\n"),
        ack(2, "[peer_tag_param]", "[next_url]"),
    )
}

/// A sipp OPTIONS scenario (through Kamailio's challenge) that ends with the 200.
fn options_scenario() -> String {
    let options = |cseq: u32, auth: &str| {
        format!(
            "<send retrans=\"500\"><![CDATA[\n\n\
             OPTIONS sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]\n\
             From: <sip:[caller]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]\n\
             To: <sip:[service]@[remote_ip]>\nCall-ID: [call_id]\nCSeq: {cseq} OPTIONS\n\
             Max-Forwards: 70\n{auth}Content-Length: 0\n\n]]></send>\n"
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"cusax options\">\n{}\
         <recv response=\"407\" auth=\"true\"/>\n{}<recv response=\"200\"/>\n</scenario>\n",
        options(1, ""),
        options(2, "[authentication]\n"),
    )
}

/// What alice's answer to an OPTIONS from `caller` says (sipp through Kamailio).
fn options_from(testbed: &Testbed, caller: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("options.xml");
    std::fs::write(&scenario, options_scenario()).unwrap();
    let port = free_port_block(1);
    let proxy = format!("127.0.0.1:{}", testbed.port("SIP_PORT"));
    let password = format!("secret-{caller}");
    let args: Vec<String> =
        ["-s", "alice", "-key", "caller", caller, "-au", caller, "-ap", &password, "-trace_msg", &proxy]
            .into_iter()
            .map(str::to_owned)
            .collect();
    let sipp = sipp_command(dir.path(), &scenario, port, &args).spawn().expect("run sipp");
    cusax_tests::finish_sipp(sipp, "sipp OPTIONS", dir.path());
    sipp_ok(dir.path(), "OPTIONS")
}

fn sipp_trace(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// A call from `caller` (via sipp, through Kamailio) to alice with `headers`; sipp's message
/// trace ends up in `dir`.
fn sipp_call(testbed: &Testbed, dir: &Path, caller: &str, headers: &str) -> std::process::Child {
    let scenario = dir.join("uac.xml");
    std::fs::write(&scenario, uac_scenario(headers)).unwrap();
    let port = free_port_block(3);
    let proxy = format!("127.0.0.1:{}", testbed.port("SIP_PORT"));
    let password = format!("secret-{caller}");
    let media = (port + 1).to_string();
    let args: Vec<String> = ["-s", "alice", "-key", "caller", caller, "-au", caller, "-ap", &password]
        .into_iter()
        .chain(["-mp", &media, "-trace_msg", &proxy])
        .map(str::to_owned)
        .collect();
    sipp_command(dir, &scenario, port, &args).spawn().expect("run sipp")
}

/// What sipp received (its message trace in `dir`): the 200 to its `method`, or "".
fn sipp_ok(dir: &Path, method: &str) -> String {
    sipp_trace(dir)
        .split("----------------------------------------------- ")
        .filter(|m| m.contains("message received"))
        .filter_map(|m| m.split_once("SIP/2.0 200").map(|(_, rest)| format!("SIP/2.0 200{rest}")))
        .find(|m| header(m, "CSeq").is_some_and(|c| c.ends_with(method)))
        .unwrap_or_default()
}

/// alice's incoming call once `ready` holds for it: checked with `check`, answered, hung up;
/// sipp finishes; what its 200 said.
fn answer_and_end(
    alice: &Side,
    sipp: std::process::Child,
    dir: &Path,
    ready: impl Fn(&Value) -> bool,
    check: impl Fn(&Value),
) -> String {
    let incoming = wait_for("the incoming call", || {
        calls_json(&alice.bus).into_iter().find(|c| c["State"] == "incoming" && ready(c))
    });
    check(&incoming);
    let path = incoming["Path"].as_str().unwrap().to_owned();
    call(&alice.bus, &path, CALL, "Answer", &[]);
    call_where(&alice.bus, &path, "the call up", |c| c["State"] == "active");
    call(&alice.bus, &path, CALL, "Hangup", &[]);
    cusax_tests::finish_sipp(sipp, "sipp", dir);
    sipp_ok(dir, "INVITE")
}

#[test]
fn stock_peers_work_uncorrelated_and_forged_or_misplaced_cusax_data_links_nothing() {
    let testbed =
        Testbed::start_with(&["prosody", "kamailio"], &[("TESTBED_USERS", "alice bob carol mallory")])
            .unwrap();
    let alice = Side::start(&testbed, "alice", ALICE);
    let port = testbed.port("XMPP_C2S_PORT");
    // carol: a stock XMPP client in alice's roster (mutual), whose vCard lists her SIP address.
    let mut carol = XmppPeer::start(&testbed, "carol", port).unwrap();
    carol.command(json!({"cmd": "vcard_set", "tels": [[["work", "voice"], "carol@127.0.0.1"]]})).unwrap();
    carol.command(json!({"cmd": "subscribe", "to": ALICE})).unwrap();
    wait_for("carol's request", || {
        alice.requests().contains("\"SubscriptionRequest\":\"carol@localhost\"").then_some(())
    });
    assert!(cusaxctl(&alice.bus, &["approve", CAROL]).status.success());
    carol.expect(|e| e["event"] == "subscribe", PATIENCE).unwrap();
    carol.command(json!({"cmd": "approve", "to": ALICE})).unwrap();
    wait_for("carol mutual", || alice.contact(CAROL).filter(|c| c["Subscription"] == "both"));

    // A stock chatter: plain messages both ways; ours carry our SIP target, which it ignores.
    carol.command(json!({"cmd": "send", "to": ALICE, "body": "plain hello", "thread": "carol-thread-1",
        "extra_xml": ["<sip-contact xmlns='urn:xmpp:sip-contact' target='&lt;sip:carol@127.0.0.1&gt;;audio'/>"]})).unwrap();
    let carol_chat = wait_for("carol's chat", || conversation_with(&alice.bus, CAROL));
    send_message(&alice.bus, &carol_chat, "plain reply");
    let reply = carol.expect(|e| e["event"] == "message" && e["body"] == "plain reply", PATIENCE).unwrap();
    assert_eq!(reply["thread"], "carol-thread-1", "alice continues carol's thread");
    assert_eq!(reply["sip_contact"], "<sip:alice@127.0.0.1>;audio", "{reply}");
    assert_eq!(reply["reach"], json!(["sip:alice@127.0.0.1"]));

    // OPTIONS (cusax-wire OFF-2): carol, whose SIP address is hers, learns alice's JID from
    // the answer; mallory does not. And alice, probing an address nobody in her roster has,
    // learns whom it claims to be: a hint, as carol's vCard does not list it.
    let to_carol = options_from(&testbed, "carol");
    assert_eq!(
        header(&to_carol, "Call-Info").as_deref(),
        Some("<xmpp:alice@localhost>;purpose=impp"),
        "{to_carol}"
    );
    let to_mallory = options_from(&testbed, "mallory");
    assert!(
        to_mallory.starts_with("SIP/2.0 200") && header(&to_mallory, "Call-Info").is_none(),
        "{to_mallory}"
    );
    let uas_dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = ["-key", "impp", CAROL].into_iter().map(str::to_owned).collect();
    let uas = cusax_tests::sipp_uas(&testbed, uas_dir.path(), "mallory", "uas_options_impp.xml", &keys);
    let out = cusaxctl(&alice.bus, &["lookup", "sip:mallory@127.0.0.1", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let probed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&probed["Jid"], &probed["AddressVerified"]), (&json!(CAROL), &json!(false)), "{probed}");
    cusax_tests::finish_sipp(uas, "sipp OPTIONS UAS", uas_dir.path());
    let out = cusaxctl(&alice.bus, &["lookup", "sip:carol@127.0.0.1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Verified  yes"), "{out:?}");

    // A Jitsi-style INVITE (Call-Info only) from carol: a contact-level match, verified by
    // carol's vCard; no conversation link.
    let dir = tempfile::tempdir().unwrap();
    let sipp = sipp_call(&testbed, dir.path(), "carol", "Call-Info: <xmpp:carol@localhost>;purpose=impp\n");
    let contact = alice.contact(CAROL).unwrap()["Path"].clone();
    // Verified once alice has read carol's vCard (the call asks for it).
    let ok = answer_and_end(
        &alice,
        sipp,
        dir.path(),
        |c| c["ContactVerified"] == true,
        |c| {
            assert_eq!(c["Contact"], contact, "the contact-level match");
            assert_eq!(c["PeerJid"], CAROL);
            assert_eq!(c["Conversation"], "/");
            assert_eq!(c["Correlated"], false);
        },
    );
    assert_eq!(header(&ok, "Call-Info").as_deref(), Some("<xmpp:alice@localhost>;purpose=impp"), "{ok}");

    // mallory claims to be carol: the contact is named, unverified, and learns nothing.
    let dir = tempfile::tempdir().unwrap();
    let sipp = sipp_call(
        &testbed,
        dir.path(),
        "mallory",
        "Call-Info: <xmpp:carol@localhost>;purpose=impp\nXMPP-Thread: carol-thread-1\n",
    );
    let ok = answer_and_end(
        &alice,
        sipp,
        dir.path(),
        |_| true,
        |c| {
            assert_eq!(c["Contact"], contact);
            assert_eq!(c["ContactVerified"], false, "mallory's SIP identity is not in carol's vCard");
            assert_eq!(c["Conversation"], "/", "a stolen thread from an unbound identity links nothing");
            assert_eq!(c["Correlated"], false);
        },
    );
    assert!(header(&ok, "XMPP-Thread").is_none() && header(&ok, "Call-Info").is_none(), "{ok}");

    // carol calls with her thread: linked to the chat, and the 2xx echoes it. The JID her
    // INVITE also names is someone else's: not taken, no token copied.
    let dir = tempfile::tempdir().unwrap();
    let headers = "XMPP-Thread: carol-thread-1\nXMPP-Contact: <xmpp:mallory@localhost/x>;0123456789abcdef\n";
    let sipp = sipp_call(&testbed, dir.path(), "carol", headers);
    let ok = answer_and_end(
        &alice,
        sipp,
        dir.path(),
        |_| true,
        |c| {
            assert_eq!(c["Conversation"], carol_chat);
            assert_eq!(c["Correlated"], true);
            assert_eq!((&c["Contact"], &c["PeerJid"]), (&contact, &json!("")), "{c}");
        },
    );
    assert_eq!(header(&ok, "XMPP-Thread").as_deref(), Some("carol-thread-1"), "{ok}");
    assert!(header(&ok, "XMPP-Contact").is_none(), "{ok}");

    // sip-correlation: a copy (carbon) of carol's message to alice's other client, and a
    // stranger naming the call's token, link nothing; carol's own message does, and
    // alice's first reply echoes it.
    let token = "7c9e6679f4254a4fa9c3a2b1d7e0c3b5";
    let correlation = format!("<sip-correlation xmlns='urn:xmpp:sip-correlation' value='{token}'/>");
    let dir = tempfile::tempdir().unwrap();
    let headers = format!("XMPP-Contact: <xmpp:{}>;{token}\n", carol.jid);
    let sipp = sipp_call(&testbed, dir.path(), "carol", &headers);
    let incoming = call_in(&alice.bus, "incoming");
    let path = incoming["Path"].as_str().unwrap().to_owned();
    call(&alice.bus, &path, CALL, "Answer", &[]);
    call_where(&alice.bus, &path, "the call up", |c| c["State"] == "active");
    let other = XmppPeer::start(&testbed, "alice", port).unwrap();
    carol
        .command(
            json!({"cmd": "send", "to": other.jid, "body": "for your other client", "thread": "t-carbon",
        "extra_xml": [correlation]}),
        )
        .unwrap();
    let mut mallory = XmppPeer::start(&testbed, "mallory", port).unwrap();
    mallory
        .command(json!({"cmd": "send", "to": ALICE, "body": "I am the call", "thread": "t-mallory",
        "extra_xml": [correlation]}))
        .unwrap();
    wait_for("the carbon and mallory's message at alice", || {
        (history_has(&alice.bus, CAROL, "for your other client")
            && history_has(&alice.bus, "mallory@localhost", "I am the call"))
        .then_some(())
    });
    let still = calls_json(&alice.bus).into_iter().find(|c| c["Path"] == path).unwrap();
    assert_eq!(still["Conversation"], "/", "{still}");
    carol
        .command(json!({"cmd": "send", "to": ALICE, "body": "chat about the call", "thread": "t-call",
        "extra_xml": [correlation]}))
        .unwrap();
    let linked = call_where(&alice.bus, &path, "carol's chat linked", |c| c["Correlated"] == true);
    assert_eq!(linked["Conversation"], carol_chat);
    send_message(&alice.bus, &carol_chat, "got it");
    let echo = carol.expect(|e| e["event"] == "message" && e["body"] == "got it", PATIENCE).unwrap();
    assert_eq!(echo["sip_correlation"], token, "{echo}");
    assert_eq!(echo["thread"], "t-call");
    call(&alice.bus, &path, CALL, "Hangup", &[]);
    cusax_tests::finish_sipp(sipp, "sipp", dir.path());

    // A stock SIP caller: no CUSAX headers, nothing linked, the call works.
    let mut bob = Baresip::start(&testbed, "bob", "udp").unwrap();
    bob.command("dial", "sip:alice@127.0.0.1").unwrap();
    let plain = call_in(&alice.bus, "incoming");
    assert_eq!(
        (&plain["Conversation"], &plain["Correlated"], &plain["Contact"], &plain["PeerJid"]),
        (&json!("/"), &json!(false), &json!("/"), &json!(""))
    );
    let path = plain["Path"].as_str().unwrap().to_owned();
    call(&alice.bus, &path, CALL, "Answer", &[]);
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    call(&alice.bus, &path, CALL, "Hangup", &[]);
    drop(other);
}
