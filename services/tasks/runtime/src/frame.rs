//! The tiny framed protocol spoken on a shim's `attach.sock` and on the
//! stdio of `berth-shim exec`: `[kind: u8][len: u32 big-endian][payload]`.
//!
//! Towards the process: [`STDIN`] bytes, [`CLOSE_STDIN`], [`RESIZE`] (rows
//! and cols as two big-endian u16). From the process: [`STDOUT`] and
//! [`STDERR`] bytes, [`STARTED`] (pid, u32), [`EXIT`] (status, i32, then a
//! UTF-8 error message, empty when the process ran).

pub const STDIN: u8 = 1;
pub const CLOSE_STDIN: u8 = 2;
pub const RESIZE: u8 = 3;
pub const STDOUT: u8 = 11;
pub const STDERR: u8 = 12;
pub const STARTED: u8 = 13;
pub const EXIT: u8 = 14;

/// Largest payload accepted; a bigger length means a broken peer.
pub const MAX_PAYLOAD: usize = 1 << 20;
const HEADER: usize = 5;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Encode one frame.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Encode a terminal size.
pub fn resize(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = rows.to_be_bytes().to_vec();
    p.extend_from_slice(&cols.to_be_bytes());
    encode(RESIZE, &p)
}

/// Decode a RESIZE payload into (rows, cols).
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    if payload.len() != 4 {
        return None;
    }
    Some((
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    ))
}

/// Encode an EXIT frame.
pub fn exit(status: i32, error: &str) -> Vec<u8> {
    let mut p = status.to_be_bytes().to_vec();
    p.extend_from_slice(error.as_bytes());
    encode(EXIT, &p)
}

/// Decode an EXIT payload into (status, error).
pub fn parse_exit(payload: &[u8]) -> Option<(i32, String)> {
    if payload.len() < 4 {
        return None;
    }
    let status = i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    Some((status, String::from_utf8_lossy(&payload[4..]).into_owned()))
}

/// A frame with a length above [`MAX_PAYLOAD`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge(pub usize);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "frame of {} bytes is larger than {MAX_PAYLOAD} bytes",
            self.0
        )
    }
}

impl std::error::Error for TooLarge {}

/// Accumulates bytes and yields whole frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Add bytes read from the peer.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, TooLarge> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(TooLarge(len));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some(Frame { kind, payload }))
    }

    /// Bytes of an incomplete frame still buffered.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_byte_by_byte() {
        let mut wire = encode(STDIN, b"hello");
        wire.extend(resize(24, 80));
        wire.extend(exit(127, "not found"));
        wire.extend(encode(CLOSE_STDIN, b""));
        let mut d = Decoder::new();
        let mut frames = Vec::new();
        for b in wire {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].kind, STDIN);
        assert_eq!(frames[0].payload, b"hello");
        assert_eq!(parse_resize(&frames[1].payload), Some((24, 80)));
        assert_eq!(
            parse_exit(&frames[2].payload),
            Some((127, "not found".to_string()))
        );
        assert_eq!(frames[3].kind, CLOSE_STDIN);
        assert!(frames[3].payload.is_empty());
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn rejects_huge_and_bad_payloads() {
        let mut d = Decoder::new();
        d.push(&[STDIN, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(TooLarge(u32::MAX as usize)));
        assert_eq!(parse_resize(b"abc"), None);
        assert_eq!(parse_exit(b"ab"), None);
    }
}
