//! Frames and the incremental decoder, from the user's side: round trips,
//! arbitrary splits, and each kind of bad input reported as its own error.
use bytes::Bytes;
use protocol::codec;
use protocol::frame::{Frame, FrameDecoder, MAX_FRAME_BYTES, PROTOCOL_VERSION, encode_frame};
use protocol::message::*;
use protocol::tensor::{
    PayloadPool, add_f32_le_bytes, add_f32_le_payload, f32_from_le_bytes, f32_from_le_payload,
    f32_to_le_bytes,
};
use protocol::{Payload, ProtocolError};

fn sample_messages() -> Vec<PeerMessage> {
    vec![
        PeerMessage::Hello(PeerHello {
            job_id: 7,
            generation: 3,
            member_index: 2,
        }),
        PeerMessage::Chunk(ChunkHeader {
            collective: u64::MAX,
            phase: CollectivePhase::AllGather,
            element_offset: 1 << 40,
            element_count: 3,
        }),
        PeerMessage::State(StateHeader {
            collective: 1,
            total_bytes: 10,
            byte_offset: 0,
            byte_count: 10,
        }),
        PeerMessage::Barrier {
            sequence: 9,
            round: 1,
        },
    ]
}

/// The sample messages as one stream of frames, the payloads taken in
/// turn, and the frames a decoder should give back.
fn sample_stream(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<Frame<PeerMessage>>) {
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (index, message) in sample_messages().into_iter().enumerate() {
        let payload = &payloads[index % payloads.len()];
        stream.extend(encode_frame(&message, payload).unwrap());
        expected.push(Frame {
            message,
            payload: Payload::from(payload.clone()),
        });
    }
    (stream, expected)
}

fn decode_all(bytes: &[u8], split: usize) -> Result<Vec<Frame<PeerMessage>>, ProtocolError> {
    let mut decoder = FrameDecoder::<PeerMessage>::default();
    let mut frames = Vec::new();
    for piece in bytes.chunks(split.max(1)) {
        decoder.push(piece);
        while let Some(frame) = decoder.poll()? {
            frames.push(frame);
        }
    }
    decoder.finish()?;
    Ok(frames)
}

#[test]
fn frames_round_trip_whatever_the_split() {
    let payloads: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        f32_to_le_bytes(&[1.5, -0.0, f32::MIN_POSITIVE]),
    ];
    let (stream, expected) = sample_stream(&payloads);
    for split in [1, 2, 3, 7, 63, 64, 65, stream.len()] {
        assert_eq!(
            decode_all(&stream, split).unwrap(),
            expected,
            "split {split}"
        );
    }
}

#[test]
fn control_messages_round_trip_through_the_codec() {
    let worker = WorkerMessage::Register(Register {
        secret: "s".repeat(43),
        name: "w1".into(),
        peer_address: "10.0.0.2:7001".into(),
        peer_fingerprint: "ab".repeat(32),
        cores: 2,
        memory_bytes: 1 << 33,
    });
    assert_eq!(
        codec::decode::<WorkerMessage>(&codec::encode(&worker).unwrap()).unwrap(),
        worker
    );
    let others = [
        WorkerMessage::Heartbeat(Heartbeat {
            sequence: 1,
            job_id: Some(2),
            step: None,
        }),
        WorkerMessage::CheckpointReport(CheckpointReport {
            job_id: 1,
            step: 100,
            location: "/data/ckpt-100.safetensors".into(),
            sha256: "00".repeat(32),
            bytes: 12345,
        }),
        WorkerMessage::MetricsReport(MetricsReport {
            job_id: 1,
            step: 3,
            values: vec![("loss".into(), 0.25)],
        }),
        WorkerMessage::JobFailed {
            job_id: 1,
            reason: "out of memory".into(),
        },
    ];
    for message in others {
        assert_eq!(
            codec::decode::<WorkerMessage>(&codec::encode(&message).unwrap()).unwrap(),
            message
        );
    }
    let coordinator = [
        CoordinatorMessage::Registered {
            worker_id: 4,
            heartbeat_interval_ms: 1000,
        },
        CoordinatorMessage::Refused {
            reason: "wrong join token secret".into(),
        },
        CoordinatorMessage::HeartbeatAck { sequence: 1 },
        CoordinatorMessage::AssignJob(JobAssignment {
            job_id: 1,
            spec: "{\"model\":\"vae\"}".into(),
            spec_format: "json".into(),
            plan: "{}".into(),
            start_step: 0,
        }),
        CoordinatorMessage::RingMembership(RingMembership {
            job_id: 1,
            generation: 2,
            virtual_ranks: 8,
            members: vec![RingMember {
                worker_id: 4,
                address: "10.0.0.2:7001".into(),
                fingerprint: "ab".repeat(32),
                first_virtual_rank: 0,
                virtual_rank_count: 8,
            }],
            start_step: 10,
            state_source: Some(0),
        }),
        CoordinatorMessage::Cancel {
            job_id: 1,
            reason: "user".into(),
        },
    ];
    for message in coordinator {
        assert_eq!(
            codec::decode::<CoordinatorMessage>(&codec::encode(&message).unwrap()).unwrap(),
            message
        );
    }
}

