//! Kafka's primitive encodings, as nom parsers and a matching [`Writer`].
//!
//! Every parser reads from a slice of one frame, held as [`Bytes`]: string,
//! `bytes` and `records` fields come back as `Bytes` views of that frame
//! ([`Bytes::slice_ref`]), so decoding copies no payload. Running out of
//! input inside a frame is an error ([`DecodeError::Truncated`]): framing has
//! already established that the whole frame is present.
//!
//! Lengths and counts from the wire are checked against the bytes that
//! remain before anything is allocated, so a hostile frame can never make
//! the decoder reserve more memory than the frame itself holds.

use bytes::{BufMut, Bytes, BytesMut};
use nom::error::{ErrorKind, ParseError};

/// The result of a parser over the bytes of one frame.
pub type PResult<'a, T> = nom::IResult<&'a [u8], T, WireError>;

/// Why a frame could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame truncated at byte {offset}: {what}")]
    Truncated { offset: usize, what: &'static str },
    #[error("invalid {what} at byte {offset}")]
    Invalid { offset: usize, what: &'static str },
    #[error("{what} of {len} at byte {offset} exceeds the {remaining} bytes left in the frame")]
    TooLong {
        offset: usize,
        what: &'static str,
        len: u64,
        remaining: usize,
    },
    #[error("{message} does not support version {version}")]
    UnsupportedVersion { message: &'static str, version: i16 },
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16 },
}

/// The nom error type of the wire parsers: what went wrong and how many bytes
/// of the frame were left at that point (turned into an offset at the top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub kind: WireErrorKind,
    pub remaining: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireErrorKind {
    Truncated(&'static str),
    Invalid(&'static str),
    TooLong { what: &'static str, len: u64 },
    UnsupportedVersion(&'static str, i16),
}

impl WireError {
    pub fn new(input: &[u8], kind: WireErrorKind) -> nom::Err<WireError> {
        nom::Err::Error(WireError {
            kind,
            remaining: input.len(),
        })
    }

    /// Converts to a [`DecodeError`] with an absolute offset into a frame of
    /// `frame_len` bytes.
    pub fn into_decode_error(self, frame_len: usize) -> DecodeError {
        let offset = frame_len.saturating_sub(self.remaining);
        match self.kind {
            WireErrorKind::Truncated(what) => DecodeError::Truncated { offset, what },
            WireErrorKind::Invalid(what) => DecodeError::Invalid { offset, what },
            WireErrorKind::TooLong { what, len } => DecodeError::TooLong {
                offset,
                what,
                len,
                remaining: self.remaining,
            },
            WireErrorKind::UnsupportedVersion(message, version) => {
                DecodeError::UnsupportedVersion { message, version }
            }
        }
    }
}

impl ParseError<&[u8]> for WireError {
    fn from_error_kind(input: &[u8], _kind: ErrorKind) -> Self {
        WireError {
            kind: WireErrorKind::Truncated("field"),
            remaining: input.len(),
        }
    }

    fn append(_input: &[u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

/// Turns the outcome of a top-level parser into a `Result`, with offsets
/// relative to a frame of `frame_len` bytes.
pub fn finish<T>(frame_len: usize, r: PResult<'_, T>) -> Result<(T, usize), DecodeError> {
    match r {
        Ok((rest, v)) => Ok((v, frame_len - rest.len())),
        Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => Err(e.into_decode_error(frame_len)),
        // The parsers are all `complete`; they never ask for more input.
        Err(nom::Err::Incomplete(_)) => Err(DecodeError::Truncated {
            offset: frame_len,
            what: "field",
        }),
    }
}

/// Errors from encoding a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{message} does not support version {version}")]
    UnsupportedVersion { message: &'static str, version: i16 },
    #[error("{field} is null, which version {version} cannot encode")]
    NullNotAllowed { field: &'static str, version: i16 },
    #[error("{field} is {len} long, more than the encoding allows")]
    TooLong { field: &'static str, len: usize },
}

/// A range of message versions, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    pub min: i16,
    pub max: i16,
}

impl VersionRange {
    pub const fn contains(&self, v: i16) -> bool {
        self.min <= v && v <= self.max
    }
}

/// A UTF-8 string held as a view of the frame it was decoded from.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KStr(Bytes);

impl KStr {
    pub const fn from_static(s: &'static str) -> KStr {
        KStr(Bytes::from_static(s.as_bytes()))
    }

    /// Checks `b` is UTF-8 and wraps it without copying.
    pub fn from_utf8(b: Bytes) -> Result<KStr, std::str::Utf8Error> {
        std::str::from_utf8(&b)?;
        Ok(KStr(b))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or guarantees UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Deref for KStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for KStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for KStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for KStr {
    fn from(s: String) -> KStr {
        KStr(Bytes::from(s))
    }
}

impl From<&str> for KStr {
    fn from(s: &str) -> KStr {
        KStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for KStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for KStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The contents of a `records` field: the bytes of zero or more record
/// batches. Decoded, it is one view of the frame. Built by a broker for a
/// fetch response, it can be several views (cached batches, patched
/// headers) that the [`Writer`] emits as segments without joining them.
#[derive(Clone, Default)]
pub struct RecordSet {
    first: Bytes,
    more: Vec<Bytes>,
}

impl RecordSet {
    pub fn from_segments(segments: impl IntoIterator<Item = Bytes>) -> RecordSet {
        let mut set = RecordSet::default();
        for s in segments {
            set.push(s);
        }
        set
    }

    /// Appends a segment (no copy).
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        if self.first.is_empty() && self.more.is_empty() {
            self.first = b;
        } else {
            self.more.push(b);
        }
    }

    pub fn len(&self) -> usize {
        self.first.len() + self.more.iter().map(Bytes::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn segments(&self) -> impl Iterator<Item = &Bytes> {
        std::iter::once(&self.first)
            .chain(self.more.iter())
            .filter(|b| !b.is_empty())
    }

    /// The bytes in one buffer: a view, with no copy, when there is one
    /// segment (always the case for decoded requests).
    pub fn to_bytes(&self) -> Bytes {
        if self.more.is_empty() {
            return self.first.clone();
        }
        let mut out = BytesMut::with_capacity(self.len());
        for s in self.segments() {
            out.put_slice(s);
        }
        out.freeze()
    }
}

impl From<Bytes> for RecordSet {
    fn from(b: Bytes) -> RecordSet {
        RecordSet {
            first: b,
            more: Vec::new(),
        }
    }
}

impl From<Vec<u8>> for RecordSet {
    fn from(v: Vec<u8>) -> RecordSet {
        Bytes::from(v).into()
    }
}

impl PartialEq for RecordSet {
    fn eq(&self, other: &RecordSet) -> bool {
        self.len() == other.len()
            && self
                .segments()
                .flat_map(|s| s.iter())
                .eq(other.segments().flat_map(|s| s.iter()))
    }
}

impl Eq for RecordSet {}

impl std::fmt::Debug for RecordSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RecordSet({} bytes in {} segments)",
            self.len(),
            self.segments().count()
        )
    }
}

/// A 128-bit Kafka UUID (topic ids, directory ids).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

impl std::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A tagged field this version of Ferry does not know, kept as sent so it
/// survives a decode and re-encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTaggedField {
    pub tag: u32,
    pub data: Bytes,
}

/// What every generated top-level message provides.
pub trait Message: Sized {
    const NAME: &'static str;
    const VERSIONS: VersionRange;
    /// The first flexible version, or `i16::MAX` if none is.
    const FLEXIBLE_MIN: i16;

    fn decode_from<'a>(frame: &Bytes, input: &'a [u8], version: i16) -> PResult<'a, Self>;
    fn encode(&self, w: &mut Writer, version: i16) -> Result<(), EncodeError>;

    /// Decodes a whole message from `buf` (bytes after the message are
    /// allowed and ignored, as Kafka does).
    fn decode(buf: &Bytes, version: i16) -> Result<Self, DecodeError> {
        finish(buf.len(), Self::decode_from(buf, buf, version)).map(|(m, _)| m)
    }

    /// Encodes into one contiguous buffer (copies `records` fields; the
    /// broker writes [`Writer::into_segments`] instead).
    fn encode_to_bytes(&self, version: i16) -> Result<Bytes, EncodeError> {
        let mut w = Writer::new();
        self.encode(&mut w, version)?;
        Ok(w.into_bytes())
    }
}

// ---- parsers ---------------------------------------------------------------

fn take<'a>(i: &'a [u8], n: usize, what: &'static str) -> PResult<'a, &'a [u8]> {
    if i.len() < n {
        return Err(WireError::new(i, WireErrorKind::Truncated(what)));
    }
    Ok((&i[n..], &i[..n]))
}

macro_rules! fixed {
    ($name:ident, $t:ty, $n:expr) => {
        pub fn $name(i: &[u8]) -> PResult<'_, $t> {
            let (rest, b) = take(i, $n, stringify!($t))?;
            let mut a = [0u8; $n];
            a.copy_from_slice(b);
            Ok((rest, <$t>::from_be_bytes(a)))
        }
    };
}

fixed!(int8, i8, 1);
fixed!(int16, i16, 2);
fixed!(uint16, u16, 2);
fixed!(int32, i32, 4);
fixed!(uint32, u32, 4);
fixed!(int64, i64, 8);
fixed!(float64, f64, 8);

pub fn boolean(i: &[u8]) -> PResult<'_, bool> {
    let (rest, b) = int8(i)?;
    Ok((rest, b != 0))
}

pub fn uuid(i: &[u8]) -> PResult<'_, Uuid> {
    let (rest, b) = take(i, 16, "uuid")?;
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ok((rest, Uuid(a)))
}

/// An unsigned LEB128 varint of at most 5 bytes (32 bits).
pub fn uvarint(i: &[u8]) -> PResult<'_, u32> {
    let mut v: u32 = 0;
    for (n, &b) in i.iter().enumerate().take(5) {
        if n == 4 && b > 0x0f {
            return Err(WireError::new(i, WireErrorKind::Invalid("varint")));
        }
        v |= u32::from(b & 0x7f) << (7 * n);
        if b & 0x80 == 0 {
            return Ok((&i[n + 1..], v));
        }
    }
    if i.len() >= 5 {
        Err(WireError::new(i, WireErrorKind::Invalid("varint")))
    } else {
        Err(WireError::new(i, WireErrorKind::Truncated("varint")))
    }
}

/// A length or count: `None` for null (-1), checked against what remains
/// of the frame, multiplied by the smallest size one element can have.
fn length<'a>(
    i: &'a [u8],
    compact: bool,
    short: bool,
    what: &'static str,
) -> PResult<'a, Option<usize>> {
    let (rest, n): (&[u8], i64) = if compact {
        let (rest, n) = uvarint(i)?;
        (rest, i64::from(n) - 1)
    } else if short {
        let (rest, n) = int16(i)?;
        (rest, i64::from(n))
    } else {
        let (rest, n) = int32(i)?;
        (rest, i64::from(n))
    };
    if n < -1 {
        return Err(WireError::new(i, WireErrorKind::Invalid(what)));
    }
    if n == -1 {
        return Ok((rest, None));
    }
    let n = n as u64;
    if n > rest.len() as u64 {
        return Err(WireError::new(
            rest,
            WireErrorKind::TooLong { what, len: n },
        ));
    }
    Ok((rest, Some(n as usize)))
}

fn slice_of(frame: &Bytes, sub: &[u8]) -> Bytes {
    if sub.is_empty() {
        return Bytes::new();
    }
    frame.slice_ref(sub)
}

pub fn nullable_bytes_raw<'a>(
    frame: &Bytes,
    i: &'a [u8],
    compact: bool,
    what: &'static str,
) -> PResult<'a, Option<Bytes>> {
    let (rest, n) = length(i, compact, false, what)?;
    match n {
        None => Ok((rest, None)),
        Some(n) => {
            let (rest, b) = take(rest, n, what)?;
            Ok((rest, Some(slice_of(frame, b))))
        }
    }
}

