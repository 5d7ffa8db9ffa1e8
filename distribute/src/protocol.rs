//! Wire messages and their framing: one compact JSON object per line.

use std::collections::BTreeMap;

use portico_api::{Backend, Snapshot};
use serde::{Deserialize, Serialize};

/// Path prefix of the snapshot stream; the class follows.
pub const SNAPSHOTS_PATH: &str = "/v1/snapshots/";
/// Path prefix of acknowledgements; the class follows.
pub const ACKS_PATH: &str = "/v1/acks/";
/// Media type of the stream.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// Audience the operator expects proxy tokens to be issued for.
pub const TOKEN_AUDIENCE: &str = "portico.dev";

/// One frame of the snapshot stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Message {
    /// The whole snapshot; `snapshot.version` equals `version`.
    Full {
        epoch: String,
        version: u64,
        snapshot: Box<Snapshot>,
    },
    /// Only backends changed between `base` and `version`.
    #[serde(rename_all = "camelCase")]
    Backends {
        epoch: String,
        version: u64,
        base: u64,
        changed: BTreeMap<String, Backend>,
        removed: Vec<String>,
    },
    /// Nothing new; the stream is alive.
    Ping,
}

impl Message {
    /// The frame on the wire: compact JSON and a newline.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// The backend delta from `old` to `new`.
    pub fn backends_delta(epoch: &str, old: &Snapshot, new: &Snapshot) -> Self {
        let changed = new
            .backends
            .iter()
            .filter(|(id, b)| old.backends.get(*id) != Some(*b))
            .map(|(id, b)| (id.clone(), b.clone()))
            .collect();
        let removed = old
            .backends
            .keys()
            .filter(|id| !new.backends.contains_key(*id))
            .cloned()
            .collect();
        Message::Backends {
            epoch: epoch.to_owned(),
            version: new.version,
            base: old.version,
            changed,
            removed,
        }
    }
}

/// [`Message::Full`] borrowing its snapshot, so that a frame is encoded without a copy.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum MessageRef<'a> {
    Full {
        epoch: &'a str,
        version: u64,
        snapshot: &'a Snapshot,
    },
}

/// The frame of [`Message::Full`] for `snapshot` (at `snapshot.version`).
pub fn encode_full(epoch: &str, snapshot: &Snapshot) -> Vec<u8> {
    let message = MessageRef::Full {
        epoch,
        version: snapshot.version,
        snapshot,
    };
    let mut line = serde_json::to_vec(&message).unwrap_or_default();
    line.push(b'\n');
    line
}

/// A proxy's report that it applied `version` of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub proxy: String,
    pub epoch: String,
    pub version: u64,
}

/// True when `a` and `b` differ at most in `version` and `backends`, so that a `backends`
/// delta turns one into the other. Destructured so that a new snapshot field must be
/// considered here.
pub fn same_routing(a: &Snapshot, b: &Snapshot) -> bool {
    let Snapshot {
        format,
        version: _,
        class,
        replicas,
        hosts,
        default_route,
        backends: _,
        certificates,
        sni,
    } = a;
    *format == b.format
        && *class == b.class
        && *replicas == b.replicas
        && *hosts == b.hosts
        && *default_route == b.default_route
        && *certificates == b.certificates
        && *sni == b.sni
}

/// Splits a byte stream into lines, whatever the chunking.
#[derive(Debug, Default)]
pub struct LineDecoder {
    buf: Vec<u8>,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame longer than {MAX_FRAME} bytes")]
    TooLong,
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// Largest frame accepted (a full snapshot of a very large cluster fits well within it).
pub const MAX_FRAME: usize = 512 * 1024 * 1024;

impl LineDecoder {
    /// Appends `chunk`.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message and its size in bytes (newline included), if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<(Message, usize)>, DecodeError> {
        let Some(end) = self.buf.iter().position(|b| *b == b'\n') else {
            if self.buf.len() > MAX_FRAME {
                return Err(DecodeError::TooLong);
            }
            return Ok(None);
        };
        let line: Vec<u8> = self.buf.drain(..=end).collect();
        let message = serde_json::from_slice(&line[..end])?;
        Ok(Some((message, end + 1)))
    }
}

/// Applies a `backends` delta to `snapshot` (which must hold `base`).
pub fn apply_backends(
    snapshot: &mut Snapshot,
    version: u64,
    changed: BTreeMap<String, Backend>,
    removed: Vec<String>,
) {
    for id in removed {
        snapshot.backends.remove(&id);
    }
    snapshot.backends.extend(changed);
    snapshot.version = version;
}

#[cfg(test)]
mod tests {
    use portico_api::{Endpoint, ServiceRef};

    use super::*;

    fn backend(port: u16) -> Backend {
        Backend {
            service: ServiceRef {
                namespace: "ns".into(),
                name: "web".into(),
                port: 80,
            },
            endpoints: vec![Endpoint {
                address: [10, 0, 0, 1].into(),
                port,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn delta_round_trips_through_lines_split_anywhere() {
        let mut old = Snapshot::empty("c");
        old.version = 3;
        old.backends.insert("ns/a:80".into(), backend(1));
        old.backends.insert("ns/b:80".into(), backend(2));
        let mut new = old.clone();
        new.version = 4;
        new.backends.remove("ns/a:80");
        new.backends.insert("ns/b:80".into(), backend(3));
        new.backends.insert("ns/c:80".into(), backend(4));
        assert!(same_routing(&old, &new));

        let wire = [
            Message::Ping.encode(),
            Message::backends_delta("e", &old, &new).encode(),
        ]
        .concat();
        let mut decoder = LineDecoder::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            decoder.push(chunk);
            while let Some((m, _)) = decoder.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got[0], Message::Ping);
        let Message::Backends {
            base,
            version,
            changed,
            removed,
            ..
        } = got.pop().unwrap()
        else {
            panic!("not a delta")
        };
        assert_eq!((base, version), (3, 4));
        assert_eq!(removed, ["ns/a:80"]);
        let mut rebuilt = old.clone();
        apply_backends(&mut rebuilt, version, changed, removed);
        assert_eq!(rebuilt, new);
    }

    #[test]
    fn a_borrowed_full_frame_reads_as_an_owned_one() {
        let mut snapshot = Snapshot::empty("c");
        snapshot.version = 9;
        snapshot.backends.insert("ns/a:80".into(), backend(1));
        let mut decoder = LineDecoder::default();
        decoder.push(&encode_full("e", &snapshot));
        let (message, _) = decoder.next_message().unwrap().unwrap();
        let owned = Message::Full {
            epoch: "e".into(),
            version: 9,
            snapshot: Box::new(snapshot),
        };
        assert_eq!(message, owned);
        assert_eq!(owned.encode(), encode_full("e", owned_snapshot(&owned)));
    }

    fn owned_snapshot(m: &Message) -> &Snapshot {
        match m {
            Message::Full { snapshot, .. } => snapshot,
            _ => unreachable!(),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decoder = LineDecoder::default();
        decoder.push(b"{\"type\":\"nope\"}\n");
        assert!(decoder.next_message().is_err());
    }
}
