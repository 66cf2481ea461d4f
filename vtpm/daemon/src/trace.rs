//! `--trace FILE`: a backend wrapper that records every command, response and power cycle
//! in the [`vtpm::trace`] format, for fuzz seeds and bug reports. The file holds the
//! traffic in clear (authorization values, sealed data): a debugging tool only.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use vtpm::trace::{encode, Kind, MAGIC};

use crate::{BackendError, TpmBackend};

/// A backend whose traffic is recorded.
pub struct Traced {
    inner: Box<dyn TpmBackend>,
    out: BufWriter<File>,
    failed: bool,
}

impl std::fmt::Debug for Traced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traced").finish_non_exhaustive()
    }
}

impl Traced {
    /// Records `inner`'s traffic into a new file at `path` (replacing one that exists).
    pub fn new(inner: Box<dyn TpmBackend>, path: &Path) -> std::io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(MAGIC)?;
        out.flush()?;
        Ok(Self {
            inner,
            out,
            failed: false,
        })
    }

    fn record(&mut self, kind: Kind, locality: u8, payload: &[u8]) {
        if self.failed {
            return;
        }
        let mut bytes = Vec::with_capacity(6 + payload.len());
        encode(&mut bytes, kind, locality, payload);
        // A trace that cannot be written must not take the TPM down with it: say so once
        // and stop recording.
        if let Err(e) = self.out.write_all(&bytes).and_then(|()| self.out.flush()) {
            eprintln!("vtpm-daemon: --trace stopped: {e}");
            self.failed = true;
        }
    }
}

impl TpmBackend for Traced {
    fn command(&mut self, locality: u8, command: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.record(Kind::Command, locality, command);
        let response = self.inner.command(locality, command)?;
        self.record(Kind::Response, locality, &response);
        Ok(response)
    }

    fn power_on(&mut self) -> Result<(), BackendError> {
        self.inner.power_on()?;
        self.record(Kind::PowerOn, 0, &[]);
        Ok(())
    }

    fn power_off(&mut self) -> Result<(), BackendError> {
        self.inner.power_off()?;
        self.record(Kind::PowerOff, 0, &[]);
        Ok(())
    }

    fn set_cancel(&mut self, on: bool) {
        self.inner.set_cancel(on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every command with a fixed success response.
    struct Echo;

    impl TpmBackend for Echo {
        fn command(&mut self, _locality: u8, _command: &[u8]) -> Result<Vec<u8>, BackendError> {
            Ok(vec![0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0])
        }
        fn power_on(&mut self) -> Result<(), BackendError> {
            Ok(())
        }
        fn power_off(&mut self) -> Result<(), BackendError> {
            Ok(())
        }
        fn set_cancel(&mut self, _on: bool) {}
    }

    #[test]
    fn the_trace_holds_the_traffic_in_order() {
        let dir = std::env::temp_dir().join(format!("vtpm-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.bin");
        let mut t = Traced::new(Box::new(Echo), &path).unwrap();
        t.power_on().unwrap();
        let command = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x7B, 0, 8];
        t.command(0, &command).unwrap();
        t.power_off().unwrap();
        drop(t);
        let bytes = std::fs::read(&path).unwrap();
        let records: Vec<_> = vtpm::trace::records(&bytes)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let kinds: Vec<_> = records.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [Kind::PowerOn, Kind::Command, Kind::Response, Kind::PowerOff]
        );
        assert_eq!(records[1].payload, command);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