fn non_null<T>(i: &[u8], v: Option<T>, what: &'static str) -> Result<T, nom::Err<WireError>> {
    v.ok_or_else(|| WireError::new(i, WireErrorKind::Invalid(what)))
}

pub fn bytes<'a>(frame: &Bytes, i: &'a [u8], compact: bool) -> PResult<'a, Bytes> {
    let (rest, b) = nullable_bytes_raw(frame, i, compact, "bytes")?;
    Ok((rest, non_null(i, b, "null for non-nullable bytes")?))
}

pub fn nullable_bytes<'a>(frame: &Bytes, i: &'a [u8], compact: bool) -> PResult<'a, Option<Bytes>> {
    nullable_bytes_raw(frame, i, compact, "bytes")
}

pub fn nullable_records<'a>(
    frame: &Bytes,
    i: &'a [u8],
    compact: bool,
) -> PResult<'a, Option<RecordSet>> {
    let (rest, b) = nullable_bytes_raw(frame, i, compact, "records")?;
    Ok((rest, b.map(RecordSet::from)))
}

pub fn records<'a>(frame: &Bytes, i: &'a [u8], compact: bool) -> PResult<'a, RecordSet> {
    let (rest, b) = nullable_bytes_raw(frame, i, compact, "records")?;
    Ok((
        rest,
        non_null(i, b, "null for non-nullable records")?.into(),
    ))
}

