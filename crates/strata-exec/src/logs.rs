//! The container log in docker's json-file format: one JSON object a line with the text,
//! the stream and an RFC 3339 time with nanoseconds.

use serde::{Deserialize, Serialize};
use std::io::Write;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Turns output chunks into log lines: complete lines are written at once, a partial line
/// waits for its newline (or for `flush`), as docker's json-file driver does.
#[derive(Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    pub fn push(&mut self, out: &mut impl Write, stream: &str, data: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(data);
        let mut buf = Vec::new();
        while let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            encode(&mut buf, stream, &line);
        }
        // A line that never ends is cut at 16 KiB, as docker's.
        if self.pending.len() >= 16 << 10 {
            let line = std::mem::take(&mut self.pending);
            encode(&mut buf, stream, &line);
        }
        out.write_all(&buf)
    }

    pub fn flush(&mut self, out: &mut impl Write, stream: &str) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        encode(&mut buf, stream, &std::mem::take(&mut self.pending));
        out.write_all(&buf)
    }
}

fn encode(buf: &mut Vec<u8>, stream: &str, line: &[u8]) {
    let l = LogLine {
        log: String::from_utf8_lossy(line).into_owned(),
        stream: stream.to_string(),
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    };
    serde_json::to_writer(&mut *buf, &l).expect("log line serialises");
    buf.push(b'\n');
}