#[track_caller]
fn check_error(bytes: &[u8], expected: fn(&ProtocolError) -> bool) {
    for split in [1, 5, bytes.len().max(1)] {
        let error = decode_all(bytes, split).expect_err("bad input must be an error");
        assert!(
            expected(&error),
            "split {split}: unexpected error {error:?}"
        );
    }
}

fn frame_bytes() -> Vec<u8> {
    encode_frame(&sample_messages()[0], &[1, 2, 3]).unwrap()
}

#[test]
fn oversized_frames_are_refused_from_their_prefix() {
    let mut bytes = (MAX_FRAME_BYTES + 1).to_le_bytes().to_vec();
    bytes.extend([0; 16]);
    check_error(
        &bytes,
        |e| matches!(e, ProtocolError::FrameTooLarge { length, max } if *length == u64::from(MAX_FRAME_BYTES) + 1 && *max == u64::from(MAX_FRAME_BYTES)),
    );
    // Only the four length bytes are needed to refuse it.
    let mut decoder = FrameDecoder::<PeerMessage>::new(100);
    decoder.push(&101u32.to_le_bytes());
    assert!(matches!(
        decoder.poll(),
        Err(ProtocolError::FrameTooLarge {
            length: 101,
            max: 100
        })
    ));
}

#[test]
fn frames_too_short_for_their_header_are_refused() {
    check_error(&[3, 0, 0, 0, 1, 0, 0], |e| {
        matches!(e, ProtocolError::FrameTooShort { length: 3, .. })
    });
}

