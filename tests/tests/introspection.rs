//! `dbus/org.cusax.Cusax1.xml` describes exactly what the daemon exports at its root object:
//! every interface (but the three every object has), method, argument, signal, property and
//! annotation. Interfaces of child objects are checked where such an object exists:
//! org.cusax.Cusax1.Call in tests/tests/sip_calls.rs, Conversation and Contact in
//! tests/tests/xmpp_chat.rs and tests/tests/xmpp_roster.rs.

use cusax_tests::{Cusaxd, PrivateBus, api_shape, documented_api, introspect, write_private};

/// Interfaces the file documents for objects below the root.
const CHILD_INTERFACES: [&str; 3] =
    ["org.cusax.Cusax1.Call", "org.cusax.Cusax1.Conversation", "org.cusax.Cusax1.Contact"];

#[test]
fn live_introspection_matches_the_shipped_xml() {
    let file = documented_api();
    let documented: std::collections::BTreeSet<String> = api_shape(&file, None)
        .into_iter()
        .filter(|line| {
            !CHILD_INTERFACES
                .iter()
                .any(|child| *line == format!("interface {child}") || line.starts_with(&format!("{child}.")))
        })
        .collect();
    assert!(documented.contains("interface org.cusax.Cusax1.Daemon"), "{documented:?}");
    assert!(documented.contains("interface org.cusax.Cusax1.Calls"), "{documented:?}");
    assert!(documented.contains("interface org.freedesktop.DBus.ObjectManager"), "{documented:?}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write_private(&config, "").unwrap();
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start(&bus, &config).unwrap();
    let live = api_shape(&introspect(&bus, "/org/cusax/Cusax1"), None);

    let only_live: Vec<_> = live.difference(&documented).collect();
    let only_file: Vec<_> = documented.difference(&live).collect();
    assert!(
        only_live.is_empty() && only_file.is_empty(),
        "dbus/org.cusax.Cusax1.xml and the daemon differ.\nexported but not in the file: {only_live:#?}\nin the file but not exported: {only_file:#?}"
    );
}
