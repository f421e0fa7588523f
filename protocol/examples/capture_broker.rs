//! A stand-in broker that records the exact request frames real clients
//! send, for the golden-bytes tests (`tests/golden/`).
//!
//! It answers just enough for a producer, a group consumer and an admin
//! client to go through their normal sequence: it is node 0 at its own
//! address, leads partition 0 of every topic, accepts every write, makes
//! each joining member the group leader and returns empty fetches. Every
//! request frame, without its size prefix, is written to
//! `OUT/<client_id>/<NNN>-<ApiName>-v<version>.bin`.
//!
//! Usage: `capture_broker --listen 127.0.0.1:0 --out DIR`; the first line it
//! prints is `listening ADDR`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use ferry_protocol::frame::{self, FrameReader, SupportedApis};
use ferry_protocol::messages::*;
use ferry_protocol::wire::{KStr, Uuid, VersionRange};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut out = PathBuf::from("captured");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--out" => out = args.next().expect("--out DIR").into(),
            other => panic!("unknown argument {other}"),
        }
    }
    let listener = TcpListener::bind(&listen).expect("bind");
    let addr = listener.local_addr().unwrap();
    println!("listening {addr}");
    std::io::stdout().flush().unwrap();
    // Advertise every stable version the schemas define, except client
    // telemetry (KIP-714), which librdkafka would otherwise poll for.
    let supported = Arc::new(SupportedApis::new(
        APIS.iter().filter(|a| !matches!(a.key, 71 | 72)).map(|a| {
            let max = if a.latest_version_unstable {
                a.versions.max - 1
            } else {
                a.versions.max
            };
            (
                a.key,
                VersionRange {
                    min: a.versions.min,
                    max,
                },
            )
        }),
    ));
    let seq = Arc::new(AtomicU32::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (out, supported, seq) = (out.clone(), supported.clone(), seq.clone());
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, addr, &out, &supported, &seq) {
                eprintln!("connection ended: {e}");
            }
        });
    }
}

fn serve(
    mut conn: TcpStream,
    addr: SocketAddr,
    out: &std::path::Path,
    supported: &SupportedApis,
    seq: &AtomicU32,
) -> std::io::Result<()> {
    let reader = FrameReader::new(frame::FRAME_BYTES_MAX_DEFAULT);
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(f) = reader.next_frame(&mut buf).map_err(std::io::Error::other)? {
            let req = match frame::decode_request(&f, supported) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("undecodable request: {e}");
                    if let Some(answer) = e.answer(supported) {
                        write_all(&mut conn, &answer)?;
                        continue;
                    }
                    return Ok(());
                }
            };
            let name = APIS
                .iter()
                .find(|a| a.key == req.api_key())
                .map_or("Unknown", |a| a.name);
            let client = req
                .header
                .client_id
                .as_deref()
                .unwrap_or("no-client-id")
                .replace(['/', '.'], "_");
            let dir = out.join(&client);
            std::fs::create_dir_all(&dir)?;
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let file = dir.join(format!("{n:04}-{name}-v{}.bin", req.api_version()));
            std::fs::write(&file, &f)?;
            eprintln!("captured {}", file.display());
            let v = req.api_version();
            let Some(body) = answer(req.body, addr, supported) else {
                continue; // acks=0 produce
            };
            let segs = frame::encode_response(req.header.correlation_id, v, &body)
                .map_err(std::io::Error::other)?;
            write_all(&mut conn, &segs)?;
        }
    }
}

fn write_all(conn: &mut TcpStream, segs: &[Bytes]) -> std::io::Result<()> {
    conn.write_all(&frame::concat(segs))
}

fn s(x: &str) -> KStr {
    x.into()
}

