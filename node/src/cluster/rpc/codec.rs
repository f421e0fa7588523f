//! The RPC wire format's primitives: a checked reader and a writer, the
//! message traits, and request and response frames.

#[allow(unused_imports)]
use super::*;

/// A checked reader over a message's bytes. Every read says what it reads,
/// for the error; `Bytes` fields are views of the input, not copies.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn need(&self, need: usize, what: &'static str) -> Result<(), RpcError> {
        if self.buf.len() < need {
            return Err(RpcError::Truncated {
                what,
                need,
                have: self.buf.len(),
            });
        }
        Ok(())
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, RpcError> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, RpcError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, RpcError> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, RpcError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, RpcError> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, RpcError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    pub fn array16(&mut self, what: &'static str) -> Result<[u8; 16], RpcError> {
        self.need(16, what)?;
        let mut a = [0u8; 16];
        self.buf.copy_to_slice(&mut a);
        Ok(a)
    }

    /// `n` bytes, as a view of the input.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, RpcError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    /// A `u16`-length UTF-8 string of at most [`STRING_BYTES_MAX`] bytes.
    pub fn string(&mut self, what: &'static str) -> Result<Arc<str>, RpcError> {
        let len = self.u16(what)? as usize;
        if len > STRING_BYTES_MAX {
            return Err(RpcError::StringTooLong {
                what,
                len,
                max: STRING_BYTES_MAX,
            });
        }
        self.need(len, what)?;
        let s = std::str::from_utf8(&self.buf[..len])
            .map_err(|_| RpcError::NotUtf8 { what })?
            .into();
        self.buf.advance(len);
        Ok(s)
    }

    /// A `u32` array count, refused unless `count` items of at least
    /// `item_bytes_min` bytes each fit in what is left, so a hostile count
    /// never reserves more memory than the message could fill.
    pub fn count(&mut self, what: &'static str, item_bytes_min: usize) -> Result<usize, RpcError> {
        let count = self.u32(what)?;
        let fits = self.buf.len() / item_bytes_min.max(1);
        if count as usize > fits {
            return Err(RpcError::Count {
                what,
                count: count.into(),
                remaining: self.buf.len(),
            });
        }
        Ok(count as usize)
    }

    /// Ends the message: anything left over is an error.
    pub fn finish(self) -> Result<(), RpcError> {
        if !self.buf.is_empty() {
            return Err(RpcError::Trailing {
                bytes: self.buf.len(),
            });
        }
        Ok(())
    }
}

/// Builds a message as segments: small fields are copied into one buffer,
/// large `Bytes` fields are sent as views of their own.
#[derive(Debug, Default)]
pub struct Writer {
    segs: Vec<Bytes>,
    cur: BytesMut,
    len: usize,
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            segs: Vec::new(),
            cur: BytesMut::with_capacity(256),
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn i16(&mut self, v: i16) {
        self.cur.put_i16(v);
        self.len += 2;
    }

    pub fn u16(&mut self, v: u16) {
        self.cur.put_u16(v);
        self.len += 2;
    }

    pub fn i32(&mut self, v: i32) {
        self.cur.put_i32(v);
        self.len += 4;
    }

    pub fn u32(&mut self, v: u32) {
        self.cur.put_u32(v);
        self.len += 4;
    }

    pub fn i64(&mut self, v: i64) {
        self.cur.put_i64(v);
        self.len += 8;
    }

    pub fn u64(&mut self, v: u64) {
        self.cur.put_u64(v);
        self.len += 8;
    }

    pub fn array16(&mut self, v: &[u8; 16]) {
        self.cur.put_slice(v);
        self.len += 16;
    }

    pub fn string(&mut self, s: &str, what: &'static str) -> Result<(), RpcError> {
        if s.len() > STRING_BYTES_MAX {
            return Err(RpcError::StringTooLong {
                what,
                len: s.len(),
                max: STRING_BYTES_MAX,
            });
        }
        self.u16(s.len() as u16);
        self.cur.put_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }

    pub fn count(&mut self, n: usize, what: &'static str) -> Result<(), RpcError> {
        let n = u32::try_from(n).map_err(|_| RpcError::TooMany {
            what,
            count: n,
            max: u32::MAX as usize,
        })?;
        self.u32(n);
        Ok(())
    }

    /// Raw bytes: large ones become a segment of their own, uncopied.
    pub fn bytes(&mut self, b: &Bytes) {
        if b.len() >= ZERO_COPY_BYTES_MIN {
            if !self.cur.is_empty() {
                self.segs.push(self.cur.split().freeze());
            }
            self.segs.push(b.clone());
        } else {
            self.cur.put_slice(b);
        }
        self.len += b.len();
    }

