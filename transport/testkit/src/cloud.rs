//! A `telemark-cloud` process as users run it (feature `cloud`): started
//! on free ports with a data directory of its own and an admin token, its
//! bound addresses read from its first line, stopped with SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running service; killed, and its data removed, when dropped.
pub struct Cloud {
    child: Child,
    bound: Value,
    data: PathBuf,
}

impl Cloud {
    /// Starts `binary` with every listener on a free loopback port, the
    /// admin token `token` and a data directory named after `test`.
    pub fn start(binary: &Path, test: &str, token: &str) -> Cloud {
        Cloud::start_with(binary, test, token, &[])
    }

    /// [`Cloud::start`] with more flags.
    pub fn start_with(binary: &Path, test: &str, token: &str, flags: &[&str]) -> Cloud {
        Cloud::start_in(&[], binary, test, token, flags)
    }

    /// [`Cloud::start_with`], run by the command `wrapper` names first
    /// (`ip netns exec NS`, for a service in a network of its own).
    pub fn start_in(
        wrapper: &[&str],
        binary: &Path,
        test: &str,
        token: &str,
        flags: &[&str],
    ) -> Cloud {
        let data =
            std::env::temp_dir().join(format!("telemark-cloud-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
            .args(["--coap", "127.0.0.1:0", "--admin-token", token])
            .arg("--data")
            .arg(&data)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let Ok(bound) = serde_json::from_str::<Value>(&first) else {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the first line is not the bound addresses: {first:?}; stderr: {err}");
        };
        Cloud { child, bound, data }
    }

    /// The address a listener bound: `http`, `mqtt`, `coap` or `broker`.
    pub fn address(&self, listener: &str) -> String {
        self.bound[listener]
            .as_str()
            .unwrap_or_else(|| panic!("no {listener} in {}", self.bound))
            .to_string()
    }

    /// The serial lines it listens for (`--line`), as bound.
    pub fn lines(&self) -> Vec<String> {
        self.bound["line"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Its data directory, which `telemark-cloud device add --data` takes
    /// beside the running service.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// Stops it with SIGTERM, which must end it with exit 0; its
    /// standard error.
    pub fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        assert!(status.success(), "exit {status}: {err}");
        err
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
