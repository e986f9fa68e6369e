//! `clawd` members as Docker containers on a private Docker network, for
//! fault injection: network cuts (`docker network disconnect`), one-way cuts
//! (host iptables rules in Docker's `DOCKER-USER` chain, which bridged
//! traffic between containers passes through), SIGKILL, SIGSTOP/SIGCONT, and
//! a data directory on a small tmpfs that can be filled.
//!
//! The engine has no registry, so the image is made here: the built `clawd`
//! (debug info stripped), the shared libraries `ldd` names, and a static
//! busybox (to fill and free the disk from inside), imported with
//! `docker import`. Data directories are host directories bind-mounted into
//! the containers, so a killed or restarted container keeps its data.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use claw_proto::v1;

use crate::{binary, connect, wait_for};

/// The port every member listens on inside its container.
pub const PORT: u16 = 7400;

/// Runs `docker args...`; stdout on success, or an error with stderr.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output().context("running docker (is the engine installed?)")?;
    ensure!(out.status.success(), "docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// The image holding the current `clawd` build; built once per binary.
pub fn clawd_image() -> Result<String> {
    let clawd = binary("clawd");
    let meta = std::fs::metadata(&clawd)?;
    let mtime = meta.modified()?.duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let tag = format!("clawd-fault:{:x}-{:x}", meta.len(), mtime);
    if docker(&["image", "inspect", "--format", "{{.Id}}", &tag]).is_ok() {
        return Ok(tag);
    }
    let root = tempfile::tempdir()?;
    let r = root.path();
    for d in ["bin", "data", "tmp"] {
        std::fs::create_dir_all(r.join(d))?;
    }
    run(Command::new("objcopy").arg("--strip-debug").arg(&clawd).arg(r.join("clawd")))?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("busybox is missing (scripts/install-deps installs busybox-static)")?;
    std::fs::copy(busybox, r.join("bin/busybox"))?;
    for lib in shared_libraries(&clawd)? {
        let dest = r.join(lib.strip_prefix("/").unwrap_or(&lib));
        std::fs::create_dir_all(dest.parent().context("library path")?)?;
        std::fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    let mut tar = Command::new("tar").arg("-C").arg(r).arg("-c").arg(".").stdout(Stdio::piped()).spawn()?;
    let tar_out = tar.stdout.take().context("tar stdout")?;
    let import = Command::new("docker").args(["import", "-", &tag]).stdin(tar_out).output()?;
    ensure!(tar.wait()?.success(), "tar of the image root failed");
    ensure!(import.status.success(), "docker import failed: {}", String::from_utf8_lossy(&import.stderr));
    Ok(tag)
}

/// The shared libraries (and the loader) `binary` needs, as `ldd` resolves them.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("running ldd")?;
    ensure!(out.status.success(), "ldd {} failed", binary.display());
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// One member container.
pub struct DockerMember {
    pub id: u64,
    pub container: String,
    pub data_dir: PathBuf,
    /// A tmpfs of this size (MiB) is mounted on the data directory.
    pub disk_mib: Option<u64>,
}

/// A cluster of `clawd` containers on its own network. Dropping it removes
/// the containers, the network, any tmpfs and any one-way cut.
pub struct DockerCluster {
    pub name: String,
    pub network: String,
    pub image: String,
    pub dir: tempfile::TempDir,
    pub members: Vec<DockerMember>,
    /// `(source ip, destination ip)` pairs whose packets are dropped now.
    cuts: Mutex<Vec<(String, String)>>,
}

impl DockerCluster {
    /// Starts `n` members (member 1 founds the cluster, the others are added
    /// as voters, as an operator would). `small_disk` gives member `id` a
    /// tmpfs data directory of that many MiB.
    pub async fn start(n: u64, small_disk: Option<(u64, u64)>) -> Result<DockerCluster> {
        let image = clawd_image()?;
        let name = format!("clawfault-{}-{}", std::process::id(), next_cluster());
        let dir = tempfile::Builder::new().prefix("clawfault").tempdir()?;
        docker(&["network", "create", "--driver", "bridge", &name])?;
        let mut c = DockerCluster {
            network: name.clone(),
            name,
            image,
            dir,
            members: Vec::new(),
            cuts: Mutex::new(Vec::new()),
        };
        for id in 1..=n {
            let data_dir = c.dir.path().join(format!("m{id}"));
            std::fs::create_dir_all(&data_dir)?;
            let disk_mib = small_disk.filter(|(m, _)| *m == id).map(|(_, mib)| mib);
            if let Some(mib) = disk_mib {
                run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(&data_dir))
                    .context("mounting a tmpfs for the small-disk member (needs root)")?;
            }
            c.members.push(DockerMember { id, container: format!("{}-m{id}", c.name), data_dir, disk_mib });
        }
        c.create(1, false)?;
        c.wait_leader(Duration::from_secs(30)).await?;
        for id in 2..=n {
            c.create(id, true)?;
            let addr = c.addr(id)?;
            wait_for("joining member to listen", Duration::from_secs(30), || {
                let addr = addr.clone();
                async move { connect(&addr).await.ok() }
            })
            .await?;
            let mut cl = connect(&c.addr(1)?).await?;
            let advertise = format!("m{id}:{PORT}");
            cl.add_member(v1::AddMemberRequest { id, addr: advertise.clone(), voter: false }).await?;
            cl.add_member(v1::AddMemberRequest { id, addr: advertise, voter: true }).await?;
        }
        Ok(c)
    }

    fn member(&self, id: u64) -> &DockerMember {
        &self.members[(id - 1) as usize]
    }

    pub fn container(&self, id: u64) -> &str {
        &self.member(id).container
    }

    fn create(&self, id: u64, join: bool) -> Result<()> {
        let m = self.member(id);
        let volume = format!("{}:/data", m.data_dir.display());
        let host = format!("m{id}");
        let id_s = id.to_string();
        let listen = format!("0.0.0.0:{PORT}");
        let advertise = format!("m{id}:{PORT}");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &m.container,
            "--hostname",
            &host,
            "--network",
            &self.network,
            "--network-alias",
            &host,
            "-v",
            &volume,
            "-e",
            "CLAW_LOG_LEVEL=info,openraft=warn",
            &self.image,
            "/clawd",
            "--id",
            &id_s,
            "--listen",
            &listen,
            "--advertise",
            &advertise,
            "--data-dir",
            "/data",
        ];
        if join {
            args.push("--join");
        }
        docker(&args)?;
        Ok(())
    }

    /// `ip:port` of a member as the host reaches it (changes when a member
    /// is reconnected to the network).
    pub fn addr(&self, id: u64) -> Result<String> {
        let ip = docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            self.container(id),
        ])?;
        ensure!(!ip.is_empty(), "member {id} has no address (cut off from the network, or stopped)");
        Ok(format!("{ip}:{PORT}"))
    }

    /// A member's address on the cluster's network.
    fn ip(&self, id: u64) -> Result<String> {
        let addr = self.addr(id)?;
        Ok(addr.rsplit_once(':').map_or(addr.clone(), |(ip, _)| ip.to_string()))
    }

    /// The addresses of every member the host can reach now.
    pub fn reachable_addrs(&self) -> Vec<(u64, String)> {
        self.members.iter().filter_map(|m| self.addr(m.id).ok().map(|a| (m.id, a))).collect()
    }

    pub async fn status(&self, id: u64) -> Result<v1::ClusterStatusResponse> {
        let mut cl = connect(&self.addr(id)?).await?;
        Ok(cl.cluster_status(v1::ClusterStatusRequest {}).await?.into_inner())
    }

    /// A member that reports itself leader, among those the host reaches.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        self.wait_leader_other_than(None, timeout).await
    }

    /// Waits until a leader other than `old` is elected among the others.
    pub async fn wait_new_leader(&self, old: u64, timeout: Duration) -> Result<u64> {
        self.wait_leader_other_than(Some(old), timeout).await
    }

    async fn wait_leader_other_than(&self, old: Option<u64>, timeout: Duration) -> Result<u64> {
        let what = if old.is_some() { "a new leader" } else { "a leader" };
        wait_for(what, timeout, || async {
            for m in self.members.iter().filter(|m| Some(m.id) != old) {
                if let Ok(s) = self.status(m.id).await {
                    if s.leader_id != 0 && s.leader_id == s.member_id {
                        return Some(s.member_id);
                    }
                }
            }
            None
        })
        .await
    }

    /// Cuts a member off the network (both directions).
    pub fn disconnect(&self, id: u64) -> Result<()> {
        docker(&["network", "disconnect", &self.network, self.container(id)]).map(drop)
    }

    pub fn connect(&self, id: u64) -> Result<()> {
        let alias = format!("m{id}");
        docker(&["network", "connect", "--alias", &alias, &self.network, self.container(id)]).map(drop)
    }

    /// Cuts a member off in one direction: every packet it sends to another
    /// member is dropped, while what the others send it still arrives (and
    /// clients on the host still reach it).
    pub fn cut_outbound(&self, id: u64) -> Result<()> {
        let from = self.ip(id)?;
        for m in self.members.iter().filter(|m| m.id != id) {
            let to = self.ip(m.id)?;
            iptables("-I", &from, &to)?;
            self.cuts.lock().unwrap_or_else(|e| e.into_inner()).push((from.clone(), to));
        }
        Ok(())
    }

    /// Undoes [`DockerCluster::cut_outbound`] for `id`.
    pub fn heal_outbound(&self, id: u64) -> Result<()> {
        let from = self.ip(id)?;
        let mut cuts = self.cuts.lock().unwrap_or_else(|e| e.into_inner());
        for (src, dst) in cuts.iter().filter(|(src, _)| *src == from) {
            iptables("-D", src, dst)?;
        }
        cuts.retain(|(src, _)| *src != from);
        Ok(())
    }

    /// SIGKILL of the member's `clawd`: no shutdown code runs.
    pub fn kill(&self, id: u64) -> Result<()> {
        docker(&["kill", "--signal", "KILL", self.container(id)]).map(drop)
    }

    pub fn restart(&self, id: u64) -> Result<()> {
        docker(&["start", self.container(id)]).map(drop)
    }

    pub fn pause(&self, id: u64) -> Result<()> {
        docker(&["kill", "--signal", "STOP", self.container(id)]).map(drop)
    }

    pub fn resume(&self, id: u64) -> Result<()> {
        docker(&["kill", "--signal", "CONT", self.container(id)]).map(drop)
    }

    /// Whether the member's container is running; false once `clawd` exited.
    pub fn running(&self, id: u64) -> Result<bool> {
        Ok(docker(&["inspect", "--format", "{{.State.Running}}", self.container(id)])? == "true")
    }

    /// Fills the member's (tmpfs) data disk until writes fail.
    pub fn fill_disk(&self, id: u64) -> Result<()> {
        ensure!(self.member(id).disk_mib.is_some(), "member {id} has no small disk");
        // dd stops with "No space left on device": that is the point.
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.member(id).data_dir.join("filler").display()))
            .arg("bs=1M")
            .output()?;
        let free = disk_free_mib(&self.member(id).data_dir)?;
        ensure!(free < 1, "member {id}'s disk still has {free} MiB free after filling it");
        Ok(())
    }

    pub fn free_disk(&self, id: u64) -> Result<()> {
        std::fs::remove_file(self.member(id).data_dir.join("filler")).context("removing the filler file")
    }

    /// The container's output (clawd logs to stderr).
    pub fn logs(&self, id: u64) -> String {
        Command::new("docker")
            .args(["logs", self.container(id)])
            .output()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_else(|e| format!("(docker logs failed: {e})"))
    }

    /// Writes every member's log into `dir`.
    pub fn save_logs(&self, dir: &Path) -> Result<()> {
        for m in &self.members {
            std::fs::write(dir.join(format!("member-{}.log", m.id)), self.logs(m.id))?;
        }
        Ok(())
    }
}

