//! Accepting gRPC clients that send the Unix socket's path as the HTTP/2 `:authority`.
//!
//! Several widely used gRPC clients (grpcurl before 1.9, grpc-java, Python's grpcio) put the
//! socket path in `:authority` when they dial a Unix socket. The HTTP/2 library under tonic
//! rejects such a request as malformed (RST_STREAM, PROTOCOL_ERROR) before any of our code
//! runs (hyperium/h2#487). So each Unix connection passes through this small relay: frames
//! from the server go to the client unchanged; in frames from the client every header block
//! is decoded with the client's HPACK context, an `:authority` that is not a valid URI
//! authority becomes `localhost` (what grpc-go and Kubernetes use for Unix sockets), and the
//! block is re-encoded with the relay's own HPACK context, which the server decodes. Header
//! blocks are tiny next to the payloads, which are copied untouched.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::UnixStream;
use tonic::codegen::http::uri::Authority;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Largest frame payload a peer may send before settings say otherwise (RFC 9113 4.2),
/// which is also what we emit at most.
const DEFAULT_MAX_FRAME: usize = 16_384;
/// Largest frame the relay accepts from a client (the protocol's absolute maximum).
const MAX_FRAME: usize = (1 << 24) - 1;

/// Starts relaying `client` and returns the stream to hand to the gRPC server.
pub fn relay(client: UnixStream) -> DuplexStream {
    let (server_side, relay_side) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (from_client, mut to_client) = client.into_split();
        // Frames are read a header and a payload at a time: buffered, a big request (a
        // half-MB flow file) takes a few reads of 64 KiB, not two system calls per frame.
        let mut from_client = tokio::io::BufReader::with_capacity(64 * 1024, from_client);
        let (mut from_server, mut to_server) = tokio::io::split(relay_side);
        let up = async {
            let r = rewrite_client_frames(&mut from_client, &mut to_server).await;
            let _ = to_server.shutdown().await;
            r
        };
        let down = async {
            let r = tokio::io::copy(&mut from_server, &mut to_client).await;
            let _ = to_client.shutdown().await;
            r
        };
        if let (Err(e), _) | (_, Err(e)) = tokio::join!(up, down) {
            tracing::debug!("unix API connection ended: {e}");
        }
    });
    server_side
}

/// A header block being collected from HEADERS and CONTINUATION frames.
struct PendingBlock {
    stream: u32,
    /// Flags of the HEADERS frame, without PADDED (padding is dropped) and END_HEADERS.
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2 from client: {what}"))
}

/// Copies client frames to the server, rewriting header blocks (see the module doc).
pub async fn rewrite_client_frames<R, W>(r: &mut R, w: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    r.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(protocol_error("no connection preface"));
    }
    w.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut encoder = loona_hpack::Encoder::new();
    let mut pending: Option<PendingBlock> = None;
    loop {
        let mut head = [0u8; 9];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        if len > MAX_FRAME {
            return Err(protocol_error("frame too large"));
        }
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        match kind {
            FRAME_HEADERS if pending.is_none() => {
                let mut body = &payload[..];
                let mut pad = 0usize;
                if flags & FLAG_PADDED != 0 {
                    let (&p, rest) = body.split_first().ok_or_else(|| protocol_error("short HEADERS"))?;
                    pad = p as usize;
                    body = rest;
                }
                let mut priority = None;
                if flags & FLAG_PRIORITY != 0 {
                    let p: [u8; 5] =
                        body.get(..5).and_then(|p| p.try_into().ok()).ok_or_else(|| protocol_error("short HEADERS"))?;
                    priority = Some(p);
                    body = &body[5..];
                }
                let fragment = body
                    .get(..body.len().checked_sub(pad).ok_or_else(|| protocol_error("bad padding"))?)
                    .unwrap_or(&[]);
                let block = PendingBlock {
                    stream,
                    flags: flags & !(FLAG_PADDED | FLAG_END_HEADERS),
                    priority,
                    block: fragment.to_vec(),
                };
                if flags & FLAG_END_HEADERS != 0 {
                    write_block(w, &mut decoder, &mut encoder, block).await?;
                } else {
                    pending = Some(block);
                }
            }
            FRAME_CONTINUATION if pending.as_ref().is_some_and(|p| p.stream == stream) => {
                let mut block = pending.take().expect("checked");
                block.block.extend_from_slice(&payload);
                if flags & FLAG_END_HEADERS != 0 {
                    write_block(w, &mut decoder, &mut encoder, block).await?;
                } else {
                    pending = Some(block);
                }
            }
            _ if pending.is_some() => {
                // RFC 9113 6.10: nothing may interleave a header block.
                return Err(protocol_error("frame inside a header block"));
            }
            _ => {
                w.write_all(&head).await?;
                w.write_all(&payload).await?;
            }
        }
    }
}

