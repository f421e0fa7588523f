//! Running `ferry dev` as a real process, and real clients against it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `ferry dev` process on a directory, killed with SIGKILL when dropped.
pub struct DevNode {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl DevNode {
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> DevNode {
        let mut n = DevNode {
            port,
            dir: dir.to_owned(),
            child: None,
        };
        n.spawn(extra);
        n
    }

    fn spawn(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(["dev", "--dir"]).arg(self.dir.join("data"));
        cmd.args(["--port", &self.port.to_string()]);
        cmd.args(extra);
        cmd.stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().expect("start ferry dev"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "ferry dev did not listen within 30 s; see {}",
                self.dir.join("node.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9`, then start again on the same directory and port.
    pub fn kill9_and_restart(&mut self, extra: &[&str]) {
        self.kill9();
        self.spawn(extra);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs a Python client script to completion (at most `secs`), asserting it
/// succeeds.
pub fn python(script: &str, args: &[&str], secs: u64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .spawn()
        .expect("python3 must be installed (scripts/test.sh installs the clients)");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{script} {args:?} failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{script} {args:?} timed out after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
