//! `dbus/org.cusax.Cusax1.xml` describes exactly what the daemon exports: every interface
//! (but the three every object has), method, argument, signal, property and annotation.

use std::collections::BTreeSet;

use cusax_tests::{Cusaxd, PrivateBus, repo_root, write_private};
use zbus_xml::{Arg, Interface, Node};

/// One line per member, in a form that ignores order and doc comments.
fn shape(interface: &Interface<'_>) -> BTreeSet<String> {
    let args = |args: &[Arg<'_>]| {
        args.iter()
            .map(|a| format!("{} {} {:?}", a.name().unwrap_or("-"), a.ty(), a.direction()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let name = interface.name().to_string();
    let mut lines = BTreeSet::new();
    lines.insert(format!("interface {name}"));
    for a in interface.annotations() {
        lines.insert(format!("{name} annotation {}={}", a.name(), a.value()));
    }
    for m in interface.methods() {
        lines.insert(format!("{name}.{} method ({})", m.name(), args(m.args())));
        for a in m.annotations() {
            lines.insert(format!("{name}.{} annotation {}={}", m.name(), a.name(), a.value()));
        }
    }
    for s in interface.signals() {
        lines.insert(format!("{name}.{} signal ({})", s.name(), args(s.args())));
        for a in s.annotations() {
            lines.insert(format!("{name}.{} annotation {}={}", s.name(), a.name(), a.value()));
        }
    }
    for p in interface.properties() {
        lines.insert(format!("{name}.{} property {} {:?}", p.name(), p.ty(), p.access()));
        for a in p.annotations() {
            lines.insert(format!("{name}.{} annotation {}={}", p.name(), a.name(), a.value()));
        }
    }
    lines
}

/// Every interface but the three that every D-Bus object has.
fn api_shape(node: &Node<'_>) -> BTreeSet<String> {
    const EVERY_OBJECT: [&str; 3] = [
        "org.freedesktop.DBus.Properties",
        "org.freedesktop.DBus.Introspectable",
        "org.freedesktop.DBus.Peer",
    ];
    node.interfaces().iter().filter(|i| !EVERY_OBJECT.contains(&i.name().as_str())).flat_map(shape).collect()
}

#[test]
fn live_introspection_matches_the_shipped_xml() {
    let file_path = repo_root().join("dbus/org.cusax.Cusax1.xml");
    let file = Node::from_reader(std::fs::File::open(&file_path).unwrap()).unwrap();
    let documented = api_shape(&file);
    assert!(documented.contains("interface org.cusax.Cusax1.Daemon"), "{documented:?}");
    assert!(documented.contains("interface org.freedesktop.DBus.ObjectManager"), "{documented:?}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write_private(&config, "").unwrap();
    let bus = PrivateBus::start().unwrap();
    let _daemon = Cusaxd::start(&bus, &config).unwrap();
    let out = bus
        .command("gdbus")
        .args(["introspect", "--session", "--xml", "-d", "org.cusax.Cusax1", "-o", "/org/cusax/Cusax1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let live = api_shape(&Node::from_reader(out.stdout.as_slice()).unwrap());

    let only_live: Vec<_> = live.difference(&documented).collect();
    let only_file: Vec<_> = documented.difference(&live).collect();
    assert!(
        only_live.is_empty() && only_file.is_empty(),
        "{} and the daemon differ.\nexported but not in the file: {only_live:#?}\nin the file but not exported: {only_file:#?}",
        file_path.display()
    );
}