async fn write_block<W: AsyncWrite + Unpin>(
    w: &mut W,
    decoder: &mut loona_hpack::Decoder<'_>,
    encoder: &mut loona_hpack::Encoder<'_>,
    block: PendingBlock,
) -> io::Result<()> {
    let mut headers = decoder.decode(&block.block).map_err(|e| protocol_error(&format!("HPACK: {e:?}")))?;
    for (name, value) in headers.iter_mut() {
        if name.as_slice() == b":authority" && Authority::try_from(value.as_slice()).is_err() {
            *value = b"localhost".to_vec();
        }
    }
    let encoded = encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    let mut first = Vec::with_capacity(5 + encoded.len().min(DEFAULT_MAX_FRAME));
    let mut flags = block.flags;
    if let Some(p) = block.priority {
        first.extend_from_slice(&p);
    }
    let room = DEFAULT_MAX_FRAME - first.len();
    let (head_part, mut rest) = encoded.split_at(encoded.len().min(room));
    first.extend_from_slice(head_part);
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    write_frame(w, FRAME_HEADERS, flags, block.stream, &first).await?;
    while !rest.is_empty() {
        let (part, tail) = rest.split_at(rest.len().min(DEFAULT_MAX_FRAME));
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame(w, FRAME_CONTINUATION, flags, block.stream, part).await?;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    w.write_all(&[len[1], len[2], len[3], kind, flags, s[0], s[1], s[2], s[3]]).await?;
    w.write_all(payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let s = stream.to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, s[0], s[1], s[2], s[3]];
        f.extend_from_slice(payload);
        f
    }

    /// Splits relay output into (kind, flags, stream, payload) frames after the preface.
    fn frames(mut out: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&out[..24], PREFACE);
        out = &out[24..];
        let mut v = Vec::new();
        while !out.is_empty() {
            let len = u32::from_be_bytes([0, out[0], out[1], out[2]]) as usize;
            let stream = u32::from_be_bytes([out[5], out[6], out[7], out[8]]);
            v.push((out[3], out[4], stream, out[9..9 + len].to_vec()));
            out = &out[9 + len..];
        }
        v
    }

    async fn relay_bytes(input: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        rewrite_client_frames(&mut &input[..], &mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let mut client = loona_hpack::Encoder::new();
        let req = |authority: &'static [u8]| {
            vec![
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", b"/vswitch.v1.PortService/ListPorts"),
                (b":authority", authority),
                (b"content-type", b"application/grpc"),
            ]
        };
        let block1 = client.encode(req(b"/run/vswitch/vswitchd.sock"));
        // The second request's headers come largely from the client's dynamic table.
        let block2 = client.encode(req(b"/run/vswitch/vswitchd.sock"));
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                             // Request 1: padded HEADERS split over a CONTINUATION.
        let (a, b) = block1.split_at(block1.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(FRAME_HEADERS, FLAG_PADDED, 1, &padded));
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, b));
        input.extend(frame(0x0, 0x1, 1, b"\0\0\0\0\0")); // DATA, END_STREAM
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS | 0x1, 3, &block2));

        let out = frames(&relay_bytes(input).await.unwrap());
        let kinds: Vec<(u8, u8, u32)> = out.iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(
            kinds,
            vec![
                (0x4, 0, 0),
                (FRAME_HEADERS, FLAG_END_HEADERS, 1),
                (0x0, 0x1, 1),
                (FRAME_HEADERS, FLAG_END_HEADERS | 0x1, 3)
            ]
        );
        assert_eq!(out[2].3, b"\0\0\0\0\0");
        let mut server = loona_hpack::Decoder::new();
        for i in [1, 3] {
            let headers = server.decode(&out[i].3).unwrap();
            let get = |n: &[u8]| headers.iter().find(|h| h.0 == n).map(|h| h.1.clone()).unwrap();
            assert_eq!(get(b":authority"), b"localhost");
            assert_eq!(get(b":path"), b"/vswitch.v1.PortService/ListPorts");
            assert_eq!(get(b"content-type"), b"application/grpc");
        }
    }

    #[tokio::test]
    async fn valid_authority_is_kept() {
        let block = loona_hpack::Encoder::new().encode(vec![(&b":authority"[..], &b"localhost:50051"[..])]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
        let out = frames(&relay_bytes(input).await.unwrap());
        let headers = loona_hpack::Decoder::new().decode(&out[0].3).unwrap();
        assert_eq!(headers, vec![(b":authority".to_vec(), b"localhost:50051".to_vec())]);
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        assert!(relay_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await.is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, b"x")); // DATA inside an open header block
        assert!(relay_bytes(input).await.is_err());
    }
}
