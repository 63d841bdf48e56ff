//! `chat-latency ALICE_BUS BOB_BUS PEER COUNT`: the end-to-end latency of chat messages
//! between two cusaxd, each on its own session bus: from alice's `SendMessage` call to bob's
//! `MessageReceived` signal, one message at a time. Prints the median, p99 and max in ms.
//! bench/xmpp.sh runs it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use zbus::{MatchRule, MessageStream, OwnedObjectPath, Variant};

const BUS_NAME: &str = "org.cusax.Cusax1";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, alice_bus, bob_bus, peer, count] = args.as_slice() else {
        bail!("usage: chat-latency ALICE_BUS BOB_BUS PEER COUNT");
    };
    let count: usize = count.parse().context("COUNT")?;
    let alice = zbus::connection::Builder::address(alice_bus.as_str()).build().await?;
    let bob = zbus::connection::Builder::address(bob_bus.as_str()).build().await?;
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)
        .interface("org.cusax.Cusax1.Conversation")
        .member("MessageReceived")
        .build()?;
    let mut received =
        MessageStream::for_match_rule(rule, &bob, std::num::NonZeroUsize::new(count + 16)).await?;
    let options = std::collections::HashMap::<&str, Variant<'_>>::new();
    let reply = alice
        .call_method(
            Some(BUS_NAME),
            "/org/cusax/Cusax1",
            Some("org.cusax.Cusax1.Conversations"),
            "StartConversation",
            &(peer.as_str(), &options),
        )
        .await?;
    let conversation: OwnedObjectPath = reply.body().deserialize()?;
    let mut latencies = Vec::with_capacity(count);
    for n in 0..count {
        let body = format!("latency {n}");
        let start = Instant::now();
        alice
            .call_method(
                Some(BUS_NAME),
                conversation.as_str(),
                Some("org.cusax.Cusax1.Conversation"),
                "SendMessage",
                &(body.as_str(), &options),
            )
            .await?;
        loop {
            let signal = tokio::time::timeout(Duration::from_secs(10), received.next())
                .await
                .with_context(|| format!("message {n} did not arrive within 10 s"))?
                .context("bob's bus closed")??;
            let (_, _, text, _, _): (
                String,
                String,
                String,
                i64,
                std::collections::HashMap<String, zbus::OwnedVariant>,
            ) = signal.body().deserialize()?;
            if text == body {
                break;
            }
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!("{:.2} {:.2} {:.2}", ms(at(0.5)), ms(at(0.99)), ms(latencies[latencies.len() - 1]));
    Ok(())
}