pub fn nullable_string<'a>(frame: &Bytes, i: &'a [u8], compact: bool) -> PResult<'a, Option<KStr>> {
    let (rest, n) = length(i, compact, !compact, "string")?;
    match n {
        None => Ok((rest, None)),
        Some(n) => {
            let (rest, b) = take(rest, n, "string")?;
            if std::str::from_utf8(b).is_err() {
                return Err(WireError::new(
                    rest,
                    WireErrorKind::Invalid("UTF-8 in string"),
                ));
            }
            Ok((rest, Some(KStr(slice_of(frame, b)))))
        }
    }
}

pub fn string<'a>(frame: &Bytes, i: &'a [u8], compact: bool) -> PResult<'a, KStr> {
    let (rest, s) = nullable_string(frame, i, compact)?;
    Ok((rest, non_null(i, s, "null for non-nullable string")?))
}

/// An array's element count, `None` for null.
pub fn array_len(i: &[u8], compact: bool) -> PResult<'_, Option<usize>> {
    length(i, compact, false, "array count")
}

/// Reads an array whose count has been read, element by element.
pub fn array_items<'a, T>(
    mut i: &'a [u8],
    n: usize,
    mut item: impl FnMut(&'a [u8]) -> PResult<'a, T>,
) -> PResult<'a, Vec<T>> {
    // `n` is at most the bytes left, and every element takes at least one
    // byte on the wire. The first reservation is also capped by bytes: an
    // array that claims more than the frame holds never reserves more memory
    // than the frame's size; real elements grow the vector as they arrive.
    let mut v = Vec::with_capacity(n.min(i.len() / std::mem::size_of::<T>().max(1)));
    for _ in 0..n {
        let (rest, x) = item(i)?;
        i = rest;
        v.push(x);
    }
    Ok((i, v))
}

