//! The scale-out tests' harness: Debian's nginx and HAProxy from
//! `.peers/deb`, started on loopback with an example config from
//! `examples/deploy/` whose ports are replaced, logs in a temp dir, stopped
//! by a guard; the mcphop instances behind them; and a guard for the
//! processes a killed instance leaves behind.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::common::{
    deb_binary, eventually, example_server, is_alive, kill_group, nginx_command, repo_root, Mcphop,
    TempDir,
};

/// The balancer under test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Nginx,
    Haproxy,
}

/// The ports the example configs use, replaced by the test's own.
pub(crate) const EXAMPLE_BALANCER_PORT: &str = "8080";
pub(crate) const EXAMPLE_INSTANCE_PORTS: [&str; 3] = ["8081", "8082", "8083"];
pub(crate) const EXAMPLE_ADMIN_PORTS: [&str; 3] = ["9081", "9082", "9083"];

/// A loopback port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// One mcphop instance behind the balancer.
pub(crate) struct Instance {
    pub(crate) tag: &'static str,
    pub(crate) mcphop: Mcphop,
    pub(crate) admin: u16,
}

impl Instance {
    pub(crate) fn start(tag: &'static str, balancer_port: u16) -> Instance {
        let args: Vec<String> = [
            "--instance-id",
            tag,
            "--admin-listen",
            "127.0.0.1:0",
            "--allowed-host",
            &format!("127.0.0.1:{balancer_port}"),
            "--log-level",
            "debug",
            "--child-grace",
            "200ms",
            "--shutdown-grace",
            "1s",
            "--",
            &example_server().display().to_string(),
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        let mcphop = Mcphop::start_args(&args);
        let admin = mcphop.admin_port();
        Instance { tag, mcphop, admin }
    }
}

/// A running balancer; stopped (SIGTERM, then SIGKILL to its process
/// group) and its directory removed on drop.
pub(crate) struct Balancer {
    kind: Kind,
    child: Child,
    pub(crate) port: u16,
    dir: TempDir,
}

impl Balancer {
    /// Starts `kind` on `port` with the example config, its ports replaced.
    pub(crate) fn start(kind: Kind, port: u16, instances: &[Instance]) -> Balancer {
        let dir = TempDir::new(&format!("{kind:?}").to_lowercase());
        let example = match kind {
            Kind::Nginx => "examples/deploy/nginx-mcphop.conf",
            Kind::Haproxy => "examples/deploy/haproxy.cfg",
        };
        let mut config = std::fs::read_to_string(repo_root().join(example))
            .unwrap_or_else(|e| panic!("read {example}: {e}"));
        config = config.replace(EXAMPLE_BALANCER_PORT, &port.to_string());
        for (index, instance) in instances.iter().enumerate() {
            config = config.replace(
                EXAMPLE_INSTANCE_PORTS[index],
                &instance.mcphop.port.to_string(),
            );
            config = config.replace(EXAMPLE_ADMIN_PORTS[index], &instance.admin.to_string());
        }
        let logs = dir.0.join("logs");
        let mut command = match kind {
            Kind::Nginx => {
                let snippet = dir.write("mcphop.conf", &config);
                let logs = logs.display();
                let http = format!(
                    "access_log {logs}/access.log;\ninclude {};",
                    snippet.display()
                );
                nginx_command(&dir, &http)
            }
            Kind::Haproxy => {
                let (binary, libs) = deb_binary("haproxy");
                let conf = dir.write("haproxy.cfg", &config);
                let mut command = Command::new(binary);
                command
                    .env("LD_LIBRARY_PATH", libs)
                    .arg("-f")
                    .arg(&conf)
                    .arg("-db");
                command
            }
        };
        let out = std::fs::File::create(logs.join("stdout.log")).expect("create a log");
        let err = std::fs::File::create(logs.join("stderr.log")).expect("create a log");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {kind:?}: {e}"));
        let mut balancer = Balancer {
            kind,
            child,
            port,
            dir,
        };
        let up = eventually(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                || matches!(balancer.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            up && matches!(balancer.child.try_wait(), Ok(None)),
            "{kind:?} did not start on port {port}:\n{}",
            balancer.logs()
        );
        balancer
    }

    /// Everything the balancer logged, for failure messages.
    pub(crate) fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["stderr.log", "stdout.log", "error.log"] {
            let path = self.dir.0.join("logs").join(name);
            if let Ok(content) = std::fs::read_to_string(&path) {
                let tail: Vec<&str> = content.lines().rev().take(40).collect();
                text.push_str(&format!("--- {:?} {name} (last lines)\n", self.kind));
                for line in tail.into_iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let gone = eventually(Duration::from_secs(5), || {
                matches!(self.child.try_wait(), Ok(Some(_)))
            });
            if !gone {
                kill_group(&mut self.child);
            }
        }
        // nginx's worker is in the same process group: none is left behind.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// SIGKILLs, on drop, processes the test orphaned (the killed instance's
/// children, which exit on their own once their stdin closes).
pub(crate) struct Orphans(pub(crate) Vec<u32>);

impl Drop for Orphans {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if is_alive(pid) {
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}
