//! Accepting gRPC clients that send the Unix socket's path as the HTTP/2 `:authority`.
//!
//! Several widely used gRPC clients (grpcurl before 1.9, grpc-java, Python's grpcio) put the
//! socket path in `:authority` when they dial a Unix socket. The HTTP/2 library under tonic
//! rejects such a request as malformed (RST_STREAM, PROTOCOL_ERROR) before any of our code
//! runs (hyperium/h2#487). So the server reads each Unix connection through a rewriter: frames
//! from the server go to the client unchanged; in frames from the client every header block
//! is decoded with the client's HPACK context, an `:authority` that is not a valid URI
//! authority becomes `localhost` (what grpc-go and Kubernetes use for Unix sockets), and the
//! block is re-encoded with the rewriter's own HPACK context, which the server decodes.
//! Header blocks are tiny next to the payloads, which pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, BufReader, ReadBuf};
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
/// Read buffer: a big request (a half-MB flow file) takes a few reads of 64 KiB, not two
/// system calls per frame.
const READ_BUFFER: usize = 64 * 1024;

/// A Unix connection as the gRPC server sees it: what the client sends, with every header
/// block rewritten (see the module doc) and every other frame passed through as it is
/// read; what the server writes goes straight to the client.
///
/// The rewriting happens inside the server's own reads: no task and no pipe between the
/// socket and the server, and payloads are copied once, out of the read buffer (a relay
/// task with a pipe copied them three times).
pub struct AuthorityRewriting<S> {
    io: BufReader<S>,
    phase: Phase,
    /// Bytes of the frame part being collected (`collecting` says how many).
    collected: Vec<u8>,
    /// Bytes ready for the server: the preface, frame headers and rewritten header blocks.
    out: Vec<u8>,
    out_at: usize,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    pending: Option<PendingBlock>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preface,
    FrameHead,
    /// The payload of a frame that takes part in a header block (`head` is its header).
    BlockPayload {
        head: [u8; 9],
    },
    /// The payload of any other frame: passed through, `left` bytes of it still to come.
    Passing {
        left: usize,
    },
}

impl<S: AsyncRead + Unpin> AuthorityRewriting<S> {
    pub fn new(client: S) -> Self {
        AuthorityRewriting {
            io: BufReader::with_capacity(READ_BUFFER, client),
            phase: Phase::Preface,
            collected: Vec::with_capacity(PREFACE.len()),
            out: Vec::new(),
            out_at: 0,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
            pending: None,
        }
    }

    /// How many bytes the current phase collects before `step`; None while a frame's
    /// payload passes through.
    fn collecting(&self) -> Option<usize> {
        match self.phase {
            Phase::Preface => Some(PREFACE.len()),
            Phase::FrameHead => Some(9),
            Phase::BlockPayload { head } => Some(frame_len(&head)),
            Phase::Passing { .. } => None,
        }
    }

    /// Acts on a complete preface, frame header or header-block payload in `collected`,
    /// whose buffer is kept for the next.
    fn step(&mut self) -> io::Result<()> {
        let part = std::mem::take(&mut self.collected);
        let result = self.act_on(&part);
        self.collected = part;
        self.collected.clear();
        result
    }

    fn act_on(&mut self, part: &[u8]) -> io::Result<()> {
        match self.phase {
            Phase::Preface => {
                if part != PREFACE {
                    return Err(protocol_error("no connection preface"));
                }
                self.out.extend_from_slice(PREFACE);
                self.phase = Phase::FrameHead;
            }
            Phase::FrameHead => {
                // 24 bits of length: 16 MiB at most, the protocol's own limit.
                let head: [u8; 9] = part.try_into().expect("9 bytes collected");
                let kind = head[3];
                if kind == FRAME_HEADERS || kind == FRAME_CONTINUATION || self.pending.is_some() {
                    self.phase = Phase::BlockPayload { head };
                } else {
                    self.out.extend_from_slice(&head);
                    // An empty payload (SETTINGS ACK, say) has nothing to pass.
                    self.phase = match frame_len(&head) {
                        0 => Phase::FrameHead,
                        left => Phase::Passing { left },
                    };
                }
            }
            Phase::BlockPayload { head } => {
                self.block_frame(&head, part)?;
                self.phase = Phase::FrameHead;
            }
            Phase::Passing { .. } => unreachable!("passing frames are not collected"),
        }
        Ok(())
    }

