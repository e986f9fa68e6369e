use anyhow::Context;
use clap::Parser;
use claw_nodeagent::{Agent, Flags, Options};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let opts = Options::load(&flags, &|k| std::env::var(k).ok())?;
    let filter = EnvFilter::try_new(&opts.log.level).with_context(|| format!("log.level {:?}", opts.log.level))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    if opts.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let (agent, _handle) = Agent::build(opts).await?;
    agent.run(wait_for_signal()).await?;
    Ok(())
}

async fn wait_for_signal() {
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