pub fn array<'a, T>(
    i: &'a [u8],
    compact: bool,
    item: impl FnMut(&'a [u8]) -> PResult<'a, T>,
) -> PResult<'a, Vec<T>> {
    let (rest, n) = array_len(i, compact)?;
    let n = non_null(i, n, "null for non-nullable array")?;
    array_items(rest, n, item)
}

pub fn nullable_array<'a, T>(
    i: &'a [u8],
    compact: bool,
    item: impl FnMut(&'a [u8]) -> PResult<'a, T>,
) -> PResult<'a, Option<Vec<T>>> {
    let (rest, n) = array_len(i, compact)?;
    match n {
        None => Ok((rest, None)),
        Some(n) => {
            let (rest, v) = array_items(rest, n, item)?;
            Ok((rest, Some(v)))
        }
    }
}

/// Reads a tagged-field section, handing each `(tag, payload)` to `field`,
/// which returns `false` for tags it does not know; those are kept in
/// `unknown`.
pub fn tagged_fields<'a>(
    frame: &Bytes,
    i: &'a [u8],
    unknown: &mut Vec<RawTaggedField>,
    mut field: impl FnMut(u32, &'a [u8]) -> Result<bool, nom::Err<WireError>>,
) -> PResult<'a, ()> {
    let (mut i, n) = uvarint(i)?;
    if n as usize > i.len() {
        return Err(WireError::new(
            i,
            WireErrorKind::TooLong {
                what: "tagged field count",
                len: u64::from(n),
            },
        ));
    }
    let mut last: Option<u32> = None;
    for _ in 0..n {
        let (rest, tag) = uvarint(i)?;
        if last.is_some_and(|l| tag <= l) {
            return Err(WireError::new(
                i,
                WireErrorKind::Invalid("tagged field order"),
            ));
        }
        last = Some(tag);
        let (rest, size) = uvarint(rest)?;
        let (rest, data) = take(rest, size as usize, "tagged field")?;
        if !field(tag, data)? {
            unknown.push(RawTaggedField {
                tag,
                data: slice_of(frame, data),
            });
        }
        i = rest;
    }
    Ok((i, ()))
}

/// Runs `p` over the whole of a tagged field's payload.
pub fn whole<'a, T>(
    data: &'a [u8],
    p: impl FnOnce(&'a [u8]) -> PResult<'a, T>,
) -> Result<T, nom::Err<WireError>> {
    let (_rest, v) = p(data)?;
    Ok(v)
}

