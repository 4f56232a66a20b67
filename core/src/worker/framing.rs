//! Frames on a task's request channel: a 4-byte big-endian length, then that many bytes of
//! payload. [`Framer`] cuts a byte stream into frames; [`frame`] builds one.
//!
//! The payload of each frame is copied once, from the read buffer into a `Vec` of exactly
//! the announced length (allocated when the header arrives: untouched pages cost no
//! memory, so a header announcing the maximum costs only what actually arrives).

/// Bytes of a frame header.
pub(crate) const HEADER: usize = 4;

/// A frame header announced more than the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub(crate) len: u64,
}

/// Reassembles frames from the chunks a channel delivers.
#[derive(Debug)]
pub(crate) struct Framer {
    max: u32,
    header: [u8; HEADER],
    /// Header bytes received of the frame in progress.
    header_len: usize,
    /// The payload in progress (capacity: the announced length), once the header is whole.
    payload: Option<Vec<u8>>,
    want: usize,
}

impl Framer {
    pub(crate) fn new(max: u32) -> Framer {
        Framer {
            max,
            header: [0; HEADER],
            header_len: 0,
            payload: None,
            want: 0,
        }
    }

    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// Feeds `bytes`; calls `emit` with each frame completed, in order. After an error the
    /// framer must not be fed again (the channel is closed).
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        mut emit: impl FnMut(Vec<u8>),
    ) -> Result<(), TooLarge> {
        while !bytes.is_empty() {
            if self.payload.is_none() {
                let take = (HEADER - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len < HEADER {
                    return Ok(());
                }
                let len = u32::from_be_bytes(self.header);
                if len > self.max {
                    return Err(TooLarge {
                        len: u64::from(len),
                    });
                }
                self.want = len as usize;
                let mut payload = Vec::new();
                // Exactly the frame's length, so the payload is never moved while it grows;
                // where even that much address space is refused, it grows as bytes arrive.
                let _ = payload.try_reserve_exact(self.want);
                self.payload = Some(payload);
            }
            let Some(payload) = &mut self.payload else {
                continue;
            };
            let take = (self.want - payload.len()).min(bytes.len());
            payload.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if payload.len() == self.want {
                if let Some(done) = self.payload.take() {
                    emit(done);
                }
                self.header_len = 0;
            }
        }
        Ok(())
    }

    /// Bytes of an incomplete frame received so far (its header included); 0 between frames.
    pub(crate) fn partial(&self) -> u64 {
        (self.header_len + self.payload.as_ref().map_or(0, Vec::len)) as u64
    }
}

/// One frame: the header for `payload`'s length, then the payload. `payload` must be at
/// most `u32::MAX` bytes (callers check it against the channel's maximum first).
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(framer: &mut Framer, bytes: &[u8]) -> Result<Vec<Vec<u8>>, TooLarge> {
        let mut out = Vec::new();
        framer.feed(bytes, |f| out.push(f))?;
        Ok(out)
    }

    #[test]
    fn frames_split_anywhere_reassemble() {
        let mut stream = Vec::new();
        let payloads: Vec<Vec<u8>> = vec![b"hello".to_vec(), Vec::new(), vec![7u8; 1000]];
        for p in &payloads {
            stream.extend(frame(p));
        }
        for cut in 1..stream.len() {
            let mut framer = Framer::new(4096);
            let mut got = Vec::new();
            for piece in stream.chunks(cut) {
                got.extend(frames_of(&mut framer, piece).unwrap());
            }
            assert_eq!(got, payloads, "pieces of {cut}");
            assert_eq!(framer.partial(), 0);
        }
    }

    #[test]
    fn an_incomplete_frame_is_partial_and_an_oversized_header_is_refused() {
        let mut framer = Framer::new(10);
        let bytes = frame(b"0123456789");
        assert!(frames_of(&mut framer, &bytes[..7]).unwrap().is_empty());
        assert_eq!(framer.partial(), 7);
        assert_eq!(
            frames_of(&mut framer, &bytes[7..]).unwrap(),
            vec![b"0123456789".to_vec()]
        );
        let mut framer = Framer::new(10);
        assert_eq!(
            frames_of(&mut framer, &frame(b"01234567890")),
            Err(TooLarge { len: 11 })
        );
        let mut framer = Framer::new(u32::MAX);
        assert!(frames_of(&mut framer, &[0xff, 0xff]).unwrap().is_empty());
        assert_eq!(framer.partial(), 2);
    }
}
