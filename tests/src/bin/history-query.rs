//! `history-query BUS COUNT [peer=JID] [before=UNIX_MS] [limit=N]`: calls `History.Query`
//! of the cusaxd on session bus BUS COUNT times with that filter, one call at a time, and
//! prints the median, p90 and max time of a call in ms and the size of the page. bench/history.sh
//! runs it.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, bail};
use zbus::{OwnedVariant, Variant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, bus, count, filter @ ..] = args.as_slice() else {
        bail!("usage: history-query BUS COUNT [peer=JID] [before=UNIX_MS] [limit=N]");
    };
    let count: usize = count.parse().context("COUNT")?;
    if count == 0 {
        bail!("COUNT must be at least 1");
    }
    let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
    for pair in filter {
        match pair.split_once('=') {
            Some(("peer", jid)) => options.insert("peer", Variant::from(jid)),
            Some(("before", ms)) => {
                options.insert("before", Variant::from(ms.parse::<i64>().context("before")?))
            }
            Some(("limit", n)) => options.insert("limit", Variant::from(n.parse::<u32>().context("limit")?)),
            _ => bail!("unknown filter {pair:?}"),
        };
    }
    let connection = zbus::connection::Builder::address(bus.as_str()).build().await?;
    let mut times = Vec::with_capacity(count);
    let mut rows = 0;
    for _ in 0..count {
        let start = Instant::now();
        let reply = connection
            .call_method(
                Some("org.cusax.Cusax1"),
                "/org/cusax/Cusax1",
                Some("org.cusax.Cusax1.History"),
                "Query",
                &(&options,),
            )
            .await?;
        let page: Vec<HashMap<String, OwnedVariant>> = reply.body().deserialize()?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        rows = page.len();
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    println!("{:.2} {:.2} {:.2} {rows}", at(0.5), at(0.9), at(1.0));
    Ok(())
}
