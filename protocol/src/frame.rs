//! Framing: cutting size-prefixed frames out of a socket buffer, reading
//! request headers, dispatching on API key and version, and writing
//! response frames.
//!
//! A Kafka frame is a big-endian `i32` size followed by that many bytes. A
//! request frame holds a request header (v0, v1 or v2, chosen by the API and
//! its version, see [`request_header_version`]) and the body. A response
//! frame holds a response header (v0 or v1, see [`response_header_version`])
//! and the body.

use bytes::{Buf, Bytes, BytesMut};

use crate::error_code::ErrorCode;
use crate::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use crate::messages::request_header::RequestHeader;
use crate::messages::response_header::ResponseHeader;
use crate::messages::{RequestBody, ResponseBody, APIS};
use crate::wire::{self, DecodeError, EncodeError, Message, VersionRange, Writer};

/// Kafka's default `socket.request.max.bytes`.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;

const API_VERSIONS_KEY: i16 = 18;
const CONTROLLED_SHUTDOWN_KEY: i16 = 7;

/// What can go wrong with a frame before its content is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {max} bytes (socket.request.max.bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("negative frame size {size}")]
    Negative { size: i32 },
}

/// Cuts frames out of a growing buffer. It survives any split of the input
/// into reads, and refuses a frame larger than its limit from the size prefix
/// alone, before any memory is reserved for it.
#[derive(Debug, Clone, Copy)]
pub struct FrameReader {
    frame_bytes_max: usize,
}

impl FrameReader {
    pub fn new(frame_bytes_max: usize) -> FrameReader {
        FrameReader { frame_bytes_max }
    }

    /// How many more bytes `buf` needs before [`FrameReader::next_frame`] can
    /// return a frame (0 if one is ready). Lets a caller reserve exactly.
    pub fn bytes_needed(&self, buf: &[u8]) -> Result<usize, FrameError> {
        if buf.len() < 4 {
            return Ok(4 - buf.len());
        }
        let size = self.size(buf)?;
        Ok((4 + size).saturating_sub(buf.len()))
    }

    fn size(&self, buf: &[u8]) -> Result<usize, FrameError> {
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if size < 0 {
            return Err(FrameError::Negative { size });
        }
        let size = size as usize;
        if size > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                size,
                max: self.frame_bytes_max,
            });
        }
        Ok(size)
    }

    /// The next whole frame (without its size prefix), `Ok(None)` if more
    /// bytes are needed. The frame is split off `buf` without a copy.
    pub fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let size = self.size(buf)?;
        if buf.len() < 4 + size {
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(size).freeze()))
    }
}

/// The schema's description of an API key, if Kafka defines it.
pub fn api_info(api_key: i16) -> Option<&'static crate::messages::ApiInfo> {
    APIS.iter().find(|a| a.key == api_key)
}

/// The request header version for `api_key` at `version`: v2 for flexible
/// versions, v1 otherwise, and v0 for ControlledShutdown v0.
pub fn request_header_version(api_key: i16, version: i16) -> i16 {
    if api_key == CONTROLLED_SHUTDOWN_KEY && version == 0 {
        return 0;
    }
    match api_info(api_key) {
        Some(a) if version >= a.request_flexible_min => 2,
        _ => 1,
    }
}

/// The response header version for `api_key` at `version`: v1 for flexible
/// versions, v0 otherwise. ApiVersions always answers with v0, so a client
/// can read the answer before it knows which versions the broker has.
pub fn response_header_version(api_key: i16, version: i16) -> i16 {
    if api_key == API_VERSIONS_KEY {
        return 0;
    }
    match api_info(api_key) {
        Some(a) if version >= a.response_flexible_min => 1,
        _ => 0,
    }
}

/// The API versions a server accepts, by key.
#[derive(Debug, Clone)]
pub struct SupportedApis {
    ranges: Vec<(i16, VersionRange)>,
}

impl SupportedApis {
    /// Every version of every API in the schemas.
    pub fn all() -> SupportedApis {
        SupportedApis {
            ranges: APIS.iter().map(|a| (a.key, a.versions)).collect(),
        }
    }