pub fn unsupported<'a, T>(i: &'a [u8], message: &'static str, version: i16) -> PResult<'a, T> {
    Err(nom::Err::Failure(WireError {
        kind: WireErrorKind::UnsupportedVersion(message, version),
        remaining: i.len(),
    }))
}

// ---- writer ----------------------------------------------------------------

/// Fields at least this long are kept as their own segment instead of being
/// copied into the writer's buffer.
pub const SEGMENT_BYTES_MIN: usize = 4096;

/// Where messages are encoded. Large `records` and `bytes` fields are not
/// copied: they become segments of their own, so a fetch response can be
/// written to a socket with one vectored write.
#[derive(Debug, Default)]
pub struct Writer {
    segments: Vec<Bytes>,
    buf: BytesMut,
    len: usize,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn put_slice(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
        self.len += b.len();
    }

    /// Appends `b`, without a copy when it is large.
    pub fn put_shared(&mut self, b: &Bytes) {
        if b.len() >= SEGMENT_BYTES_MIN {
            if !self.buf.is_empty() {
                self.segments.push(self.buf.split().freeze());
            }
            self.segments.push(b.clone());
            self.len += b.len();
        } else {
            self.put_slice(b);
        }
    }

    pub fn put_i8(&mut self, v: i8) {
        self.put_slice(&v.to_be_bytes());
    }
    pub fn put_bool(&mut self, v: bool) {
        self.put_i8(i8::from(v));
    }
    pub fn put_i16(&mut self, v: i16) {
        self.put_slice(&v.to_be_bytes());
    }
    pub fn put_u16(&mut self, v: u16) {
        self.put_slice(&v.to_be_bytes());
    }
    pub fn put_i32(&mut self, v: i32) {
        self.put_slice(&v.to_be_bytes());
    }
    pub fn put_u32(&mut self, v: u32) {
        self.put_slice(&v.to_be_bytes());
    }
    pub fn put_i64(&mut self, v: i64) {
        self.put_slice(&v.to_be_bytes());
    }
    pub fn put_f64(&mut self, v: f64) {
        self.put_slice(&v.to_be_bytes());
    }
    pub fn put_uuid(&mut self, v: &Uuid) {
        self.put_slice(&v.0);
    }

