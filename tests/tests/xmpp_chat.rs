//! Chat between cusaxd (alice) and a stock slixmpp client (bob) through a real Prosody and a
//! real ejabberd:
//! threads, receipts and chat states both ways; nothing lost or doubled when the server is
//! down, when cusaxd is killed, or when cusaxd is offline.

use std::path::Path;
use std::time::Duration;

use cusax_tests::{
    Cusaxd, PATIENCE, PrivateBus, Testbed, Watch, XmppPeer, XmppServer, assert_documented, busctl, cusaxctl,
    on_both_xmpp_servers, status_json, wait_for, wait_for_within, write_private,
};
use serde_json::{Value, json};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";

/// alice's config: XMPP only, on the test bed's Prosody.
fn write_config(testbed: &Testbed, server: XmppServer, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    write_private(&path, &testbed.xmpp_config(server, "alice")).unwrap();
    path
}

/// alice's cusaxd with her history in `dir/data`, once online.
fn start_alice(bus: &PrivateBus, config: &Path, dir: &Path) -> Cusaxd {
    let data = dir.join("data");
    let daemon = Cusaxd::start_with_env(bus, config, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    wait_for("alice online", || Some(()).filter(|_| status_json(bus)["XmppState"] == "online"));
    daemon
}

/// `cusaxctl msg`, returning the message id.
fn send(bus: &PrivateBus, to: &str, text: &str) -> String {
    let out = cusaxctl(bus, &["msg", to, text]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn history(bus: &PrivateBus, peer: &str) -> Vec<Value> {
    let out = cusaxctl(bus, &["history", peer, "--limit", "500", "--json"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn signal<'a>(event: &'a Value, member: &str) -> Option<&'a Vec<Value>> {
    (event["event"] == "signal" && event["member"] == member).then(|| event["args"].as_array()).flatten()
}

/// No further message reaches `peer` within `period`: nothing was sent twice.
fn assert_nothing_more(peer: &mut XmppPeer, period: Duration) {
    let more: Vec<Value> = peer.drain(period).into_iter().filter(|e| e["event"] == "message").collect();
    assert!(more.is_empty(), "sent twice: {more:?}");
}

fn message_from(peer: &mut XmppPeer, body: &str) -> Value {
    peer.expect(|e| e["event"] == "message" && e["body"] == body, PATIENCE).unwrap()
}

fn messages_both_ways_with_threads_receipts_and_chat_states(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let alice = start_alice(&bus, &write_config(&testbed, server, dir.path()), dir.path());
    let mut bob = XmppPeer::start(&testbed, "bob", testbed.xmpp_port(server)).unwrap();
    let watch = Watch::start(&bus, true);

    // alice -> bob: a thread of its own, origin-id = id, a receipt asked, <active/>.
    let id = send(&bus, BOB, "hello bob");
    let got = message_from(&mut bob, "hello bob");
    assert_eq!(got["type"], "chat");
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["origin_id"], id.as_str());
    assert_eq!(got["receipt_request"], true);
    assert_eq!(got["chatstate"], "active");
    let thread = got["thread"].as_str().expect("a thread").to_owned();
    assert_eq!(thread.len(), 36, "a UUID: {thread}");
    let sent = watch.next_event(|e| signal(e, "MessageStatus").is_some_and(|a| a[0] == id.as_str()));
    assert_eq!(signal(&sent.unwrap(), "MessageStatus").unwrap()[1], "sent");
    bob.command(json!({"cmd": "receipt", "to": got["frm"], "id": id, "thread": thread})).unwrap();
    let delivered = watch.next_event(|e| signal(e, "MessageStatus").is_some_and(|a| a[0] == id.as_str()));
    assert_eq!(signal(&delivered.unwrap(), "MessageStatus").unwrap()[1], "delivered");

    // bob -> alice in the same thread, asking for a receipt: MessageReceived, and a receipt.
    bob.command(json!({"cmd": "send", "to": ALICE, "body": "hi alice", "thread": thread, "receipt": true,
        "chatstate": "active", "id": "bob-1"}))
        .unwrap();
    let received = watch.next_event(|e| signal(e, "MessageReceived").is_some()).expect("MessageReceived");
    let args = signal(&received, "MessageReceived").unwrap();
    assert!(args[1].as_str().unwrap().starts_with("bob@localhost/"), "{args:?}");
    assert_eq!(args[2], "hi alice");
    assert_eq!(args[4]["direction"], "in");
    assert_eq!(args[4]["via"], "direct");
    assert_eq!(args[4]["delayed"], false);
    let conversation = received["path"].as_str().unwrap().to_owned();
    assert_documented(&bus, &conversation, "org.cusax.Cusax1.Conversation");
    let receipt = bob
        .expect(|e| e["event"] == "receipt", PATIENCE)
        .unwrap_or_else(|e| panic!("{e}\n{}", alice.log_text()));
    assert_eq!(receipt["id"], "bob-1");

    // bob types: the conversation's ChatState follows; alice's paused reaches bob, with
    // the thread (bob has shown he speaks XEP-0085).
    bob.command(json!({"cmd": "chatstate", "to": ALICE, "state": "composing", "thread": thread})).unwrap();
    watch
        .next_event(|e| e["property"] == "ChatState" && e["value"] == "composing")
        .expect("ChatState composing");
    let out = busctl(
        &bus,
        &[
            "call",
            "org.cusax.Cusax1",
            &conversation,
            "org.cusax.Cusax1.Conversation",
            "SetChatState",
            "s",
            "paused",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let state = bob.expect(|e| e["event"] == "chatstate", PATIENCE).unwrap();
    assert_eq!((state["state"].as_str(), state["thread"].as_str()), (Some("paused"), Some(thread.as_str())));

    // alice's reply goes to the resource bob wrote from, in bob's thread.
    let reply = send(&bus, BOB, "how are you?");
    let got = message_from(&mut bob, "how are you?");
    assert_eq!(got["thread"], thread.as_str());
    assert_eq!(got["id"], reply.as_str());

    // History: both directions, with their status.
    let page = history(&bus, BOB);
    let bodies: Vec<(&str, &str, &str)> = page
        .iter()
        .map(|m| {
            (m["direction"].as_str().unwrap(), m["body"].as_str().unwrap(), m["status"].as_str().unwrap())
        })
        .collect();
    assert_eq!(bodies[0], ("out", "hello bob", "delivered"));
    assert_eq!(bodies[1], ("in", "hi alice", "received"));
    assert_eq!(bodies[2].1, "how are you?");
    assert_eq!(page.len(), 3, "{page:?}");
}

fn bad_requests_get_named_errors(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let _alice = start_alice(&bus, &write_config(&testbed, server, dir.path()), dir.path());
    let call = |args: &[&str]| {
        let out = busctl(&bus, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let on_root = |iface: &str, args: &[&str]| {
        let iface = format!("org.cusax.Cusax1.{iface}");
        let mut all = vec!["call", "org.cusax.Cusax1", "/org/cusax/Cusax1", iface.as_str()];
        all.extend_from_slice(args);
        call(&all)
    };
    let start = [
        "call",
        "org.cusax.Cusax1",
        "/org/cusax/Cusax1",
        "org.cusax.Cusax1.Conversations",
        "StartConversation",
        "sa{sv}",
    ];
    for bad in ["bob@@localhost", "localhost", ""] {
        let mut args = start.to_vec();
        args.extend([bad, "0"]);
        let err = call(&args);
        assert!(err.contains("no user part") || err.contains("not a JID"), "{bad}: {err}");
    }
    let path = {
        let mut args = start.to_vec();
        args.extend([BOB, "0"]);
        let out = busctl(&bus, &args);
        String::from_utf8_lossy(&out.stdout).split('"').nth(1).unwrap().to_owned()
    };
    let send = |body: &str| {
        call(&[
            "call",
            "org.cusax.Cusax1",
            &path,
            "org.cusax.Cusax1.Conversation",
            "SendMessage",
            "sa{sv}",
            body,
            "0",
        ])
    };
    assert!(send("").contains("the message is empty"));
    assert!(send("   ").contains("the message is empty"));
    let huge = "x".repeat(64 * 1024 + 1);
    assert!(send(&huge).contains("at most 65536"));
    assert!(send("bell \u{7}").contains("cannot carry"));
    let err = call(&[
        "call",
        "org.cusax.Cusax1",
        &path,
        "org.cusax.Cusax1.Conversation",
        "SetChatState",
        "s",
        "typing",
    ]);
    assert!(err.contains("unknown chat state"), "{err}");
    let err = on_root("Daemon", &["SetPresence", "ss", "busy", ""]);
    assert!(err.contains("unknown show"), "{err}");
    let err = on_root("History", &["Query", "a{sv}", "1", "limit", "u", "0"]);
    assert!(err.contains("limit must be 1 to 500"), "{err}");
    let err = on_root("History", &["Query", "a{sv}", "1", "peer", "i", "3"]);
    assert!(err.contains("peer must be"), "{err}");
    // Nothing was stored of the refused messages, and nothing is waiting.
    assert!(history(&bus, BOB).is_empty());
    // After Close the object is gone.
    let out = busctl(&bus, &["call", "org.cusax.Cusax1", &path, "org.cusax.Cusax1.Conversation", "Close"]);
    assert!(out.status.success(), "{out:?}");
    let err = send("hello");
    assert!(err.contains("Unknown object") || err.contains("UnknownObject"), "{err}");
}

fn twenty_messages_sent_while_the_server_is_down_arrive_once_in_order(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let _alice = start_alice(&bus, &write_config(&testbed, server, dir.path()), dir.path());
    testbed.stop_xmpp(server).unwrap();
    wait_for("alice to notice", || Some(()).filter(|_| status_json(&bus)["XmppState"] != "online"));
    let watch = Watch::start(&bus, true);
    let ids: Vec<String> = (1..=20).map(|n| send(&bus, BOB, &format!("offline {n}"))).collect();
    assert!(history(&bus, BOB).iter().all(|m| m["status"] == "queued"));
    testbed.start_xmpp(server).unwrap();
    // Down for a while (ejabberd takes seconds to start, more on a loaded machine), alice
    // waits out her backoff (2 s doubling, the next try may be minutes away); a reload, as a
    // network-up hook would do, makes her try now. The queue comes from the store again.
    let out =
        busctl(&bus, &["call", "org.cusax.Cusax1", "/org/cusax/Cusax1", "org.cusax.Cusax1.Daemon", "Reload"]);
    assert!(out.status.success(), "{out:?}");
    wait_for_within("alice back online", 3 * PATIENCE, || {
        Some(()).filter(|_| status_json(&bus)["XmppState"] == "online")
    });
    for id in &ids {
        let sent = watch.next_event(|e| {
            signal(e, "MessageStatus").is_some_and(|a| a[0] == id.as_str() && a[1] == "sent")
        });
        assert!(sent.is_some(), "{id} not sent");
    }
    // bob was not online: Prosody kept them for him.
    let mut bob = XmppPeer::start(&testbed, "bob", testbed.xmpp_port(server)).unwrap();
    let mut got = Vec::new();
    for n in 1..=20 {
        let m = message_from(&mut bob, &format!("offline {n}"));
        got.push(m["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, ids, "in order");
    assert_nothing_more(&mut bob, Duration::from_secs(3));
}

/// Queued while the server was down, then the daemon restarted: after the restart the
/// archive shows they never arrived, and they go out, once each, in order.
fn messages_queued_before_a_restart_go_out_once_the_server_is_back(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let config = write_config(&testbed, server, dir.path());
    let alice = start_alice(&bus, &config, dir.path());
    testbed.stop_xmpp(server).unwrap();
    wait_for("alice to notice", || Some(()).filter(|_| status_json(&bus)["XmppState"] != "online"));
    let ids: Vec<String> = (1..=3).map(|n| send(&bus, BOB, &format!("queued {n}"))).collect();
    let (exit, _) = alice.stop_with("TERM").unwrap();
    assert!(exit.success());
    testbed.start_xmpp(server).unwrap();
    let _alice = start_alice(&bus, &config, dir.path());
    wait_for_within("sent after the restart", 3 * PATIENCE, || {
        Some(()).filter(|_| history(&bus, BOB).iter().all(|m| m["status"] == "sent"))
    });
    let mut bob = XmppPeer::start(&testbed, "bob", testbed.xmpp_port(server)).unwrap();
    let got: Vec<String> = (1..=3)
        .map(|n| message_from(&mut bob, &format!("queued {n}"))["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ids, "in order");
    assert_nothing_more(&mut bob, Duration::from_secs(3));
}

fn a_message_survives_kill_9_before_the_server_acked_it_and_is_not_sent_twice(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let config = write_config(&testbed, server, dir.path());
    let alice = start_alice(&bus, &config, dir.path());
    let mut bob = XmppPeer::start(&testbed, "bob", testbed.xmpp_port(server)).unwrap();
    // The server takes the stanza into its socket but cannot ack it: it is stopped.
    let pid = testbed.pids()[if server == XmppServer::Prosody { "prosody" } else { "ejabberd-beam" }];
    cusax_tests::signal(pid, "STOP");
    let id = send(&bus, BOB, "before the crash");
    std::thread::sleep(Duration::from_millis(300));
    alice.signal("KILL");
    drop(alice);
    cusax_tests::signal(pid, "CONT");
    let _alice = start_alice(&bus, &config, dir.path());
    // It goes out after the archive showed it is not there: a server just woken from SIGSTOP
    // answers that slowly on a loaded machine.
    let got =
        bob.expect(|e| e["event"] == "message" && e["body"] == "before the crash", 3 * PATIENCE).unwrap();
    assert_eq!(got["id"], id.as_str());
    assert_nothing_more(&mut bob, Duration::from_secs(5));
    let page = history(&bus, BOB);
    assert_eq!(page.len(), 1);
    wait_for("the message to be marked sent", || {
        Some(()).filter(|_| history(&bus, BOB)[0]["status"] == "sent")
    });
}

fn messages_sent_to_alice_while_she_was_offline_arrive_once(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let config = write_config(&testbed, server, dir.path());
    let alice = start_alice(&bus, &config, dir.path());
    let mut bob = XmppPeer::start(&testbed, "bob", testbed.xmpp_port(server)).unwrap();
    bob.command(json!({"cmd": "send", "to": ALICE, "body": "while you were here"})).unwrap();
    wait_for("the first message", || Some(()).filter(|_| history(&bus, BOB).len() == 1));
    let (exit, _) = alice.stop_with("TERM").unwrap();
    assert!(exit.success());
    for n in 1..=3 {
        bob.command(json!({"cmd": "send", "to": ALICE, "body": format!("while away {n}")})).unwrap();
    }
    let watch_bus = &bus;
    let _alice = start_alice(watch_bus, &config, dir.path());
    wait_for("three more messages", || Some(()).filter(|_| history(&bus, BOB).len() >= 4));
    // Offline storage and the archive both had them: each is kept once.
    std::thread::sleep(Duration::from_secs(2));
    let bodies: Vec<String> =
        history(&bus, BOB).iter().map(|m| m["body"].as_str().unwrap().to_owned()).collect();
    assert_eq!(bodies, ["while you were here", "while away 1", "while away 2", "while away 3"]);
}

/// Copies of what alice's other client sends and receives (XEP-0280) reach cusaxd's history
/// and signals; a "carbon" forged by someone else does not.
fn carbons_from_our_account_count_and_forged_ones_do_not(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let _alice = start_alice(&bus, &write_config(&testbed, server, dir.path()), dir.path());
    let mut laptop = XmppPeer::start(&testbed, "alice", testbed.xmpp_port(server)).unwrap();
    let mut bob = XmppPeer::start(&testbed, "bob", testbed.xmpp_port(server)).unwrap();
    let watch = Watch::start(&bus, true);
    let received = |body: &str| {
        let event = watch.next_event(|e| signal(e, "MessageReceived").is_some_and(|a| a[2] == body));
        signal(&event.unwrap_or_else(|| panic!("no MessageReceived for {body}")), "MessageReceived")
            .unwrap()
            .clone()
    };

    laptop.command(json!({"cmd": "send", "to": BOB, "body": "from my laptop"})).unwrap();
    message_from(&mut bob, "from my laptop");
    let sent = received("from my laptop");
    assert_eq!(
        (sent[1].as_str(), &sent[4]["direction"], &sent[4]["via"]),
        (Some(ALICE), &json!("out"), &json!("carbon"))
    );

    bob.command(json!({"cmd": "send", "to": laptop.jid, "body": "to your laptop"})).unwrap();
    message_from(&mut laptop, "to your laptop");
    let copy = received("to your laptop");
    assert_eq!((&copy[4]["direction"], &copy[4]["via"]), (&json!("in"), &json!("carbon")));

    // bob wraps a message "from carol" as if it were a carbon: cusax-wire P21.
    let forged = format!(
        "<message xmlns='jabber:client' to='{ALICE}' type='chat'><received xmlns='urn:xmpp:carbons:2'>\
         <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='carol@localhost/x' \
         to='{ALICE}' type='chat'><body>forged</body></message></forwarded></received></message>"
    );
    bob.command(json!({"cmd": "raw", "xml": forged})).unwrap();
    bob.command(json!({"cmd": "send", "to": ALICE, "body": "after the forgery"})).unwrap();
    received("after the forgery");
    let bodies: Vec<String> =
        history(&bus, "carol@localhost").iter().map(|m| m["body"].to_string()).collect();
    assert!(bodies.is_empty(), "the forged carbon was taken: {bodies:?}");
    assert_eq!(history(&bus, BOB).len(), 3);
}

/// `cusaxctl chat`: lines typed are sent, messages that arrive are printed, end of input
/// ends it.
fn cusaxctl_chat_sends_lines_and_prints_arrivals(server: XmppServer) {
    use std::io::{BufRead, Write};
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let _alice = start_alice(&bus, &write_config(&testbed, server, dir.path()), dir.path());
    let mut bob = XmppPeer::start(&testbed, "bob", testbed.xmpp_port(server)).unwrap();
    let mut chat = bus
        .command(cusax_tests::binary("cusaxctl"))
        .args(["chat", BOB])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It says it is ready on stderr once subscribed to the conversation's signals.
    let mut ready = String::new();
    std::io::BufReader::new(chat.stderr.take().unwrap()).read_line(&mut ready).unwrap();
    assert!(ready.contains("chatting with"), "{ready}");
    let mut input = chat.stdin.take().unwrap();
    writeln!(input, "typed at the prompt").unwrap();
    message_from(&mut bob, "typed at the prompt");
    bob.command(json!({"cmd": "send", "to": ALICE, "body": "seen at the prompt"})).unwrap();
    let mut output = std::io::BufReader::new(chat.stdout.take().unwrap());
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    assert!(line.contains("bob@localhost/") && line.trim_end().ends_with(": seen at the prompt"), "{line}");
    drop(input);
    let (status, _) = cusax_tests::wait_for_exit(&mut chat, PATIENCE).expect("cusaxctl chat did not end");
    assert!(status.success(), "{status}");
}

on_both_xmpp_servers!(
    cusaxctl_chat_sends_lines_and_prints_arrivals,
    carbons_from_our_account_count_and_forged_ones_do_not,
    messages_both_ways_with_threads_receipts_and_chat_states,
    bad_requests_get_named_errors,
    twenty_messages_sent_while_the_server_is_down_arrive_once_in_order,
    a_message_survives_kill_9_before_the_server_acked_it_and_is_not_sent_twice,
    messages_sent_to_alice_while_she_was_offline_arrive_once,
    messages_queued_before_a_restart_go_out_once_the_server_is_back,
);
