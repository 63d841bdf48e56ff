//! `cusaxd`: reads the config, then runs the actors (see `lib.rs`) on a single-threaded tokio
//! runtime until SIGTERM or SIGINT. SIGHUP reloads the config, like `Reload()` on D-Bus.
//!
//! Exit status: 0 after SIGTERM/SIGINT; 1 on a failure worth a restart (the bus went away);
//! 2 for bad arguments; [`EXIT_ALREADY_RUNNING`] and [`EXIT_CONFIG`] for failures a restart
//! cannot mend (the unit's `RestartPreventExitStatus=` names them).
//!
//! The runtime has one thread: the daemon's own work is I/O-bound and small, and one thread
//! keeps idle memory and wakeups low. Blocking work goes to tokio's blocking pool, whose
//! threads exist only while used.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cusaxd::config::{Config, ConfigSource};
use cusaxd::{dbus, hub, logging, sip, store};
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// One SIP + XMPP communications endpoint on the D-Bus session bus (org.cusax.Cusax1).
#[derive(Debug, Parser)]
#[command(name = "cusaxd", version)]
struct Args {
    /// Config file [default: $XDG_CONFIG_HOME/cusax/config.toml].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the config, print a summary and exit (status 1 when invalid).
    #[arg(long)]
    check_config: bool,
}

/// Another cusaxd owns the bus name.
const EXIT_ALREADY_RUNNING: u8 = 3;
/// The config is invalid (sysexits.h `EX_CONFIG`).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = ConfigSource::resolve(args.config).and_then(|source| Ok((Config::load(&source)?, source)));
    let (config, source) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("cusaxd: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check_config {
        println!("{}: ok ({})", source.path.display(), summary(&config));
        return ExitCode::SUCCESS;
    }
    logging::init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(source, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            match e.downcast_ref::<dbus::ServeError>() {
                Some(dbus::ServeError::AlreadyRunning { .. }) => ExitCode::from(EXIT_ALREADY_RUNNING),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn summary(config: &Config) -> String {
    let sip = config.sip.as_ref().map_or("no SIP account".to_owned(), |s| format!("SIP {}", s.aor));
    let xmpp = config.xmpp.as_ref().map_or("no XMPP account".to_owned(), |x| format!("XMPP {}", x.jid));
    format!("{sip}, {xmpp}")
}

async fn run(source: ConfigSource, config: Config) -> anyhow::Result<()> {
    // Installed first, so that a signal that comes right after READY is not lost.
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;

    info!(version = cusaxd::VERSION, config = %source.path.display(), "{}", summary(&config));
    let data = store::data_dir().context("no home directory for $XDG_DATA_HOME/cusax")?;
    let instance = store::instance_id(&data, sip::new_instance)
        .with_context(|| format!("cannot keep the SIP instance id in {}", data.display()))?;
    let store = store::spawn(&data)
        .with_context(|| format!("cannot open the message store in {}", data.display()))?;
    let hub = hub::spawn(source, config, instance, store);
    let conn = dbus::serve(hub.clone()).await?;
    info!(name = dbus::BUS_NAME, "ready on the session bus");
    notify(&[NotifyState::Ready]);

    let name_lost = dbus::name_lost(&conn);
    tokio::pin!(name_lost);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            lost = &mut name_lost => {
                notify(&[NotifyState::Stopping]);
                return match lost {
                    Ok(()) => Err(anyhow::anyhow!("lost {} on the session bus; stopping", dbus::BUS_NAME)),
                    Err(e) => Err(anyhow::Error::new(e).context("watching the session bus")),
                };
            }
            _ = hangup.recv() => {
                notify_reloading();
                match hub.reload().await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "SIGHUP: config not reloaded"),
                    Err(gone) => warn!(error = %gone, "SIGHUP: config not reloaded"),
                }
                notify(&[NotifyState::Ready]);
            }
        }
    }
    info!("stopping");
    notify(&[NotifyState::Stopping]);
    // Unregister within the bound a clean stop has (the SIP actor waits 700 ms at most).
    if tokio::time::timeout(Duration::from_millis(900), hub.shutdown()).await.is_err() {
        warn!("the actors did not stop in time");
    }
    // Let callers see the name go at once; the process exit would release it too.
    match tokio::time::timeout(Duration::from_millis(500), conn.release_name(dbus::BUS_NAME)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "could not release the bus name"),
        Err(_) => warn!("releasing the bus name timed out"),
    }
    Ok(())
}

/// `RELOADING=1` with the timestamp that systemd 253 and later want with it.
fn notify_reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(e) => warn!(error = %e, "cannot read the monotonic clock for sd_notify"),
    }
}

/// Tells systemd (when it started us with `Type=notify`) about our state; a no-op otherwise.
fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "sd_notify failed");
    }
}
