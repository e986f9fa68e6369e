//! `clawctl` driven the way a user drives it: the built binary, its exit
//! status and what it printed.

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::binary;

/// Runs `clawctl` against one server, as user "alice".
pub struct Ctl {
    pub server: String,
}

impl Ctl {
    pub fn new(server: &str) -> Ctl {
        Ctl { server: server.to_string() }
    }

    /// Exit success, stdout and stderr.
    pub fn run(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let out = Command::new(binary("clawctl"))
            .arg("--server")
            .arg(&self.server)
            .arg("--as")
            .arg("alice")
            .args(args)
            .output()
            .context("running clawctl")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        ))
    }

    /// Stdout of a run that must succeed.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let (ok, out, err) = self.run(args)?;
        ensure!(ok, "clawctl {args:?} failed:\n{out}\n{err}");
        Ok(out)
    }

    /// Stderr of a run that must fail.
    pub fn fails(&self, args: &[&str]) -> Result<String> {
        let (ok, out, err) = self.run(args)?;
        ensure!(!ok, "clawctl {args:?} should have failed:\n{out}");
        Ok(err)
    }

    /// Stdout of `clawctl -o json ARGS`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = self.ok(&full)?;
        serde_json::from_str(&out).with_context(|| format!("clawctl {args:?} printed non-JSON: {out}"))
    }
}
