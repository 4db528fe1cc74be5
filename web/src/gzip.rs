//! One gzip member assembled from pieces compressed at different times.
//!
//! A deflate stream is a sequence of blocks, and a gzip member is a header,
//! one deflate stream, and the CRC-32 and length of what it decodes to
//! (RFC 1951, RFC 1952). A piece of text compressed on its own and ended
//! with a sync flush ([`Deflater::segment`]) is a run of non-final blocks
//! that ends on a byte boundary, and its back-references reach only into
//! its own text; text that is not worth compressing can be sent as stored
//! blocks ([`Segment::stored`]). Such [`Segment`]s, concatenated in any
//! order and closed by a final block, are one valid deflate stream, and
//! the CRC-32 of the whole is combined from the segments' own without
//! reading the text again ([`Member`]).
//!
//! So a page made of parts that change at different rates is compressed
//! part by part, each part once, and every response is still one ordinary
//! gzip member that any client decodes.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

/// A gzip header: deflate, no name, no time, unknown OS.
pub const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// The most a stored block holds.
const STORED_MAX: usize = 65_535;

/// A run of non-final deflate blocks ending on a byte boundary, with the
/// CRC-32 and length of the text it decodes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segment {
    bytes: Bytes,
    crc: u32,
    len: u64,
}

impl Segment {
    /// `text` as stored (uncompressed) blocks, none of them final.
    pub fn stored(text: &[u8]) -> Segment {
        let mut out = Vec::with_capacity(text.len() + 5 * text.len().div_ceil(STORED_MAX));
        for block in text.chunks(STORED_MAX) {
            push_stored(&mut out, block, false);
        }
        Segment {
            bytes: Bytes::from(out),
            crc: crc32fast::hash(text),
            len: text.len() as u64,
        }
    }

    /// The deflate blocks.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The CRC-32 of the text the segment decodes to.
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// The length of the text the segment decodes to.
    pub fn text_len(&self) -> u64 {
        self.len
    }

    /// Whether it decodes to nothing (it then has no blocks either).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Compresses texts into [`Segment`]s, reusing its compressor's memory
/// from one to the next.
pub struct Deflater {
    compress: Compress,
}

impl Deflater {
    /// A deflater at `level` (0 to 9, as gzip's).
    pub fn new(level: u32) -> Self {
        Deflater {
            compress: Compress::new(Compression::new(level.min(9)), false),
        }
    }

    /// `text` compressed on its own and sync-flushed; empty text gives an
    /// empty segment.
    pub fn segment(&mut self, text: &[u8]) -> Segment {
        if text.is_empty() {
            return Segment::default();
        }
        self.compress.reset();
        let start = self.compress.total_in();
        let mut out = Vec::with_capacity(text.len() / 8 + 1024);
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(64 * 1024));
            }
            let done = (self.compress.total_in() - start) as usize;
            if let Err(err) =
                self.compress
                    .compress_vec(&text[done..], &mut out, FlushCompress::Sync)
            {
                // Cannot happen with in-memory buffers; the text is still
                // sent, uncompressed, rather than lost.
                tracing::error!(error = %err, "deflate failed; sending the text stored");
                return Segment::stored(text);
            }
            // Finished when all the text is in and the output had room to
            // spare, which for a sync flush means the flush is complete.
            let consumed = (self.compress.total_in() - start) as usize;
            if consumed == text.len() && out.len() < out.capacity() {
                break;
            }
        }
        out.shrink_to_fit();
        Segment {
            bytes: Bytes::from(out),
            crc: crc32fast::hash(text),
            len: text.len() as u64,
        }
    }
}

/// One gzip member being assembled: the header, then segments in order,
/// then [`finish`](Member::finish). The parts are shared `Bytes`, not
/// copies, so a member costs a list of pointers and a CRC; a clone of an
/// unfinished member is the start of another response with the same body.
#[derive(Clone)]
pub struct Member {
    parts: Vec<Bytes>,
    crc: crc32fast::Hasher,
}