#[test]
fn unknown_versions_are_refused() {
    let mut bytes = frame_bytes();
    bytes[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    check_error(
        &bytes,
        |e| matches!(e, ProtocolError::UnknownVersion { found, supported } if *found == PROTOCOL_VERSION + 1 && *supported == PROTOCOL_VERSION),
    );
}

#[test]
fn truncated_streams_are_reported_with_what_was_missing() {
    let bytes = frame_bytes();
    for cut in [1, 3, 4, 9, bytes.len() - 1] {
        let error = decode_all(&bytes[..cut], 1).expect_err("truncated");
        match error {
            ProtocolError::Truncated { expected, received } => {
                assert_eq!(received, cut as u64, "cut {cut}");
                let want = if cut < 4 { 4 } else { bytes.len() as u64 };
                assert_eq!(expected, want, "cut {cut}");
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn undecodable_messages_are_reported() {
    // A variant index that does not exist.
    let mut bytes = Vec::new();
    bytes.extend(7u32.to_le_bytes());
    bytes.extend(PROTOCOL_VERSION.to_le_bytes());
    bytes.extend(1u32.to_le_bytes());
    bytes.push(200);
    check_error(&bytes, |e| {
        matches!(
            e,
            ProtocolError::Undecodable {
                what: "peer message",
                ..
            }
        )
    });
    // A message length beyond the frame.
    let mut bytes = frame_bytes();
    bytes[6..10].copy_from_slice(&1000u32.to_le_bytes());
    check_error(&bytes, |e| {
        matches!(
            e,
            ProtocolError::Undecodable {
                what: "frame header",
                ..
            }
        )
    });
    // Trailing bytes inside the message section.
    let message = codec::encode(&sample_messages()[3]).unwrap();
    let mut bytes = Vec::new();
    bytes.extend(((6 + message.len() + 1) as u32).to_le_bytes());
    bytes.extend(PROTOCOL_VERSION.to_le_bytes());
    bytes.extend(((message.len() + 1) as u32).to_le_bytes());
    bytes.extend(&message);
    bytes.push(0);
    check_error(
        &bytes,
        |e| matches!(e, ProtocolError::Undecodable { reason, .. } if reason.contains("trailing")),
    );
}

#[test]
fn tensor_payloads_are_little_endian_f32() {
    let values = [1.0f32, -2.5, f32::INFINITY, 1e-40, 3.4e38];
    let bytes = f32_to_le_bytes(&values);
    assert_eq!(&bytes[0..4], &[0, 0, 0x80, 0x3f]);
    let mut back = [0.0f32; 5];
    f32_from_le_bytes(&bytes, &mut back).unwrap();
    assert_eq!(back.map(f32::to_bits), values.map(f32::to_bits));
    let mut sum = [1.0f32; 5];
    add_f32_le_bytes(&bytes, &mut sum).unwrap();
    assert_eq!(sum[1], -1.5);
    assert!(matches!(
        f32_from_le_bytes(&bytes[..7], &mut back[..2]),
        Err(ProtocolError::TensorPayloadMismatch {
            bytes: 7,
            expected_values: 2
        })
    ));
}

/// Decodes `bytes` pushed as shared pieces cut at `cuts` (increasing offsets).
fn decode_pieces(bytes: &Bytes, cuts: &[usize]) -> Result<Vec<Frame<PeerMessage>>, ProtocolError> {
    let mut decoder = FrameDecoder::<PeerMessage>::default();
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&bytes.len()]) {
        decoder.push_bytes(bytes.slice(start..end));
        start = end;
        while let Some(frame) = decoder.poll()? {
            frames.push(frame);
        }
    }
    decoder.finish()?;
    assert_eq!(decoder.buffered_len(), 0);
    Ok(frames)
}

fn tensor_values(count: usize) -> Vec<f32> {
    (0..count)
        .map(|i| (i as f32 - 7.5) * 0.37 + if i % 3 == 0 { 1e-40 } else { 0.0 })
        .collect()
}

#[test]
fn payloads_cut_at_every_offset_give_the_same_values() {
    let values = tensor_values(9);
    let bytes = Bytes::from(f32_to_le_bytes(&values));
    let base: Vec<f32> = (0..values.len()).map(|i| i as f32 * 1.25 - 3.0).collect();
    let mut expected_sum = base.clone();
    add_f32_le_bytes(&bytes, &mut expected_sum).unwrap();
    let pool = PayloadPool::new();
    let check = |payload: &Payload, what: &str| {
        let mut decoded = vec![0.0f32; values.len()];
        f32_from_le_payload(payload, &mut decoded).unwrap();
        assert_eq!(
            decoded.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{what}"
        );
        let mut sum = base.clone();
        add_f32_le_payload(payload, &mut sum).unwrap();
        assert_eq!(
            sum.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            expected_sum.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{what}"
        );
        // The same sum written straight into a payload buffer: a new one or
        // one reused at the same length, then one last filled with fewer
        // bytes (the rest must be written, not left over).
        for _ in 0..2 {
            let encoded = pool.encode_f32_sum(payload, &base).unwrap();
            assert_eq!(encoded.as_ref(), f32_to_le_bytes(&expected_sum), "{what}");
        }
        drop(pool.encode_f32(&values[..3]));
        let encoded = pool.encode_f32_sum(payload, &base).unwrap();
        assert_eq!(encoded.as_ref(), f32_to_le_bytes(&expected_sum), "{what}");
    };
    // One cut at every offset, two cuts at every pair of offsets.
    for first in 0..=bytes.len() {
        check(
            &Payload::from_pieces([bytes.slice(..first), bytes.slice(first..)]),
            &format!("cut at {first}"),
        );
        for second in first..=bytes.len() {
            let payload = Payload::from_pieces([
                bytes.slice(..first),
                bytes.slice(first..second),
                bytes.slice(second..),
            ]);
            check(&payload, &format!("cuts at {first} and {second}"));
        }
    }
    // Pieces of every size.
    for size in 1..=bytes.len() {
        check(
            &Payload::from(bytes.clone()).recut(size),
            &format!("pieces of {size}"),
        );
    }
    // A length that does not match is an error, whatever the cut.
    let short = Payload::from_pieces([bytes.slice(..5), bytes.slice(5..bytes.len() - 1)]);
    let mut out = vec![0.0f32; values.len()];
    assert!(matches!(
        f32_from_le_payload(&short, &mut out),
        Err(ProtocolError::TensorPayloadMismatch {
            bytes: 35,
            expected_values: 9
        })
    ));
    assert!(matches!(
        add_f32_le_payload(&short, &mut out),
        Err(ProtocolError::TensorPayloadMismatch {
            bytes: 35,
            expected_values: 9
        })
    ));
    assert!(matches!(
        pool.encode_f32_sum(&short, &out),
        Err(ProtocolError::TensorPayloadMismatch {
            bytes: 35,
            expected_values: 9
        })
    ));
}

#[test]
fn frames_pushed_as_pieces_cut_anywhere_decode_alike_without_copying_payloads() {
    let payloads: Vec<Vec<u8>> = vec![
        f32_to_le_bytes(&tensor_values(5)),
        vec![],
        vec![9],
        f32_to_le_bytes(&tensor_values(3)),
    ];
    let (stream, expected) = sample_stream(&payloads);
    let stream = Bytes::from(stream);
    let range = stream.as_ptr_range();
    for first in 0..=stream.len() {
        for second in (first..=stream.len()).step_by(7) {
            let frames = decode_pieces(&stream, &[first, second]).unwrap();
            assert_eq!(frames, expected, "cuts at {first} and {second}");
            // Every payload piece points into the pushed bytes: no copy.
            for frame in &frames {
                for piece in frame.payload.pieces() {
                    assert!(
                        range.contains(&piece.as_ptr()),
                        "cuts at {first} and {second}"
                    );
                }
            }
        }
    }
    // A payload that arrived in one piece is handed out as that piece.
    let frames = decode_pieces(&stream, &[]).unwrap();
    assert!(frames.iter().all(|frame| frame.payload.pieces().len() <= 1));
}

#[test]
fn errors_are_the_same_when_pushed_as_shared_pieces() {
    // Unknown version, a message length beyond the frame, and truncation,
    // with the header cut at every offset.
    let mut bad_version = frame_bytes();
    bad_version[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    let mut bad_length = frame_bytes();
    bad_length[6..10].copy_from_slice(&1000u32.to_le_bytes());
    let bad_version = Bytes::from(bad_version);
    let bad_length = Bytes::from(bad_length);
    let whole = Bytes::from(frame_bytes());
    for cut in 0..=whole.len() {
        assert!(matches!(
            decode_pieces(&bad_version, &[cut]),
            Err(ProtocolError::UnknownVersion { .. })
        ));
        assert!(matches!(
            decode_pieces(&bad_length, &[cut]),
            Err(ProtocolError::Undecodable {
                what: "frame header",
                ..
            })
        ));
        let truncated = whole.slice(..whole.len() - 1);
        let error = decode_pieces(&truncated, &[cut.min(truncated.len())]).unwrap_err();
        assert!(matches!(
            error,
            ProtocolError::Truncated { expected, received }
                if expected == whole.len() as u64 && received == truncated.len() as u64
        ));
    }
}
