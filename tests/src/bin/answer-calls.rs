//! `answer-calls BUS`: answers every incoming call of the cusaxd on session bus BUS as soon as
//! its object appears, the way a desktop shell's auto-answer would (cusaxd leaves answering
//! to its D-Bus clients). Runs until killed. bench/call-setup.sh runs it.

use anyhow::{Context, bail};
use futures_util::StreamExt;
use std::collections::HashMap;
use zbus::{MatchRule, MessageStream};
use zbus::{OwnedObjectPath, OwnedVariant};

const BUS_NAME: &str = "org.cusax.Cusax1";
const CALL: &str = "org.cusax.Cusax1.Call";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, bus] = args.as_slice() else {
        bail!("usage: answer-calls BUS");
    };
    let connection = zbus::connection::Builder::address(bus.as_str()).build().await?;
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)
        .interface("org.freedesktop.DBus.ObjectManager")
        .member("InterfacesAdded")
        .build()?;
    let mut added = MessageStream::for_match_rule(rule, &connection, None).await?;
    println!("ready");
    while let Some(signal) = added.next().await {
        let signal = signal.context("the bus closed")?;
        let (path, interfaces): (OwnedObjectPath, HashMap<String, HashMap<String, OwnedVariant>>) =
            signal.body().deserialize()?;
        let incoming = interfaces
            .get(CALL)
            .and_then(|call| call.get("State"))
            .and_then(|state| <&str>::try_from(state).ok())
            .is_some_and(|state| state == "incoming");
        if incoming {
            connection.call_method(Some(BUS_NAME), path.as_str(), Some(CALL), "Answer", &()).await?;
        }
    }
    Ok(())
}