fn disk_free_mib(path: &Path) -> Result<u64> {
    let out = Command::new("df").arg("-m").arg("--output=avail").arg(path).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().context("df printed nothing")?;
    last.trim().parse().with_context(|| format!("df printed {last:?}"))
}

fn next_cluster() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Inserts (`-I`) or deletes (`-D`) the rule dropping packets from `src` to
/// `dst` in `DOCKER-USER`, which Docker consults first for traffic between
/// containers (the bridge passes it through iptables).
fn iptables(op: &str, src: &str, dst: &str) -> Result<()> {
    run(Command::new("iptables").args(["-w", op, "DOCKER-USER", "-s", src, "-d", dst, "-j", "DROP"]))
        .context("one-way cuts need iptables on the host and root")
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        // Rules outlive the network, and a later network may reuse its addresses.
        for (src, dst) in self.cuts.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = iptables("-D", &src, &dst);
        }
        for m in &self.members {
            // A paused (SIGSTOPped) process still dies of SIGKILL.
            let _ = docker(&["rm", "-f", &m.container]);
        }
        let _ = docker(&["network", "rm", &self.network]);
        for m in self.members.iter().filter(|m| m.disk_mib.is_some()) {
            let _ = Command::new("umount").arg(&m.data_dir).status();
        }
    }
}

/// Fails unless Docker answers; the fault tests need the engine.
pub fn require_docker() -> Result<()> {
    match docker(&["version", "--format", "{{.Server.Version}}"]) {
        Ok(_) => Ok(()),
        Err(e) => bail!("the fault-injection tests need a running Docker engine: {e}"),
    }
}