fn answer(body: RequestBody, addr: SocketAddr, supported: &SupportedApis) -> Option<ResponseBody> {
    let host = s(&addr.ip().to_string());
    let port = i32::from(addr.port());
    Some(match body {
        RequestBody::ApiVersions(_) => {
            ResponseBody::ApiVersions(api_versions_response::ApiVersionsResponse {
                api_keys: supported.api_versions(),
                ..Default::default()
            })
        }
        RequestBody::Metadata(m) => {
            let names: Vec<KStr> = match m.topics {
                Some(t) if !t.is_empty() => t.into_iter().filter_map(|t| t.name).collect(),
                _ => vec![s("golden-topic")],
            };
            use metadata_response::*;
            ResponseBody::Metadata(MetadataResponse {
                brokers: vec![MetadataResponseBroker {
                    node_id: 0,
                    host,
                    port,
                    ..Default::default()
                }],
                cluster_id: Some(s("golden-cluster")),
                controller_id: 0,
                topics: names
                    .into_iter()
                    .enumerate()
                    .map(|(i, name)| MetadataResponseTopic {
                        name: Some(name),
                        topic_id: Uuid([i as u8 + 1; 16]),
                        partitions: vec![MetadataResponsePartition {
                            partition_index: 0,
                            leader_id: 0,
                            leader_epoch: 0,
                            replica_nodes: vec![0],
                            isr_nodes: vec![0],
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::Produce(p) => {
            if p.acks == 0 {
                return None;
            }
            use produce_response::*;
            ResponseBody::Produce(ProduceResponse {
                responses: p
                    .topic_data
                    .into_iter()
                    .map(|t| TopicProduceResponse {
                        name: t.name,
                        partition_responses: t
                            .partition_data
                            .into_iter()
                            .map(|pd| PartitionProduceResponse {
                                index: pd.index,
                                base_offset: 0,
                                log_append_time_ms: -1,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::FindCoordinator(f) => {
            use find_coordinator_response::*;
            let keys = if f.coordinator_keys.is_empty() {
                vec![f.key]
            } else {
                f.coordinator_keys
            };
            ResponseBody::FindCoordinator(FindCoordinatorResponse {
                node_id: 0,
                host: host.clone(),
                port,
                coordinators: keys
                    .into_iter()
                    .map(|key| Coordinator {
                        key,
                        node_id: 0,
                        host: host.clone(),
                        port,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::JoinGroup(j) => {
            use join_group_response::*;
            let member_id = if j.member_id.is_empty() {
                s("golden-member-1")
            } else {
                j.member_id
            };
            let proto = j.protocols.into_iter().next().unwrap_or_default();
            ResponseBody::JoinGroup(JoinGroupResponse {
                generation_id: 1,
                protocol_type: Some(j.protocol_type),
                protocol_name: Some(proto.name),
                leader: member_id.clone(),
                member_id: member_id.clone(),
                members: vec![JoinGroupResponseMember {
                    member_id,
                    metadata: proto.metadata,
                    ..Default::default()
                }],
                ..Default::default()
            })
        }
        RequestBody::SyncGroup(sg) => {
            let mine = sg
                .assignments
                .iter()
                .find(|a| a.member_id == sg.member_id)
                .map(|a| a.assignment.clone())
                .unwrap_or_default();
            ResponseBody::SyncGroup(sync_group_response::SyncGroupResponse {
                protocol_type: sg.protocol_type,
                protocol_name: sg.protocol_name,
                assignment: mine,
                ..Default::default()
            })
        }
        RequestBody::OffsetFetch(o) => {
            use offset_fetch_response::*;
            let partitions = |ids: Vec<i32>| {
                ids.into_iter()
                    .map(|p| OffsetFetchResponsePartitions {
                        partition_index: p,
                        committed_offset: -1,
                        committed_leader_epoch: -1,
                        metadata: Some(s("")),
                        ..Default::default()
                    })
                    .collect()
            };
            let old = o
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| OffsetFetchResponseTopic {
                    name: t.name,
                    partitions: t
                        .partition_indexes
                        .into_iter()
                        .map(|p| OffsetFetchResponsePartition {
                            partition_index: p,
                            committed_offset: -1,
                            committed_leader_epoch: -1,
                            metadata: Some(s("")),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                });
            ResponseBody::OffsetFetch(OffsetFetchResponse {
                topics: old.collect(),
                groups: o
                    .groups
                    .into_iter()
                    .map(|g| OffsetFetchResponseGroup {
                        group_id: g.group_id,
                        topics: g
                            .topics
                            .unwrap_or_default()
                            .into_iter()
                            .map(|t| OffsetFetchResponseTopics {
                                name: t.name,
                                partitions: partitions(t.partition_indexes),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::ListOffsets(l) => {
            use list_offsets_response::*;
            ResponseBody::ListOffsets(ListOffsetsResponse {
                topics: l
                    .topics
                    .into_iter()
                    .map(|t| ListOffsetsTopicResponse {
                        name: t.name,
                        partitions: t
                            .partitions
                            .into_iter()
                            .map(|p| ListOffsetsPartitionResponse {
                                partition_index: p.partition_index,
                                old_style_offsets: vec![0],
                                timestamp: -1,
                                offset: 0,
                                leader_epoch: 0,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::Fetch(f) => {
            use fetch_response::*;
            // Hold the fetch as a long poll would, so clients do not spin.
            std::thread::sleep(Duration::from_millis(f.max_wait_ms.clamp(0, 200) as u64));
            ResponseBody::Fetch(FetchResponse {
                responses: f
                    .topics
                    .into_iter()
                    .map(|t| FetchableTopicResponse {
                        topic: t.topic,
                        topic_id: t.topic_id,
                        partitions: t
                            .partitions
                            .into_iter()
                            .map(|p| PartitionData {
                                partition_index: p.partition,
                                high_watermark: 0,
                                last_stable_offset: 0,
                                log_start_offset: 0,
                                records: Some(Default::default()),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::OffsetCommit(o) => {
            use offset_commit_response::*;
            ResponseBody::OffsetCommit(OffsetCommitResponse {
                topics: o
                    .topics
                    .into_iter()
                    .map(|t| OffsetCommitResponseTopic {
                        name: t.name,
                        partitions: t
                            .partitions
                            .into_iter()
                            .map(|p| OffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::CreateTopics(c) => {
            use create_topics_response::*;
            ResponseBody::CreateTopics(CreateTopicsResponse {
                topics: c
                    .topics
                    .into_iter()
                    .map(|t| CreatableTopicResult {
                        name: t.name,
                        topic_id: Uuid([9; 16]),
                        num_partitions: 1,
                        replication_factor: 1,
                        configs: Some(vec![]),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        RequestBody::InitProducerId(_) => {
            ResponseBody::InitProducerId(init_producer_id_response::InitProducerIdResponse {
                producer_id: 1000,
                producer_epoch: 0,
                ..Default::default()
            })
        }
        RequestBody::LeaveGroup(l) => {
            use leave_group_response::*;
            ResponseBody::LeaveGroup(LeaveGroupResponse {
                members: l
                    .members
                    .into_iter()
                    .map(|m| MemberResponse {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        other => ResponseBody::default_for(other.api_key())?,
    })
}
