//! Frame payloads as ropes: the byte pieces the transport delivered, shared
//! (never copied) between the receive buffers, the consumers and the frames
//! that forward them.
use bytes::{Bytes, BytesMut};

/// The payload section of a frame: a sequence of [`Bytes`] pieces whose
/// concatenation is the payload. Pieces are never empty and may end
/// anywhere (a piece boundary need not fall on an f32 value's boundary).
/// Cloning shares the pieces; equality compares the contents, not the cut.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Payload {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// A payload made of `pieces` in order (empty pieces are dropped).
    pub fn from_pieces(pieces: impl IntoIterator<Item = Bytes>) -> Self {
        let mut payload = Self::new();
        for piece in pieces {
            payload.push(piece);
        }
        payload
    }

    /// Appends `piece` at the end (nothing if it is empty).
    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push(piece);
        }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order, none empty.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The pieces, in order, none empty.
    pub fn into_pieces(self) -> Vec<Bytes> {
        self.pieces
    }

    /// The payload as one contiguous [`Bytes`]: shared without a copy when it
    /// is one piece (or none), concatenated otherwise.
    pub fn into_bytes(self) -> Bytes {
        match self.pieces.len() {
            0 => Bytes::new(),
            1 => self.pieces.into_iter().next().expect("one piece"),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len);
                for piece in &self.pieces {
                    joined.extend_from_slice(piece);
                }
                joined.freeze()
            }
        }
    }

    /// Copies the payload into one vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut joined = Vec::with_capacity(self.len);
        for piece in &self.pieces {
            joined.extend_from_slice(piece);
        }
        joined
    }

    /// The bytes `..len`, sharing the pieces (`len` at most [`Self::len`]).
    ///
    /// # Panics
    /// If `len` exceeds the payload's length.
    pub fn truncated(&self, len: usize) -> Self {
        assert!(len <= self.len, "truncating {} bytes to {len}", self.len);
        let mut left = len;
        let mut payload = Self::new();
        for piece in &self.pieces {
            if left == 0 {
                break;
            }
            let take = left.min(piece.len());
            payload.push(piece.slice(..take));
            left -= take;
        }
        payload
    }

    /// The same bytes cut into pieces of at most `size` bytes (at least 1):
    /// for tests of consumers that must not care where the cuts fall.
    pub fn recut(&self, size: usize) -> Self {
        let size = size.max(1);
        let mut payload = Self::new();
        let mut joined = self.clone().into_bytes();
        while !joined.is_empty() {
            let take = size.min(joined.len());
            payload.push(joined.split_to(take));
        }
        payload
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Self::from_pieces([bytes])
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Self::from(Bytes::from(bytes))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        let mut left = self.pieces.iter().flat_map(|piece| piece.iter());
        let mut right = other.pieces.iter().flat_map(|piece| piece.iter());
        left.by_ref().zip(right.by_ref()).all(|(a, b)| a == b)
    }
}

impl Eq for Payload {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_their_order_and_drop_empty_ones() {
        let payload = Payload::from_pieces([
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]);
        assert_eq!(payload.len(), 5);
        assert_eq!(payload.pieces().len(), 2);
        assert_eq!(payload.to_vec(), b"abcde");
        assert_eq!(payload.clone().into_bytes(), Bytes::from_static(b"abcde"));
        assert_eq!(payload, Payload::from(b"abcde".to_vec()));
        assert_ne!(payload, Payload::from(b"abcdf".to_vec()));
        assert_ne!(payload, Payload::from(b"abcd".to_vec()));
        assert_eq!(payload.truncated(3).to_vec(), b"abc");
        assert_eq!(payload.truncated(0), Payload::new());
        for size in 1..7 {
            let recut = payload.recut(size);
            assert_eq!(recut, payload, "size {size}");
            assert!(recut.pieces().iter().all(|piece| piece.len() <= size));
        }
        assert!(Payload::new().into_bytes().is_empty());
    }

    #[test]
    fn one_piece_is_shared_not_copied() {
        let bytes = Bytes::from(vec![1u8; 64]);
        let joined = Payload::from(bytes.clone()).into_bytes();
        assert_eq!(joined.as_ptr(), bytes.as_ptr());
    }
}
