//! REQ-5 (cusax-wire 2, 3.2, 3.8): while SIP is registered, alice's XMPP presence carries her
//! SIP addresses (`<reach>`: GRUU, then AoR) and her SIP availability (`<contact>`: open, busy
//! during a call); unregistered, neither. Seen by a stock slixmpp contact, through Prosody,
//! with Kamailio handing out GRUUs and a baresip to call; and by bob's cusaxd, whose contact
//! for alice shows SipStatus, SipAddresses and audio in Capabilities.

use cusax_tests::{
    Baresip, Cusaxd, PATIENCE, PrivateBus, Testbed, XmppPeer, cusaxctl, status_json, wait_for, write_private,
};
use serde_json::{Value, json};

const ALICE: &str = "alice@localhost";

fn config(testbed: &Testbed, with_sip: bool) -> String {
    let sip = if with_sip {
        format!(
            "[sip]\naor = \"sip:alice@127.0.0.1\"\nproxy = \"sip:127.0.0.1:{}\"\ntransport = \"udp\"\npassword = \"secret-alice\"\n",
            testbed.port("SIP_PORT")
        )
    } else {
        String::new()
    };
    format!(
        "{sip}[xmpp]\njid = \"{ALICE}\"\npassword = \"secret-alice\"\nserver = \"127.0.0.1:{}\"\n\
         [media]\ncodecs = [\"pcmu\"]\ninput = \"null\"\noutput = \"null\"\n[tls]\nextra_ca = \"{}\"\n",
        testbed.port("XMPP_C2S_PORT"),
        testbed.ca_file().display()
    )
}

fn from_alice(event: &Value) -> bool {
    // slixmpp names an available presence by its show.
    event["event"] == "presence"
        && ["available", "away", "chat", "dnd", "xa"].iter().any(|t| event["type"] == *t)
        && event["frm"].as_str().is_some_and(|f| f.starts_with(ALICE))
}

/// Whether alice's XEP-0108 activity node says "on the phone" (null: no item), as carol reads it.
fn alice_activity(carol: &mut XmppPeer) -> Value {
    carol
        .command(json!({"cmd": "pubsub_items", "jid": ALICE, "node": "http://jabber.org/protocol/activity"}))
        .unwrap();
    let items = carol.expect(|e| e["event"] == "items", PATIENCE).unwrap();
    match items["items"].as_array().and_then(|i| i.last()).and_then(|i| i.as_str()) {
        None => Value::Null,
        Some(item) => json!(item.contains("on_the_phone")),
    }
}

