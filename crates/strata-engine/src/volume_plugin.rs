//! Docker volume plugins: existing plugins (GlusterFS, Ceph, NFS, ...) serve volumes to
//! strata over the Docker volume plugin protocol, JSON over HTTP on a unix socket in
//! `/run/docker/plugins/NAME.sock`.
//!
//! The client is written by hand: every call is one `POST` with a JSON body and a JSON
//! answer, and the HTTP crates that speak over unix sockets (hyper with tokio) would bring
//! an async runtime into a short-lived CLI for it.

use crate::error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where plugins put their sockets, as docker looks for them.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

pub struct Plugin {
    name: String,
    socket: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Answer {
    err: String,
    mountpoint: String,
    implements: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Request<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    opts: Option<&'a BTreeMap<String, String>>,
    #[serde(rename = "ID", skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

impl Plugin {
    /// Finds plugin `name` and checks it implements `VolumeDriver` (`Plugin.Activate`).
    pub fn activate(name: &str) -> Result<Plugin> {
        let socket = PathBuf::from(PLUGIN_DIR).join(format!("{name}.sock"));
        if !socket.exists() {
            return Err(EngineError::Invalid(format!(
                "volume driver {name:?} not found: no plugin socket at {}; start the plugin, or use -d local",
                socket.display()
            )));
        }
        let p = Plugin {
            name: name.to_string(),
            socket,
        };
        let a = p.call("Plugin.Activate", &json!({}))?;
        if !a.implements.iter().any(|i| i == "VolumeDriver") {
            return Err(EngineError::Invalid(format!(
                "plugin {name:?} does not implement VolumeDriver (it implements {:?})",
                a.implements
            )));
        }
        Ok(p)
    }

    pub fn create(&self, volume: &str, opts: &BTreeMap<String, String>) -> Result<()> {
        self.volume_call("VolumeDriver.Create", volume, Some(opts), None)
            .map(|_| ())
    }

    pub fn remove(&self, volume: &str) -> Result<()> {
        self.volume_call("VolumeDriver.Remove", volume, None, None)
            .map(|_| ())
    }

    /// Asks the plugin to make the volume available for container `id`; returns the host
    /// path to bind into the container.
    pub fn mount(&self, volume: &str, id: &str) -> Result<PathBuf> {
        let a = self.volume_call("VolumeDriver.Mount", volume, None, Some(id))?;
        if a.mountpoint.is_empty() {
            return Err(EngineError::Invalid(format!(
                "volume plugin {}: VolumeDriver.Mount of {volume} gave no Mountpoint",
                self.name
            )));
        }
        Ok(PathBuf::from(a.mountpoint))
    }

    pub fn unmount(&self, volume: &str, id: &str) -> Result<()> {
        self.volume_call("VolumeDriver.Unmount", volume, None, Some(id))
            .map(|_| ())
    }

    /// Where the volume is on the host (empty while it is not mounted).
    pub fn path(&self, volume: &str) -> Result<String> {
        Ok(self
            .volume_call("VolumeDriver.Path", volume, None, None)?
            .mountpoint)
    }

    fn volume_call(
        &self,
        method: &str,
        name: &str,
        opts: Option<&BTreeMap<String, String>>,
        id: Option<&str>,
    ) -> Result<Answer> {
        let body = serde_json::to_value(Request { name, opts, id }).expect("request serialises");
        self.call(method, &body)
    }

    fn call(&self, method: &str, body: &Value) -> Result<Answer> {
        let fail = |what: String| {
            EngineError::Invalid(format!("volume plugin {}: {method}: {what}", self.name))
        };
        let body = serde_json::to_vec(body).expect("json serialises");
        let (status, answer) =
            post(&self.socket, &format!("/{method}"), &body).map_err(|e| fail(e.to_string()))?;
        let a: Answer = serde_json::from_slice(&answer).map_err(|e| {
            fail(format!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&answer)
            ))
        })?;
        if !a.err.is_empty() {
            return Err(fail(a.err));
        }
        if !(200..300).contains(&status) {
            return Err(fail(format!("HTTP status {status}")));
        }
        Ok(a)
    }
}

/// One HTTP/1.1 POST over a unix socket: the status and the body.
fn post(socket: &std::path::Path, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut body = raw[end + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status in the answer"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok((status, body))
}

/// The payload of a chunked HTTP body.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            super::dechunk(b"4\r\n{\"Er\r\n5\r\nr\":\"\"\r\n1\r\n}\r\n0\r\n\r\n").unwrap(),
            b"{\"Err\":\"\"}"
        );
        assert!(super::dechunk(b"zz\r\n").is_none());
    }
}
