use anyhow::Context;
use clap::Parser;
use claw_controlplane::{Flags, Options, Server};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let opts = Options::load(&flags, &|k| std::env::var(k).ok())?;
    let filter = EnvFilter::try_new(&opts.log.level).with_context(|| format!("log.level {:?}", opts.log.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if opts.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let server = Server::start(opts).await?;
    let fatal = tokio::select! {
        _ = wait_for_signal() => None,
        e = server.fatal() => Some(e),
    };
    if let Some(e) = fatal {
        tracing::error!(error = %e, "raft stopped on a fatal error; exiting so this member restarts from its durable state");
        let _ = server.shutdown().await;
        anyhow::bail!("raft stopped on a fatal error: {e}");
    }
    tracing::info!("shutting down");
    server.shutdown().await?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
