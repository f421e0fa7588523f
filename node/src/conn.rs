//! One client connection, on the shard that accepted it.
//!
//! The reader cuts frames (refusing any larger than
//! `socket.request.max.bytes` from the size prefix alone), decodes each and
//! spawns its handler at once, so a client's pipelined requests are worked on
//! together. The writer awaits the handlers in the order the requests came
//! and writes each response as segments, so responses leave in request
//! order, as Kafka clients require. At most `INFLIGHT_REQUESTS_MAX` requests
//! per connection are in flight; beyond that the reader waits.

use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use ferry_protocol::frame::{self, FrameReader};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

/// Requests one connection may have in flight.
pub const INFLIGHT_REQUESTS_MAX: usize = 64;
/// Most bytes one read asks for. The read buffer is zeroed before each read
/// (safe Rust cannot read into uninitialised memory), so only this much is
/// zeroed per read, never the rest of a large frame again and again.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Fewest bytes one read asks for.
const READ_CHUNK_BYTES_MIN: usize = 4 * 1024;

/// How much to read at a time, from the frames seen so far: about four
/// frames' worth. Frames are cut from the read buffer without a copy and
/// cached batches keep their buffer alive, so reading far more than the
/// frames a client sends would let a small cached batch pin a large buffer.
fn read_chunk(frame_bytes_avg: usize) -> usize {
    (frame_bytes_avg * 4).clamp(READ_CHUNK_BYTES_MIN, READ_CHUNK_BYTES)
}

/// What the writer is given per request: the response segments, or `None`
/// for no response (acks=0), or an instruction to close.
enum Out {
    Respond(glommio::Task<Option<Vec<Bytes>>>),
    Close,
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    shard.ctx.metrics.connection(shard.id, 1);
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<Out>(INFLIGHT_REQUESTS_MAX);
    let metrics_shard = shard.clone();
    let writer = glommio::spawn_local(async move {
        while let Some(out) = rx.recv().await {
            let handle = match out {
                Out::Respond(h) => h,
                Out::Close => break,
            };
            let Some(segs) = handle.await else { continue };
            let mut n = 0;
            for s in &segs {
                if wr.write_all(s).await.is_err() {
                    return;
                }
                n += s.len();
            }
            metrics_shard
                .ctx
                .metrics
                .bytes_out
                .fetch_add(n as u64, Relaxed);
        }
        let _ = wr.close().await;
    });
    let reader = FrameReader::new(shard.ctx.frame_bytes_max);
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES_MIN);
    // A running average of frame sizes on this connection.
    let mut frame_bytes_avg = READ_CHUNK_BYTES_MIN;
    'conn: loop {
        // Reserve what the next frame needs, once its size is known and
        // checked; a small read buffer otherwise.
        let need = match reader.bytes_needed(&buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(peer = ?peer, error = %e, "closing connection");
                break;
            }
        };
        if need > 0 {
            let chunk = read_chunk(frame_bytes_avg);
            buf.reserve(need.max(chunk));
            let len = buf.len();
            let end = buf
                .capacity()
                .min(len + need.max(chunk).min(READ_CHUNK_BYTES));
            buf.resize(end, 0);
            let n = match rd.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => {
                    buf.truncate(len);
                    break;
                }
                Ok(n) => n,
            };
            buf.truncate(len + n);
            shard.ctx.metrics.bytes_in.fetch_add(n as u64, Relaxed);
        }
        loop {
            let f = match reader.next_frame(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(peer = ?peer, error = %e, "closing connection");
                    break 'conn;
                }
            };
            frame_bytes_avg = (frame_bytes_avg * 7 + f.len()) / 8;
            let req = match frame::decode_request(&f, &shard.ctx.supported) {
                Ok(r) => r,
                Err(e) => {
                    if let Some(answer) = e.answer(&shard.ctx.supported) {
                        let h = glommio::spawn_local(async move { Some(answer) });
                        if tx.send(Out::Respond(h)).await.is_err() {
                            break 'conn;
                        }
                        continue;
                    }
                    tracing::info!(peer = ?peer, error = %e, "undecodable request, closing connection");
                    break 'conn;
                }
            };
            shard.ctx.metrics.request(req.api_key());
            let sh = shard.clone();
            let h = glommio::spawn_local(async move {
                let correlation_id = req.correlation_id();
                let version = req.api_version();
                let body = crate::api::handle(&sh, req, peer).await?;
                match frame::encode_response(correlation_id, version, &body) {
                    Ok(segs) => Some(segs),
                    Err(e) => {
                        tracing::error!(error = %e, "response could not be encoded");
                        None
                    }
                }
            });
            if tx.send(Out::Respond(h)).await.is_err() {
                break 'conn;
            }
        }
    }
    let _ = tx.send(Out::Close).await;
    drop(tx);
    writer.await;
    shard.ctx.metrics.connection(shard.id, -1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_follow_the_frames_a_client_sends() {
        assert_eq!(read_chunk(100), READ_CHUNK_BYTES_MIN);
        assert_eq!(read_chunk(16 * 1024), 64 * 1024);
        assert_eq!(read_chunk(1 << 20), READ_CHUNK_BYTES);
    }
}
