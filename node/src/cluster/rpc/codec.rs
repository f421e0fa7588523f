//! The RPC wire: request and response frames, and the bridge between the
//! messages of [`super`] and the generated wire messages of
//! [`ferry_protocol::ferry_messages`], which do the encoding and decoding.
//!
//! A decode runs the generated nom decoder over the frame (it refuses
//! truncated input, negative lengths and any count or length larger than the
//! bytes left, before allocating), then refuses trailing bytes, then
//! [`RpcMessage::from_wire`] checks what the schema cannot say: string
//! lengths ([`STRING_BYTES_MAX`]), the key table's size ([`KEYS_MAX`]) and
//! every key index.

#[allow(unused_imports)]
use super::*;
use ferry_protocol::wire::{self, KStr, Message};

/// A message of [`super`] and the generated wire message it travels as.
pub trait RpcMessage: Sized {
    /// The generated message, version [`RPC_VERSION`].
    type Wire: Message;

    /// The wire form; refuses what the decoder would refuse (a string over
    /// [`STRING_BYTES_MAX`], more than [`KEYS_MAX`] keys).
    fn to_wire(&self) -> Result<Self::Wire, RpcError>;

    /// Checks a decoded wire message and turns it into this message.
    fn from_wire(wire: Self::Wire) -> Result<Self, RpcError>;
}

/// A request: its API key, its traffic kind, and its response type.
pub trait RpcRequest: RpcMessage {
    const API_KEY: i16;
    const KIND: RpcKind;
    type Response: RpcMessage;
}

/// Encodes `m`'s wire form into `w`.
fn encode_into<M: RpcMessage>(m: &M, w: &mut wire::Writer) -> Result<(), RpcError> {
    m.to_wire()?
        .encode(w, RPC_VERSION)
        .map_err(|source| RpcError::Encode {
            message: M::Wire::NAME,
            source,
        })
}

/// `m` encoded as one buffer (for tests and sizes; frames use segments).
pub fn encode_to_bytes<M: RpcMessage>(m: &M) -> Result<Bytes, RpcError> {
    let mut w = wire::Writer::new();
    encode_into(m, &mut w)?;
    Ok(w.into_bytes())
}

/// Decodes `input`, a slice of `frame`, as a whole `M`: trailing bytes are
/// an error. `Bytes` fields are views of `frame`.
pub(super) fn decode_payload<M: RpcMessage>(frame: &Bytes, input: &[u8]) -> Result<M, RpcError> {
    let parsed = M::Wire::decode_from(frame, input, RPC_VERSION);
    let (m, used) = wire::finish(input.len(), parsed).map_err(|source| RpcError::Decode {
        message: M::Wire::NAME,
        source,
    })?;
    if used != input.len() {
        return Err(RpcError::Trailing {
            bytes: input.len() - used,
        });
    }
    M::from_wire(m)
}

/// A whole payload as `M`: trailing bytes are an error.
pub fn decode_exact<M: RpcMessage>(payload: Bytes) -> Result<M, RpcError> {
    decode_payload(&payload, &payload)
}

/// A request frame, size prefix included.
pub fn encode_request_frame<R: RpcRequest>(
    correlation_id: i32,
    req: &R,
) -> Result<Vec<Bytes>, RpcError> {
    let mut w = wire::Writer::new();
    w.put_i32(0);
    w.put_i16(R::API_KEY);
    w.put_i16(RPC_VERSION);
    w.put_i32(correlation_id);
    encode_into(req, &mut w)?;
    into_frame(w)
}

/// A response frame, size prefix included.
pub fn encode_response_frame<M: RpcMessage>(
    correlation_id: i32,
    resp: &M,
) -> Result<Vec<Bytes>, RpcError> {
    let mut w = wire::Writer::new();
    w.put_i32(0);
    w.put_i32(correlation_id);
    encode_into(resp, &mut w)?;
    into_frame(w)
}

/// The segments of a frame whose first 4 bytes were written as a
/// placeholder: the size prefix is set to the bytes after it.
fn into_frame(w: wire::Writer) -> Result<Vec<Bytes>, RpcError> {
    let size = w.len().saturating_sub(4);
    let size = i32::try_from(size).map_err(|_| RpcError::TooMany {
        what: "frame bytes",
        count: size,
        max: i32::MAX as usize,
    })?;
    let mut segs = w.into_segments();
    if let Some(first) = segs.first_mut() {
        // The first segment is ours alone, so this does not copy.
        let mut m = BytesMut::from(std::mem::take(first));
        if m.len() >= 4 {
            m[..4].copy_from_slice(&size.to_be_bytes());
        }
        *first = m.freeze();
    }
    Ok(segs)
}

/// A string for the wire, refused over [`STRING_BYTES_MAX`].
pub(super) fn to_kstr(s: &str, what: &'static str) -> Result<KStr, RpcError> {
    if s.len() > STRING_BYTES_MAX {
        return Err(RpcError::StringTooLong {
            what,
            len: s.len(),
            max: STRING_BYTES_MAX,
        });
    }
    Ok(KStr::from(s))
}

/// A string from the wire (UTF-8 already checked), refused over
/// [`STRING_BYTES_MAX`].
pub(super) fn from_kstr(s: &KStr, what: &'static str) -> Result<Arc<str>, RpcError> {
    if s.len() > STRING_BYTES_MAX {
        return Err(RpcError::StringTooLong {
            what,
            len: s.len(),
            max: STRING_BYTES_MAX,
        });
    }
    Ok(Arc::from(s.as_str()))
}

/// The object keys of a message being encoded, each once, in the order
/// first seen; batches and entries carry their index.
pub(super) struct KeyTable<'a> {
    index: HashMap<&'a str, i32>,
    keys: Vec<KStr>,
}

impl<'a> KeyTable<'a> {
    pub(super) fn new() -> Self {
        KeyTable {
            index: HashMap::new(),
            keys: Vec::new(),
        }
    }

    /// The index of `key`, added if it is new.
    pub(super) fn index(&mut self, key: &'a str) -> Result<i32, RpcError> {
        if let Some(&i) = self.index.get(key) {
            return Ok(i);
        }
        if self.keys.len() >= KEYS_MAX {
            return Err(RpcError::TooMany {
                what: "object keys",
                count: self.keys.len() + 1,
                max: KEYS_MAX,
            });
        }
        // KEYS_MAX is far below i32::MAX.
        let i = self.keys.len() as i32;
        self.keys.push(to_kstr(key, "object key")?);
        self.index.insert(key, i);
        Ok(i)
    }

    /// The table, for the message's `object_keys`.
    pub(super) fn into_keys(self) -> Vec<KStr> {
        self.keys
    }
}

/// A decoded message's key table, checked: at most [`KEYS_MAX`] keys, each
/// at most [`STRING_BYTES_MAX`] bytes.
pub(super) fn key_table(keys: &[KStr]) -> Result<Vec<Arc<str>>, RpcError> {
    if keys.len() > KEYS_MAX {
        return Err(RpcError::TooMany {
            what: "object keys",
            count: keys.len(),
            max: KEYS_MAX,
        });
    }
    keys.iter().map(|k| from_kstr(k, "object key")).collect()
}

/// The key at `index` in a decoded key table.
pub(super) fn key_at(
    keys: &[Arc<str>],
    index: i32,
    what: &'static str,
) -> Result<Arc<str>, RpcError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| keys.get(i))
        .cloned()
        .ok_or(RpcError::KeyIndex {
            what,
            index,
            keys: keys.len(),
        })
}