    /// A HEADERS or CONTINUATION frame, or any frame while a header block is open.
    fn block_frame(&mut self, head: &[u8; 9], payload: &[u8]) -> io::Result<()> {
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let block = match (kind, self.pending.take()) {
            (FRAME_HEADERS, None) => headers_fragment(flags, stream, payload)?,
            (FRAME_CONTINUATION, Some(mut block)) if block.stream == stream => {
                block.block.extend_from_slice(payload);
                block
            }
            // RFC 9113 6.10: nothing may interleave a header block.
            (_, Some(_)) => return Err(protocol_error("frame inside a header block")),
            (_, None) => return Err(protocol_error("CONTINUATION without HEADERS")),
        };
        if flags & FLAG_END_HEADERS != 0 {
            write_block(&mut self.out, &mut self.decoder, &mut self.encoder, block)?;
        } else {
            self.pending = Some(block);
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRewriting<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.out_at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_at);
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let want = this.collecting();
            if want == Some(this.collected.len()) {
                // Complete (an empty HEADERS or CONTINUATION payload is, as it is).
                this.step()?;
                continue;
            }
            let available = ready!(Pin::new(&mut this.io).poll_fill_buf(cx))?;
            let Some(want) = want else {
                let Phase::Passing { left } = this.phase else { unreachable!("only passing collects nothing") };
                if available.is_empty() {
                    return Poll::Ready(Err(protocol_error("connection closed inside a frame")));
                }
                let n = left.min(available.len()).min(buf.remaining());
                buf.put_slice(&available[..n]);
                Pin::new(&mut this.io).consume(n);
                this.phase = if n == left { Phase::FrameHead } else { Phase::Passing { left: left - n } };
                return Poll::Ready(Ok(()));
            };
            if available.is_empty() {
                // The client is done: at a frame boundary, outside a header block, that is
                // the end of the stream.
                return if this.phase == Phase::FrameHead && this.collected.is_empty() && this.pending.is_none() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(protocol_error("connection closed inside a frame")))
                };
            }
            let n = (want - this.collected.len()).min(available.len());
            this.collected.extend_from_slice(&available[..n]);
            Pin::new(&mut this.io).consume(n);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AuthorityRewriting<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for AuthorityRewriting<UnixStream> {
    type ConnectInfo = <UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.get_ref().connect_info()
    }
}

fn frame_len(head: &[u8; 9]) -> usize {
    u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize
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

/// The header block fragment of a HEADERS frame's payload, without padding and priority.
fn headers_fragment(flags: u8, stream: u32, payload: &[u8]) -> io::Result<PendingBlock> {
    let mut body = payload;
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
    let fragment = body.get(..body.len().checked_sub(pad).ok_or_else(|| protocol_error("bad padding"))?).unwrap_or(&[]);
    Ok(PendingBlock { stream, flags: flags & !(FLAG_PADDED | FLAG_END_HEADERS), priority, block: fragment.to_vec() })
}

/// Appends `block` to `out` as HEADERS (and CONTINUATION) frames, its `:authority` made
/// valid.
fn write_block(
    out: &mut Vec<u8>,
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
    write_frame(out, FRAME_HEADERS, flags, block.stream, &first);
    while !rest.is_empty() {
        let (part, tail) = rest.split_at(rest.len().min(DEFAULT_MAX_FRAME));
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame(out, FRAME_CONTINUATION, flags, block.stream, part);
    }
    Ok(())
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = (payload.len() as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags, s[0], s[1], s[2], s[3]]);
    out.extend_from_slice(payload);
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

    /// Splits rewriter output into (kind, flags, stream, payload) frames after the preface.
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

    async fn rewritten(input: Vec<u8>) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        AuthorityRewriting::new(&input[..]).read_to_end(&mut out).await?;
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

        let out = frames(&rewritten(input).await.unwrap());
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
        let out = frames(&rewritten(input).await.unwrap());
        let headers = loona_hpack::Decoder::new().decode(&out[0].3).unwrap();
        assert_eq!(headers, vec![(b":authority".to_vec(), b"localhost:50051".to_vec())]);
    }

    /// A client whose bytes arrive one at a time.
    struct Trickle<'a>(&'a [u8]);

    impl AsyncRead for Trickle<'_> {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            if let Some((first, rest)) = self.0.split_first() {
                buf.put_slice(&[*first]);
                self.0 = rest;
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_pass_whole_however_the_bytes_arrive_and_are_read() {
        let block = loona_hpack::Encoder::new().encode(vec![(&b":authority"[..], &b"/run/x.sock"[..])]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0x1, 0, &[])); // SETTINGS ACK: an empty payload
        input.extend(frame(0x8, 0, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE
        input.extend(frame(FRAME_HEADERS, 0, 1, &[])); // an empty fragment, continued
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &block));
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        input.extend(frame(0x0, 0x1, 1, &data));
        // Read three bytes at a time from a client that sends one at a time.
        let mut reader = AuthorityRewriting::new(Trickle(&input));
        let mut out = Vec::new();
        let mut chunk = [0u8; 3];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut reader, &mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        let out = frames(&out);
        let kinds: Vec<(u8, u8, u32)> = out.iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(kinds, vec![(0x4, 0x1, 0), (0x8, 0, 0), (FRAME_HEADERS, FLAG_END_HEADERS, 1), (0x0, 0x1, 1)]);
        assert_eq!(out[1].3, [0, 0, 1, 0]);
        let headers = loona_hpack::Decoder::new().decode(&out[2].3).unwrap();
        assert_eq!(headers, vec![(b":authority".to_vec(), b"localhost".to_vec())]);
        assert_eq!(out[3].3, data);
    }

    #[tokio::test]
    async fn a_connection_closed_inside_a_frame_or_a_header_block_is_an_error() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x0, 0, 1, b"0123456789"));
        input.truncate(input.len() - 4);
        assert!(rewritten(input).await.is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, 0, 1, &[0x82])); // no END_HEADERS, no CONTINUATION
        assert!(rewritten(input).await.is_err());
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        assert!(rewritten(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await.is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, b"x")); // DATA inside an open header block
        assert!(rewritten(input).await.is_err());
    }
}