    /// Exactly the given ranges, which must lie within the schemas' ranges.
    pub fn new(ranges: impl IntoIterator<Item = (i16, VersionRange)>) -> SupportedApis {
        let mut ranges: Vec<_> = ranges
            .into_iter()
            .filter_map(|(key, r)| {
                let schema = api_info(key)?.versions;
                let min = r.min.max(schema.min);
                let max = r.max.min(schema.max);
                (min <= max).then_some((key, VersionRange { min, max }))
            })
            .collect();
        ranges.sort_by_key(|(k, _)| *k);
        ranges.dedup_by_key(|(k, _)| *k);
        SupportedApis { ranges }
    }

    pub fn get(&self, api_key: i16) -> Option<VersionRange> {
        self.ranges
            .binary_search_by_key(&api_key, |(k, _)| *k)
            .ok()
            .map(|i| self.ranges[i].1)
    }

    /// The ApiVersions list: one entry per API.
    pub fn api_versions(&self) -> Vec<ApiVersion> {
        self.ranges
            .iter()
            .map(|(k, r)| ApiVersion {
                api_key: *k,
                min_version: r.min,
                max_version: r.max,
                ..Default::default()
            })
            .collect()
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub header: RequestHeader,
    pub body: RequestBody,
}

impl Request {
    pub fn api_key(&self) -> i16 {
        self.header.request_api_key
    }

    pub fn api_version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Why a request frame could not be turned into a [`Request`]. Every
/// variant past the first carries the correlation id, which is always
/// readable once the frame has 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request frame of {len} bytes is too short for a header")]
    TooShort { len: usize },
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApi { api_key: i16, correlation_id: i32 },
    #[error("API {api_key} version {version} is not supported (correlation id {correlation_id})")]
    UnsupportedVersion {
        api_key: i16,
        version: i16,
        correlation_id: i32,
    },
    #[error("API {api_key} v{version} (correlation id {correlation_id}): {error}")]
    Malformed {
        api_key: i16,
        version: i16,
        correlation_id: i32,
        error: DecodeError,
    },
}

impl RequestError {
    /// Whether the request deserves an answer. Kafka answers only an
    /// ApiVersions request of an unknown version; for anything else it
    /// cannot parse it closes the connection.
    pub fn answer(&self, supported: &SupportedApis) -> Option<Vec<Bytes>> {
        match self {
            RequestError::UnsupportedVersion {
                api_key: API_VERSIONS_KEY,
                correlation_id,
                ..
            } => unsupported_api_versions_response(*correlation_id, supported).ok(),
            _ => None,
        }
    }
}

/// Reads a request frame: the fixed header prefix, then (if the API and
/// version are supported) the whole header and the body. `records` fields
/// of the body are views of `frame`.
pub fn decode_request(frame: &Bytes, supported: &SupportedApis) -> Result<Request, RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::TooShort { len: frame.len() });
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if api_info(api_key).is_none() {
        return Err(RequestError::UnknownApi {
            api_key,
            correlation_id,
        });
    }
    match supported.get(api_key) {
        Some(r) if r.contains(version) => {}
        _ => {
            return Err(RequestError::UnsupportedVersion {
                api_key,
                version,
                correlation_id,
            })
        }
    }
    let malformed = |error| RequestError::Malformed {
        api_key,
        version,
        correlation_id,
        error,
    };
    let hv = request_header_version(api_key, version);
    let r = RequestHeader::decode_from(frame, frame, hv).and_then(|(rest, header)| {
        let (rest, body) = RequestBody::decode_from(api_key, version, frame, rest)?;
        Ok((rest, Request { header, body }))
    });
    wire::finish(frame.len(), r)
        .map(|(req, _)| req)
        .map_err(malformed)
}

/// Encodes a request frame (size prefix, header, body) as a client would.
pub fn encode_request(
    correlation_id: i32,
    client_id: Option<&str>,
    version: i16,
    body: &RequestBody,
) -> Result<Vec<Bytes>, EncodeError> {
    let api_key = body.api_key();
    let header = RequestHeader {
        request_api_key: api_key,
        request_api_version: version,
        correlation_id,
        client_id: client_id.map(Into::into),
        ..Default::default()
    };
    let mut w = Writer::new();
    header.encode(&mut w, request_header_version(api_key, version))?;
    body.encode(&mut w, version)?;
    Ok(with_size_prefix(w))
}