impl Member {
    /// A member with room for `segments` segments.
    pub fn with_capacity(segments: usize) -> Self {
        let mut parts = Vec::with_capacity(segments + 3);
        parts.push(Bytes::from_static(&HEADER));
        Member {
            parts,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Append a segment.
    pub fn push(&mut self, segment: &Segment) {
        if segment.is_empty() {
            return;
        }
        self.parts.push(segment.bytes.clone());
        self.crc.combine(&crc32fast::Hasher::new_with_initial_len(
            segment.crc,
            segment.len,
        ));
    }

    /// Close the member with `last` as its final (stored) blocks, then
    /// the CRC-32 and length of everything: the parts to send in order.
    pub fn finish(mut self, last: &[u8]) -> Vec<Bytes> {
        let mut end = Vec::with_capacity(last.len() + 5 * (last.len() / STORED_MAX + 1) + 8);
        if last.is_empty() {
            push_stored(&mut end, &[], true);
        } else {
            let mut blocks = last.chunks(STORED_MAX).peekable();
            while let Some(block) = blocks.next() {
                push_stored(&mut end, block, blocks.peek().is_none());
            }
        }
        self.crc.update(last);
        let len = self.crc.total_len();
        end.extend_from_slice(&self.crc.finalize().to_le_bytes());
        // ISIZE: the length modulo 2^32 (RFC 1952).
        end.extend_from_slice(&(len as u32).to_le_bytes());
        self.parts.push(Bytes::from(end));
        self.parts
    }
}

/// One stored block of at most [`STORED_MAX`] bytes.
fn push_stored(out: &mut Vec<u8>, block: &[u8], last: bool) {
    debug_assert!(block.len() <= STORED_MAX);
    let len = block.len() as u16;
    out.push(u8::from(last));
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(block);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    /// Decode one gzip member, checking that nothing follows it.
    fn gunzip(parts: &[Bytes]) -> Vec<u8> {
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut decoder = flate2::bufread::GzDecoder::new(&bytes[..]);
        let mut out = Vec::new();
        decoder
            .read_to_end(&mut out)
            .expect("one valid gzip member");
        assert!(decoder.into_inner().is_empty(), "bytes after the member");
        out
    }

    #[test]
    fn segments_of_both_kinds_make_one_member() {
        let mut deflater = Deflater::new(6);
        let a = b"metric_a{x=\"1\"} 1\n".repeat(3000);
        let b = b"metric_b{x=\"2\"} 2\n".repeat(10);
        let c = b"metric_c 3\n".to_vec();
        let segments = [
            deflater.segment(&a),
            Segment::stored(&b),
            deflater.segment(b""),
            deflater.segment(&c),
        ];
        assert!(segments[0].bytes().len() < a.len() / 20);
        assert!(segments[2].is_empty() && segments[2].bytes().is_empty());
        let mut member = Member::with_capacity(segments.len());
        for segment in &segments {
            member.push(segment);
        }
        let parts = member.finish(b"# EOF\n");
        let want = [&a[..], &b, &c, b"# EOF\n"].concat();
        assert_eq!(gunzip(&parts), want);
        // The trailer holds the CRC and length of the whole.
        let trailer = &parts.last().unwrap()[..];
        let n = trailer.len();
        assert_eq!(trailer[n - 8..n - 4], crc32fast::hash(&want).to_le_bytes());
        assert_eq!(trailer[n - 4..], (want.len() as u32).to_le_bytes());
    }

    #[test]
    fn a_segment_decodes_the_same_wherever_it_is_sent() {
        let mut deflater = Deflater::new(1);
        let texts = [b"abcabcabc\n".repeat(500), b"xyz\n".repeat(500)];
        let segments = [deflater.segment(&texts[0]), deflater.segment(&texts[1])];
        for order in [[0, 1], [1, 0], [1, 1]] {
            let mut member = Member::with_capacity(2);
            order.iter().for_each(|&i| member.push(&segments[i]));
            let want: Vec<u8> = order.iter().flat_map(|&i| texts[i].clone()).collect();
            assert_eq!(gunzip(&member.finish(b"")), want, "{order:?}");
        }
    }

    #[test]
    fn an_empty_member_decodes_to_nothing() {
        assert_eq!(gunzip(&Member::with_capacity(0).finish(b"")), b"");
    }

    #[test]
    fn stored_blocks_split_at_64_kib() {
        let data = vec![b'x'; 70_000];
        let stored = Segment::stored(&data);
        let blocks = stored.bytes();
        assert_eq!(blocks.len(), data.len() + 10);
        assert_eq!(blocks[0], 0, "first block not final");
        assert_eq!(blocks[5 + 65_535], 0, "second block not final either");
        let end = Member::with_capacity(0).finish(&data);
        let last = &end[1];
        assert_eq!(last[0], 0);
        assert_eq!(last[5 + 65_535], 1, "the last block of the end is final");
        assert_eq!(Segment::stored(b""), Segment::default());
    }

    proptest::proptest! {
        /// Any texts, each deflated at any level or stored, then any last
        /// text: one member that decodes to their concatenation.
        #[test]
        fn any_segments_decode_to_the_concatenated_text(
            texts in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000), 0u32..11),
                0..8,
            ),
            last in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70_000),
        ) {
            let mut member = Member::with_capacity(texts.len());
            let mut want = Vec::new();
            for (text, how) in &texts {
                // 10 stands for stored blocks; the others are levels.
                let segment = if *how == 10 {
                    Segment::stored(text)
                } else {
                    Deflater::new(*how).segment(text)
                };
                proptest::prop_assert_eq!(segment.text_len(), text.len() as u64);
                proptest::prop_assert_eq!(segment.crc(), crc32fast::hash(text));
                member.push(&segment);
                want.extend_from_slice(text);
            }
            want.extend_from_slice(&last);
            proptest::prop_assert_eq!(gunzip(&member.finish(&last)), want);
        }
    }
}