#[test]
fn presence_carries_sip_reachability_busy_in_a_call_and_nothing_unregistered() {
    let testbed = Testbed::start_with(&["prosody", "kamailio"], &[("TESTBED_SIP_GRUU", "1")]).unwrap();
    let mut bob = Baresip::start(&testbed, "bob", "udp").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    write_private(&path, &config(&testbed, true)).unwrap();
    let bus = PrivateBus::start().unwrap();
    let data = dir.path().join("data");
    let alice = Cusaxd::start_with_env(&bus, &path, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    wait_for("alice registered and online", || {
        let s = status_json(&bus);
        Some(()).filter(|_| s["SipState"] == "registered" && s["XmppState"] == "online")
    });

    // carol asks to see alice's presence; alice approves.
    let mut carol = XmppPeer::start(&testbed, "carol", testbed.port("XMPP_C2S_PORT")).unwrap();
    carol.command(json!({"cmd": "subscribe", "to": ALICE})).unwrap();
    wait_for("carol's request", || {
        let out = cusaxctl(&bus, &["contacts", "--json"]);
        String::from_utf8_lossy(&out.stdout).contains("carol@localhost").then_some(())
    });
    assert!(cusaxctl(&bus, &["approve", "carol@localhost"]).status.success());
    let open = carol.expect(|e| from_alice(e) && e["contact"]["status"] == "open", PATIENCE).unwrap();
    let reach: Vec<&str> = open["reach"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(reach.len(), 2, "{open}");
    assert!(reach[0].starts_with("sip:alice@127.0.0.1;gr="), "the GRUU first: {reach:?}");
    assert_eq!(reach[1], "sip:alice@127.0.0.1");
    assert_eq!(open["contact"]["target"], format!("<{}>;audio", reach[0]));

    // bob, with a cusaxd of his own, follows alice: her contact shows her SIP side.
    let bob_dir = tempfile::tempdir().unwrap();
    let bob_path = bob_dir.path().join("config.toml");
    let bob_config = testbed.xmpp_config(cusax_tests::XmppServer::Prosody, "bob");
    write_private(&bob_path, &bob_config).unwrap();
    let bob_bus = PrivateBus::start().unwrap();
    let _bob_daemon = Cusaxd::start(&bob_bus, &bob_path).unwrap();
    wait_for("bob online", || Some(()).filter(|_| status_json(&bob_bus)["XmppState"] == "online"));
    assert!(cusaxctl(&bob_bus, &["subscribe", ALICE]).status.success());
    wait_for("bob's request", || {
        let out = cusaxctl(&bus, &["contacts", "--json"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("\"SubscriptionRequest\":\"bob@localhost\"")
            .then_some(())
    });
    assert!(cusaxctl(&bus, &["approve", "bob@localhost"]).status.success());
    let alice_seen_by_bob = |what: &str, ready: &dyn Fn(&Value) -> bool| -> Value {
        wait_for(what, || {
            let out = cusaxctl(&bob_bus, &["contacts", "--json"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|c| c["Jid"] == ALICE && ready(c))
        })
    };
    let seen = alice_seen_by_bob("alice open at bob's", &|c| c["SipStatus"] == "open");
    assert_eq!(seen["SipAddresses"], json!(reach));
    assert!(seen["Capabilities"].as_array().unwrap().contains(&json!("audio")), "{seen}");
    assert_eq!(seen["Verified"], false, "reach alone is a hint");

    // In a call: busy; after it: open again.
    let out = cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]);
    assert!(out.status.success(), "{out:?}");
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    // Busy, and "On the phone" as Jitsi shows it (show away), and over PEP (XEP-0108).
    let busy = carol.expect(|e| from_alice(e) && e["contact"]["status"] == "busy", PATIENCE).unwrap();
    assert_eq!(
        (busy["show"].as_str(), busy["status"].as_str()),
        (Some("away"), Some("On the phone")),
        "{busy}"
    );
    alice_seen_by_bob("alice busy at bob's", &|c| c["SipStatus"] == "busy");
    assert_eq!(alice_activity(&mut carol), json!(true), "PEP says on the phone");
    assert!(cusaxctl(&bus, &["hangup"]).status.success());
    let open = carol.expect(|e| from_alice(e) && e["contact"]["status"] == "open", PATIENCE).unwrap();
    assert_eq!((open["show"].as_str(), open["status"].as_str()), (Some(""), Some("")), "{open}");
    alice_seen_by_bob("alice open again at bob's", &|c| c["SipStatus"] == "open");
    cusax_tests::wait_for("the PEP activity cleared", || {
        (alice_activity(&mut carol) == json!(false)).then_some(())
    });

    // Without SIP: no reach, no contact.
    write_private(&path, &config(&testbed, false)).unwrap();
    let out = cusax_tests::busctl(
        &bus,
        &["call", "org.cusax.Cusax1", "/org/cusax/Cusax1", "org.cusax.Cusax1.Daemon", "Reload"],
    );
    assert!(out.status.success(), "{out:?}");
    let plain = carol.expect(|e| from_alice(e) && e["contact"].is_null(), PATIENCE).unwrap();
    assert_eq!(plain["reach"], json!([]));
    // Her presence names no address now; what her vCard lists stays known (OFF-1).
    let seen = alice_seen_by_bob("alice without SIP at bob's", &|c| {
        c["SipStatus"] == "unknown" && !c["SipAddresses"].to_string().contains(";gr=")
    });
    assert!(
        seen["SipAddresses"] == json!([])
            || (seen["SipAddresses"] == json!(["sip:alice@127.0.0.1"]) && seen["Verified"] == true),
        "{seen}"
    );

    // A crash in a call leaves "on the phone" on the server (cusax-wire P22): the next start
    // clears it.
    write_private(&path, &config(&testbed, true)).unwrap();
    let out = cusax_tests::busctl(
        &bus,
        &["call", "org.cusax.Cusax1", "/org/cusax/Cusax1", "org.cusax.Cusax1.Daemon", "Reload"],
    );
    assert!(out.status.success(), "{out:?}");
    wait_for("alice registered again", || Some(()).filter(|_| status_json(&bus)["SipState"] == "registered"));
    assert!(cusaxctl(&bus, &["call", "sip:bob@127.0.0.1"]).status.success());
    bob.wait_event("CALL_ESTABLISHED").unwrap();
    cusax_tests::wait_for("on the phone", || (alice_activity(&mut carol) == json!(true)).then_some(()));
    alice.signal("KILL");
    drop(alice);
    bob.command("hangup", "").unwrap();
    let _alice = Cusaxd::start_with_env(&bus, &path, &[("XDG_DATA_HOME", data.as_path())]).unwrap();
    cusax_tests::wait_for("the stale activity cleared", || {
        (alice_activity(&mut carol) == json!(false)).then_some(())
    });
}