    /// The segments, in order.
    pub fn into_segments(mut self) -> Vec<Bytes> {
        if !self.cur.is_empty() {
            self.segs.push(self.cur.freeze());
        }
        self.segs
    }

    /// The segments of a frame whose first 4 bytes were written as a
    /// placeholder: the size prefix is set to the bytes after it.
    pub(super) fn into_frame(self) -> Result<Vec<Bytes>, RpcError> {
        let size = self.len.saturating_sub(4);
        let size = i32::try_from(size).map_err(|_| RpcError::TooMany {
            what: "frame bytes",
            count: size,
            max: i32::MAX as usize,
        })?;
        let mut segs = self.into_segments();
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
}

/// A message's payload codec, version 0.
pub trait RpcMessage: Sized {
    fn encode(&self, w: &mut Writer) -> Result<(), RpcError>;
    /// Reads the message from `r`, leaving anything after it unread.
    fn decode(r: &mut Reader) -> Result<Self, RpcError>;
}

/// A request: its API key, its traffic kind, and its response type.
pub trait RpcRequest: RpcMessage {
    const API_KEY: i16;
    const KIND: RpcKind;
    type Response: RpcMessage;
}

/// `m` encoded as one buffer (for tests and sizes; frames use segments).
pub fn encode_to_bytes<M: RpcMessage>(m: &M) -> Result<Bytes, RpcError> {
    let mut w = Writer::new();
    m.encode(&mut w)?;
    let segs = w.into_segments();
    if segs.len() == 1 {
        return Ok(segs.into_iter().next().unwrap_or_default());
    }
    let mut b = BytesMut::with_capacity(segs.iter().map(Bytes::len).sum());
    for s in &segs {
        b.put_slice(s);
    }
    Ok(b.freeze())
}

/// A whole payload as `M`: trailing bytes are an error.
pub fn decode_exact<M: RpcMessage>(payload: Bytes) -> Result<M, RpcError> {
    let mut r = Reader::new(payload);
    let m = M::decode(&mut r)?;
    r.finish()?;
    Ok(m)
}

/// A request frame, size prefix included.
pub fn encode_request_frame<R: RpcRequest>(
    correlation_id: i32,
    req: &R,
) -> Result<Vec<Bytes>, RpcError> {
    let mut w = Writer::new();
    w.i32(0);
    w.i16(R::API_KEY);
    w.i16(RPC_VERSION);
    w.i32(correlation_id);
    req.encode(&mut w)?;
    w.into_frame()
}

/// A response frame, size prefix included.
pub fn encode_response_frame<M: RpcMessage>(
    correlation_id: i32,
    resp: &M,
) -> Result<Vec<Bytes>, RpcError> {
    let mut w = Writer::new();
    w.i32(0);
    w.i32(correlation_id);
    resp.encode(&mut w)?;
    w.into_frame()
}

/// Object keys, each written once per message.
pub(super) struct KeyTable<'a> {
    index: HashMap<&'a str, u32>,
    keys: Vec<&'a str>,
}

impl<'a> KeyTable<'a> {
    pub(super) fn new() -> Self {
        KeyTable {
            index: HashMap::new(),
            keys: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, key: &'a str) -> Result<(), RpcError> {
        if !self.index.contains_key(key) {
            if self.keys.len() >= KEYS_MAX {
                return Err(RpcError::TooMany {
                    what: "object keys",
                    count: self.keys.len() + 1,
                    max: KEYS_MAX,
                });
            }
            self.index.insert(key, self.keys.len() as u32);
            self.keys.push(key);
        }
        Ok(())
    }

    pub(super) fn get(&self, key: &str) -> u32 {
        self.index.get(key).copied().unwrap_or(0)
    }

    pub(super) fn encode(&self, w: &mut Writer) -> Result<(), RpcError> {
        w.count(self.keys.len(), "object keys")?;
        for k in &self.keys {
            w.string(k, "object key")?;
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Vec<Arc<str>>, RpcError> {
        let n = r.count("object keys", 2)?;
        if n > KEYS_MAX {
            return Err(RpcError::TooMany {
                what: "object keys",
                count: n,
                max: KEYS_MAX,
            });
        }
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(r.string("object key")?);
        }
        Ok(keys)
    }
}

pub(super) fn key_at(
    keys: &[Arc<str>],
    r: &mut Reader,
    what: &'static str,
) -> Result<Arc<str>, RpcError> {
    let index = r.u32(what)?;
    keys.get(index as usize).cloned().ok_or(RpcError::KeyIndex {
        what,
        index,
        keys: keys.len(),
    })
}
