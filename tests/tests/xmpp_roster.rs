//! Roster, subscriptions and presence between cusaxd (alice) and stock slixmpp clients
//! through a real Prosody and a real ejabberd: requests both ways, approve and deny, presence per resource with
//! verified caps, our own presence with our caps and the disco#info behind them.

use std::path::Path;

use cusax_tests::{
    Cusaxd, PATIENCE, PrivateBus, Testbed, XmppPeer, XmppServer, assert_documented, cusaxctl,
    on_both_xmpp_servers, status_json, wait_for, write_private,
};
use serde_json::{Value, json};

const ALICE: &str = "alice@localhost";

fn start_alice(testbed: &Testbed, server: XmppServer, dir: &Path, bus: &PrivateBus) -> Cusaxd {
    let path = dir.join("config.toml");
    write_private(&path, &testbed.xmpp_config(server, "alice")).unwrap();
    let daemon = Cusaxd::start(bus, &path).unwrap();
    wait_for("alice online", || Some(()).filter(|_| status_json(bus)["XmppState"] == "online"));
    daemon
}

fn ctl(bus: &PrivateBus, args: &[&str]) -> String {
    let out = cusaxctl(bus, args);
    assert!(out.status.success(), "cusaxctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// alice's roster entry for `jid` once `ready` holds for it.
fn contact_when(bus: &PrivateBus, jid: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, || {
        ctl(bus, &["contacts", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|c| c["Jid"] == jid && ready(c))
    })
}

fn requests(bus: &PrivateBus) -> Vec<String> {
    ctl(bus, &["contacts", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|c| c["SubscriptionRequest"].as_str().map(String::from))
        .collect()
}

fn subscriptions_both_ways_presence_per_resource_and_caps(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let _alice = start_alice(&testbed, server, dir.path(), &bus);
    let port = testbed.xmpp_port(server);
    let mut bob = XmppPeer::start(&testbed, "bob", port).unwrap();

    // alice asks; the roster push shows the pending request.
    ctl(&bus, &["subscribe", "bob@localhost"]);
    let asked = bob.expect(|e| e["event"] == "subscribe", PATIENCE).unwrap();
    assert_eq!(asked["frm"], ALICE);
    contact_when(&bus, "bob@localhost", "bob pending", |c| c["SubscriptionPending"] == true);

    // bob says yes: alice sees his presence, with what his caps say he can do.
    bob.command(json!({"cmd": "approve", "to": ALICE})).unwrap();
    let bob_contact = contact_when(&bus, "bob@localhost", "bob online", |c| {
        c["Subscription"] == "to"
            && c["Presence"][0] == "available"
            && c["Capabilities"].as_array().is_some_and(|a| a.len() == 2)
    });
    assert_eq!(bob_contact["Capabilities"], json!(["chat-states", "receipts"]));
    assert_eq!(bob_contact["Resources"].as_array().unwrap().len(), 1);
    let path = bob_contact["Path"].as_str().unwrap().to_owned();
    assert_documented(&bus, &path, "org.cusax.Cusax1.Contact");

    // bob asks back; alice approves: mutual.
    bob.command(json!({"cmd": "subscribe", "to": ALICE})).unwrap();
    wait_for("bob's request", || Some(()).filter(|_| requests(&bus) == ["bob@localhost"]));
    ctl(&bus, &["approve", "bob@localhost"]);
    assert!(requests(&bus).is_empty());
    contact_when(&bus, "bob@localhost", "mutual", |c| c["Subscription"] == "both");
    let seen = bob.expect(
        |e| {
            e["event"] == "presence"
                && e["type"] == "available"
                && e["frm"].as_str().is_some_and(|f| f.starts_with(ALICE))
        },
        PATIENCE,
    );
    let seen = seen.unwrap();
    assert_eq!(seen["caps_node"], "urn:cusax:cusaxd");

    // alice's presence, with the caps whose disco#info bob can check.
    ctl(&bus, &["presence", "dnd", "in a meeting"]);
    assert_eq!(ctl(&bus, &["presence"]).trim(), "dnd: in a meeting");
    let dnd = bob.expect(|e| e["event"] == "presence" && e["show"] == "dnd", PATIENCE).unwrap();
    assert_eq!(dnd["status"], "in a meeting");
    let node = format!("urn:cusax:cusaxd#{}", dnd["caps_ver"].as_str().unwrap());
    bob.command(json!({"cmd": "disco", "to": dnd["frm"], "node": node})).unwrap();
    let disco = bob.expect(|e| e["event"] == "disco", PATIENCE).unwrap();
    let features: Vec<&str> =
        disco["features"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    for feature in
        ["urn:xmpp:receipts", "http://jabber.org/protocol/chatstates", "http://jabber.org/protocol/caps"]
    {
        assert!(features.contains(&feature), "{features:?}");
    }
    assert!(features.iter().all(|f| !f.contains("jingle")), "{features:?}");
    assert_eq!(disco["identities"][0][0], "client");
    assert_eq!(disco["identities"][0][1], "pc");

    // bob's own changes and his leaving.
    bob.command(json!({"cmd": "presence", "show": "away", "status": "lunch"})).unwrap();
    contact_when(&bus, "bob@localhost", "bob away", |c| c["Presence"] == json!(["away", "lunch"]));
    bob.command(json!({"cmd": "quit"})).unwrap_or(());
    drop(bob);
    contact_when(&bus, "bob@localhost", "bob offline", |c| {
        c["Presence"][0] == "offline" && c["Resources"].as_array().is_some_and(|r| r.is_empty())
    });
}

fn a_denied_request_is_refused_and_forgotten(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let _alice = start_alice(&testbed, server, dir.path(), &bus);
    let mut carol = XmppPeer::start(&testbed, "carol", testbed.xmpp_port(server)).unwrap();
    carol.command(json!({"cmd": "subscribe", "to": ALICE})).unwrap();
    wait_for("carol's request", || Some(()).filter(|_| requests(&bus) == ["carol@localhost"]));
    ctl(&bus, &["deny", "carol@localhost"]);
    assert!(requests(&bus).is_empty());
    carol
        .expect(|e| e["event"] == "presence" && e["frm"] == ALICE && e["type"] == "unsubscribed", PATIENCE)
        .unwrap();
}

/// alice's vCard carries her SIP address (cusax-wire 3.10), and bob's telephones reach her
/// contact: pushed over PEP where the server publishes vCard4 (Prosody), read by Refresh
/// otherwise (ejabberd keeps vcard-temp only).
fn vcards_carry_our_sip_address_and_contacts_telephones(server: XmppServer) {
    let testbed = Testbed::start(&[server.service()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start().unwrap();
    let path = dir.path().join("config.toml");
    // The SIP account need not register for its address to be published.
    let text = format!(
        "[sip]\naor = \"sip:+4930123456@127.0.0.1\"\npassword = \"x\"\nproxy = \"sip:127.0.0.1:{};transport=tcp\"\n\
         [xmpp]\njid = \"{ALICE}\"\npassword = \"secret-alice\"\nserver = \"127.0.0.1:{}\"\n[tls]\nextra_ca = \"{}\"\n",
        cusax_tests::free_ports(1)[0],
        testbed.xmpp_port(server),
        testbed.ca_file().display()
    );
    write_private(&path, &text).unwrap();
    let _alice = Cusaxd::start(&bus, &path).unwrap();
    wait_for("alice online", || Some(()).filter(|_| status_json(&bus)["XmppState"] == "online"));
    let mut bob = XmppPeer::start(&testbed, "bob", testbed.xmpp_port(server)).unwrap();

    let numbers = wait_for("alice's vCard", || {
        bob.command(json!({"cmd": "vcard_get", "jid": ALICE})).ok()?;
        let card = bob.expect(|e| e["event"] == "vcard", PATIENCE).ok()?;
        let numbers: Vec<String> =
            card["numbers"].as_array()?.iter().filter_map(|n| n.as_str().map(String::from)).collect();
        (numbers.len() >= 2).then_some(numbers)
    });
    // Prosody hands vcard-temp back converted from vCard4 (cusax-wire P20): tel: in front.
    let plain: Vec<&str> = numbers.iter().map(|n| n.trim_start_matches("tel:")).collect();
    assert!(plain.contains(&"+4930123456@127.0.0.1") && plain.contains(&"+4930123456"), "{numbers:?}");

    ctl(&bus, &["subscribe", "bob@localhost"]);
    bob.expect(|e| e["event"] == "subscribe", PATIENCE).unwrap();
    bob.command(json!({"cmd": "approve", "to": ALICE})).unwrap();
    // A PEP service learns who wants notifications from the presence it receives (XEP-0163
    // section 4.3.2): bob's server hears alice's presence once bob follows her too.
    bob.command(json!({"cmd": "subscribe", "to": ALICE})).unwrap();
    wait_for("bob's request", || Some(()).filter(|_| requests(&bus) == ["bob@localhost"]));
    ctl(&bus, &["approve", "bob@localhost"]);
    let contact = contact_when(&bus, "bob@localhost", "bob online", |c| {
        c["Presence"][0] == "available" && c["Subscription"] == "both"
    });
    bob.command(
        json!({"cmd": "vcard_set", "tels": [[["work", "voice"], "bob@127.0.0.1"], [["cell"], "+15550100"]]}),
    )
    .unwrap();
    if server == XmppServer::Ejabberd {
        let path = contact["Path"].as_str().unwrap();
        let out = cusax_tests::busctl(
            &bus,
            &["call", "org.cusax.Cusax1", path, "org.cusax.Cusax1.Contact", "Refresh"],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let bob_contact = contact_when(&bus, "bob@localhost", "bob's telephones", |c| {
        c["Telephones"].as_array().is_some_and(|t| t.len() == 2)
    });
    let first = &bob_contact["Telephones"][0];
    assert!(first[0].as_str().unwrap().ends_with("bob@127.0.0.1"), "{bob_contact}");
}

on_both_xmpp_servers!(
    vcards_carry_our_sip_address_and_contacts_telephones,
    subscriptions_both_ways_presence_per_resource_and_caps,
    a_denied_request_is_refused_and_forgotten,
);