/// Encodes a response frame (size prefix, header, body), as segments for one
/// vectored write. Large `records` fields are not copied.
pub fn encode_response(
    correlation_id: i32,
    version: i16,
    body: &ResponseBody,
) -> Result<Vec<Bytes>, EncodeError> {
    let mut w = Writer::new();
    let header = ResponseHeader {
        correlation_id,
        ..Default::default()
    };
    header.encode(&mut w, response_header_version(body.api_key(), version))?;
    body.encode(&mut w, version)?;
    Ok(with_size_prefix(w))
}

fn with_size_prefix(w: Writer) -> Vec<Bytes> {
    let size = w.len() as u32;
    let mut segs = Vec::with_capacity(4);
    segs.push(Bytes::copy_from_slice(&size.to_be_bytes()));
    segs.extend(w.into_segments());
    segs
}

/// Kafka's answer to an ApiVersions request of a version it does not know:
/// a v0 response with UNSUPPORTED_VERSION and the supported ranges, so the
/// client can retry with a version both sides have.
pub fn unsupported_api_versions_response(
    correlation_id: i32,
    supported: &SupportedApis,
) -> Result<Vec<Bytes>, EncodeError> {
    let body = ApiVersionsResponse {
        error_code: ErrorCode::UNSUPPORTED_VERSION.code(),
        api_keys: supported.api_versions(),
        ..Default::default()
    };
    encode_response(correlation_id, 0, &ResponseBody::ApiVersions(body))
}

/// Fuzz hook: decodes `data` as a request frame body; whatever decodes must
/// re-encode to bytes that decode and re-encode to the same bytes. Panics
/// only if the codec is wrong.
pub fn fuzz_request(data: &[u8]) {
    let supported = SupportedApis::all();
    let frame = Bytes::copy_from_slice(data);
    let Ok(req) = decode_request(&frame, &supported) else {
        // Frame splitting must also hold up on the same bytes.
        let reader = FrameReader::new(1 << 16);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(f)) = reader.next_frame(&mut buf) {
            let _ = decode_request(&f, &supported);
        }
        return;
    };
    let v = req.api_version();
    let Ok(first) = encode_request(
        req.correlation_id(),
        req.header.client_id.as_deref(),
        v,
        &req.body,
    ) else {
        return;
    };
    let first = concat(&first);
    let again =
        decode_request(&first.slice(4..), &supported).expect("a re-encoded request must decode");
    let second = encode_request(
        again.correlation_id(),
        again.header.client_id.as_deref(),
        v,
        &again.body,
    )
    .expect("a decoded request must encode");
    assert_eq!(first, concat(&second), "encoding is not stable");
}

/// Fuzz hook for Ferry's own node-to-node messages
/// ([`crate::ferry_messages`]): the first byte picks the message (bit 0:
/// request or response; the rest: which API), and the remaining bytes are
/// its body at version 0. Whatever decodes must encode, and decode from
/// that to the same message. Panics only if the codec is wrong.
pub fn fuzz_ferry_message(data: &[u8]) {
    use crate::ferry_messages::{RequestBody as FerryRequest, ResponseBody as FerryResponse};
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let apis = crate::ferry_messages::APIS;
    let Some(api) = apis.get(usize::from(pick >> 1) % apis.len().max(1)) else {
        return;
    };
    let body = Bytes::copy_from_slice(body);
    if pick & 1 == 0 {
        let r = FerryRequest::decode_from(api.key, 0, &body, &body);
        let Ok((m, _)) = wire::finish(body.len(), r) else {
            return;
        };
        let mut w = Writer::new();
        m.encode(&mut w, 0)
            .expect("a decoded Ferry request must encode");
        let again = w.into_bytes();
        let r = FerryRequest::decode_from(api.key, 0, &again, &again);
        let (back, _) =
            wire::finish(again.len(), r).expect("a re-encoded Ferry request must decode");
        assert_eq!(m, back, "a Ferry request changed in a round trip");
    } else {
        let r = FerryResponse::decode_from(api.key, 0, &body, &body);
        let Ok((m, _)) = wire::finish(body.len(), r) else {
            return;
        };
        let mut w = Writer::new();
        m.encode(&mut w, 0)
            .expect("a decoded Ferry response must encode");
        let again = w.into_bytes();
        let r = FerryResponse::decode_from(api.key, 0, &again, &again);
        let (back, _) =
            wire::finish(again.len(), r).expect("a re-encoded Ferry response must decode");
        assert_eq!(m, back, "a Ferry response changed in a round trip");
    }
}