    pub fn put_uvarint(&mut self, mut v: u32) {
        let mut b = [0u8; 5];
        let mut n = 0;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                b[n] = byte;
                n += 1;
                break;
            }
            b[n] = byte | 0x80;
            n += 1;
        }
        self.put_slice(&b[..n]);
    }

    fn put_len(
        &mut self,
        len: Option<usize>,
        compact: bool,
        short: bool,
        field: &'static str,
    ) -> Result<(), EncodeError> {
        let too_long = |len| EncodeError::TooLong { field, len };
        match (len, compact) {
            (None, true) => self.put_uvarint(0),
            (None, false) if short => self.put_i16(-1),
            (None, false) => self.put_i32(-1),
            (Some(n), true) => {
                let n1 = u32::try_from(n).ok().and_then(|n| n.checked_add(1));
                self.put_uvarint(n1.ok_or_else(|| too_long(n))?);
            }
            (Some(n), false) if short => self.put_i16(i16::try_from(n).map_err(|_| too_long(n))?),
            (Some(n), false) => self.put_i32(i32::try_from(n).map_err(|_| too_long(n))?),
        }
        Ok(())
    }

    pub fn put_string(
        &mut self,
        s: Option<&KStr>,
        compact: bool,
        field: &'static str,
    ) -> Result<(), EncodeError> {
        self.put_len(s.map(KStr::len), compact, !compact, field)?;
        if let Some(s) = s {
            self.put_slice(s.as_bytes());
        }
        Ok(())
    }

    pub fn put_bytes(
        &mut self,
        b: Option<&Bytes>,
        compact: bool,
        field: &'static str,
    ) -> Result<(), EncodeError> {
        self.put_len(b.map(Bytes::len), compact, false, field)?;
        if let Some(b) = b {
            self.put_shared(b);
        }
        Ok(())
    }

    pub fn put_records(
        &mut self,
        r: Option<&RecordSet>,
        compact: bool,
        field: &'static str,
    ) -> Result<(), EncodeError> {
        self.put_len(r.map(RecordSet::len), compact, false, field)?;
        if let Some(r) = r {
            for s in r.segments() {
                self.put_shared(s);
            }
        }
        Ok(())
    }

    pub fn put_array_len(
        &mut self,
        n: Option<usize>,
        compact: bool,
        field: &'static str,
    ) -> Result<(), EncodeError> {
        self.put_len(n, compact, false, field)
    }

    /// Writes a tagged-field section from `(tag, encoded payload)` pairs,
    /// which must be sorted by tag.
    pub fn put_tagged(&mut self, fields: &[(u32, Bytes)]) -> Result<(), EncodeError> {
        let n = u32::try_from(fields.len()).map_err(|_| EncodeError::TooLong {
            field: "tagged fields",
            len: fields.len(),
        })?;
        self.put_uvarint(n);
        for (tag, data) in fields {
            self.put_uvarint(*tag);
            let size = u32::try_from(data.len()).map_err(|_| EncodeError::TooLong {
                field: "tagged field",
                len: data.len(),
            })?;
            self.put_uvarint(size);
            self.put_slice(data);
        }
        Ok(())
    }

    /// The encoded message as segments to write in order.
    pub fn into_segments(mut self) -> Vec<Bytes> {
        if !self.buf.is_empty() {
            self.segments.push(self.buf.freeze());
        }
        self.segments
    }

    /// The encoded message in one buffer.
    pub fn into_bytes(mut self) -> Bytes {
        if self.segments.is_empty() {
            return self.buf.freeze();
        }
        let mut out = BytesMut::with_capacity(self.len);
        for s in &self.segments {
            out.put_slice(s);
        }
        out.put_slice(&self.buf);
        self.buf.clear();
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_round_trips_edges() {
        for v in [0u32, 1, 127, 128, 16383, 16384, u32::MAX] {
            let mut w = Writer::new();
            w.put_uvarint(v);
            let b = w.into_bytes();
            let (rest, got) = uvarint(&b).unwrap();
            assert!(rest.is_empty());
            assert_eq!(got, v);
        }
    }

    #[test]
    fn uvarint_rejects_overlong_and_truncated() {
        assert!(uvarint(&[0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        assert!(uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(uvarint(&[0x80]).is_err());
        assert!(uvarint(&[]).is_err());
    }

    #[test]
    fn string_is_a_view_of_the_frame() {
        let frame = Bytes::from_static(b"\x00\x03abcrest");
        let (rest, s) = string(&frame, &frame, false).unwrap();
        assert_eq!(s, "abc");
        assert_eq!(rest, b"rest");
        assert_eq!(s.as_bytes().as_ptr(), frame[2..].as_ptr());
    }

    #[test]
    fn lengths_beyond_the_frame_are_refused_before_allocating() {
        let frame = Bytes::from_static(b"\x7f\xff\xff\xff\x00");
        let r = array(&frame, false, int8);
        let e = finish(frame.len(), r).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::TooLong {
                    len: 0x7fff_ffff,
                    ..
                }
            ),
            "{e}"
        );
        let frame = Bytes::from_static(b"\xff\xff\xff\xfe");
        assert!(bytes(&frame, &frame, false).is_err());
    }

    #[test]
    fn record_sets_of_several_segments_encode_as_one_field() {
        let a = Bytes::from(vec![1u8; SEGMENT_BYTES_MIN]);
        let b = Bytes::from_static(b"header");
        let c = Bytes::from(vec![2u8; SEGMENT_BYTES_MIN]);
        let set = RecordSet::from_segments([a.clone(), b.clone(), c.clone()]);
        assert_eq!(set.len(), a.len() + b.len() + c.len());
        let mut w = Writer::new();
        w.put_records(Some(&set), true, "records").unwrap();
        let segs = w.into_segments();
        // Large segments are passed through, not copied.
        assert!(segs.iter().any(|s| s.as_ptr() == a.as_ptr()));
        assert!(segs.iter().any(|s| s.as_ptr() == c.as_ptr()));
        let frame = {
            let mut all = BytesMut::new();
            for s in &segs {
                all.put_slice(s);
            }
            all.freeze()
        };
        let (rest, back) = records(&frame, &frame, true).unwrap();
        assert!(rest.is_empty());
        assert_eq!(back, set);
        assert_eq!(back.segments().count(), 1);
    }

    #[test]
    fn large_fields_become_segments_without_copy() {
        let big = Bytes::from(vec![7u8; SEGMENT_BYTES_MIN]);
        let mut w = Writer::new();
        w.put_i32(1);
        w.put_bytes(Some(&big), false, "records").unwrap();
        w.put_i8(2);
        assert_eq!(w.len(), 4 + 4 + big.len() + 1);
        let segs = w.into_segments();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[1].as_ptr(), big.as_ptr());
    }
}
