//! Fuzz target: the incremental frame decoder and the message codec must
//! return errors, never panic or allocate without bound, whatever the bytes
//! and however they are split.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protocol::codec;
use protocol::frame::FrameDecoder;
use protocol::message::{CoordinatorMessage, PeerMessage, WorkerMessage};

fn drain<M: codec::Message>(data: &[u8], split: usize) {
    let mut decoder = FrameDecoder::<M>::new(1 << 20);
    let shared = Bytes::copy_from_slice(data);
    let mut start = 0;
    for piece in data.chunks(split) {
        // The pieces are slices of one buffer, as quinn's chunks are.
        decoder.push_bytes(shared.slice(start..start + piece.len()));
        start += piece.len();
        loop {
            match decoder.poll() {
                Ok(Some(frame)) => {
                    let joined = frame.payload.clone().into_bytes();
                    assert_eq!(joined.len(), frame.payload.len());
                    continue;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(1, |&byte| usize::from(byte) + 1);
    drain::<PeerMessage>(data, split);
    drain::<WorkerMessage>(data, data.len().max(1));
    let _ = codec::decode::<CoordinatorMessage>(data);
    let _ = codec::decode::<WorkerMessage>(data);
});