/// Joins segments into one buffer (for tests and tools, not the hot path).
pub fn concat(segs: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(segs.iter().map(Bytes::len).sum());
    for s in segs {
        out.extend_from_slice(s);
    }
    out.freeze()
}

/// Decodes a version-prefixed blob, as the consumer protocol's subscription
/// and assignment are sent inside JoinGroup and SyncGroup. A version newer
/// than the schema is read as the newest known one: those versions only
/// append fields, which is how Kafka itself reads them.
pub fn decode_versioned<M: Message>(blob: &Bytes) -> Result<(i16, M), DecodeError> {
    if blob.len() < 2 {
        return Err(DecodeError::Truncated {
            offset: blob.len(),
            what: "version prefix",
        });
    }
    let sent = i16::from_be_bytes([blob[0], blob[1]]);
    if sent < M::VERSIONS.min {
        return Err(DecodeError::UnsupportedVersion {
            message: M::NAME,
            version: sent,
        });
    }
    let v = sent.min(M::VERSIONS.max);
    let body = blob.slice(2..);
    let m = M::decode(&body, v).map_err(|e| match e {
        DecodeError::Truncated { offset, what } => DecodeError::Truncated {
            offset: offset + 2,
            what,
        },
        DecodeError::Invalid { offset, what } => DecodeError::Invalid {
            offset: offset + 2,
            what,
        },
        other => other,
    })?;
    Ok((sent, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::api_versions_request::ApiVersionsRequest;
    use crate::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};

    fn metadata_frame(version: i16) -> Bytes {
        let body = RequestBody::Metadata(MetadataRequest {
            topics: Some(vec![MetadataRequestTopic {
                name: Some("orders".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        concat(&encode_request(7, Some("app"), version, &body).unwrap())
    }

    #[test]
    fn frames_survive_any_split_of_the_input() {
        let one = metadata_frame(12);
        let two = metadata_frame(4);
        let mut stream = one.to_vec();
        stream.extend_from_slice(&two);
        let reader = FrameReader::new(1024);
        for chunk in 1..stream.len() {
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = reader.next_frame(&mut buf).unwrap() {
                    frames.push(f);
                }
            }
            assert_eq!(frames.len(), 2, "chunk size {chunk}");
            assert_eq!(frames[0], one.slice(4..));
            assert_eq!(frames[1], two.slice(4..));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn oversized_and_negative_frames_are_refused_from_the_prefix() {
        let reader = FrameReader::new(1000);
        let mut buf = BytesMut::from(&[0u8, 0, 3, 233][..]);
        assert_eq!(
            reader.next_frame(&mut buf),
            Err(FrameError::TooLarge {
                size: 1001,
                max: 1000
            })
        );
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xfe][..]);
        assert_eq!(
            reader.next_frame(&mut buf),
            Err(FrameError::Negative { size: -2 })
        );
        assert_eq!(reader.bytes_needed(&[0, 0]), Ok(2));
        assert_eq!(reader.bytes_needed(&[0, 0, 0, 10, 1]), Ok(9));
    }

    #[test]
    fn requests_dispatch_on_key_and_version() {
        let supported = SupportedApis::all();
        for v in [1, 4, 9, 12] {
            let frame = metadata_frame(v).slice(4..);
            let req = decode_request(&frame, &supported).unwrap();
            assert_eq!(req.api_key(), 3);
            assert_eq!(req.api_version(), v);
            assert_eq!(req.correlation_id(), 7);
            assert_eq!(req.header.client_id.as_deref(), Some("app"));
            let RequestBody::Metadata(m) = req.body else {
                panic!("not metadata")
            };
            assert_eq!(m.topics.unwrap()[0].name.as_deref(), Some("orders"));
        }
    }

    #[test]
    fn header_versions_follow_kafka_rules() {
        assert_eq!(request_header_version(0, 8), 1); // Produce v8: classic
        assert_eq!(request_header_version(0, 9), 2); // Produce v9: flexible
        assert_eq!(request_header_version(7, 0), 0); // ControlledShutdown v0
        assert_eq!(response_header_version(18, 3), 0); // ApiVersions: always v0
        assert_eq!(response_header_version(3, 9), 1);
        assert_eq!(response_header_version(3, 8), 0);
    }

    #[test]
    fn unknown_api_versions_version_gets_a_v0_answer_with_the_ranges() {
        let supported = SupportedApis::new([
            (18, VersionRange { min: 0, max: 3 }),
            (3, VersionRange { min: 0, max: 12 }),
        ]);
        // A client's ApiVersions v9, whose header we cannot know.
        let mut frame = vec![0, 18, 0, 9, 0, 0, 0, 42];
        frame.extend_from_slice(b"\x00\x03abc\x00garbage of a future version");
        let err = decode_request(&Bytes::from(frame), &supported).unwrap_err();
        assert!(matches!(
            err,
            RequestError::UnsupportedVersion {
                api_key: 18,
                version: 9,
                correlation_id: 42
            }
        ));
        let answer = concat(&err.answer(&supported).expect("ApiVersions is answered"));
        let size = u32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]) as usize;
        assert_eq!(size, answer.len() - 4);
        assert_eq!(&answer[4..8], &42i32.to_be_bytes());
        let body = ApiVersionsResponse::decode(&answer.slice(8..), 0).unwrap();
        assert_eq!(body.error_code, 35);
        assert_eq!(body.api_keys.len(), 2);
        assert_eq!(
            (body.api_keys[0].api_key, body.api_keys[0].max_version),
            (3, 12)
        );
        assert_eq!(
            (body.api_keys[1].api_key, body.api_keys[1].max_version),
            (18, 3)
        );
        // Other APIs at unsupported versions get no answer: the connection closes.
        let mut frame = vec![0, 3, 0, 13, 0, 0, 0, 1];
        frame.extend_from_slice(&[0; 8]);
        let err = decode_request(&Bytes::from(frame), &supported).unwrap_err();
        assert!(err.answer(&supported).is_none());
    }

    #[test]
    fn api_versions_v3_request_decodes_its_flexible_header() {
        let body = RequestBody::ApiVersions(ApiVersionsRequest {
            client_software_name: "ferry-test".into(),
            client_software_version: "1.0".into(),
            ..Default::default()
        });
        let frame = concat(&encode_request(1, Some("c"), 3, &body).unwrap());
        // size, key 18, version 3, correlation 1, client id "c" (classic
        // string even in header v2), empty tagged fields, then the body.
        assert_eq!(&frame[4..15], &[0, 18, 0, 3, 0, 0, 0, 1, 0, 1, b'c']);
        assert_eq!(frame[15], 0);
        let req = decode_request(&frame.slice(4..), &SupportedApis::all()).unwrap();
        assert_eq!(req.body, body);
    }

    #[test]
    fn produce_records_are_views_of_the_frame_not_copies() {
        use crate::messages::produce_request::*;
        let records = Bytes::from(vec![0xabu8; 10_000]);
        let body = RequestBody::Produce(ProduceRequest {
            acks: -1,
            topic_data: vec![TopicProduceData {
                name: "t".into(),
                partition_data: vec![PartitionProduceData {
                    index: 3,
                    records: Some(records.clone().into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        for v in [3, 8, 9, 11] {
            let frame = concat(&encode_request(1, Some("p"), v, &body).unwrap()).slice(4..);
            let req = decode_request(&frame, &SupportedApis::all()).unwrap();
            let RequestBody::Produce(p) = req.body else {
                panic!("not produce")
            };
            let got = p.topic_data[0].partition_data[0]
                .records
                .as_ref()
                .unwrap()
                .to_bytes();
            assert_eq!(got, records);
            let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
            assert!(
                range.contains(&(got.as_ptr() as usize)),
                "v{v}: records were copied"
            );
            let name_at = p.topic_data[0].name.as_bytes().as_ptr() as usize;
            assert!(range.contains(&name_at), "v{v}: topic name was copied");
        }
    }

    #[test]
    fn fuzz_hook_accepts_valid_and_garbage_input() {
        fuzz_request(&metadata_frame(12).slice(4..));
        fuzz_request(&[]);
        fuzz_request(&[0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff]);
    }
}
