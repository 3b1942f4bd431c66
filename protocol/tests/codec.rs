//! Frame-layer behaviour: partial input, limits, garbage, round trips.

use bytes::{BufMut, BytesMut};
use flashsale_protocol::*;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn encoded(frames: &[ClientFrame]) -> BytesMut {
    let mut codec = ClientCodec::default();
    let mut out = BytesMut::new();
    for frame in frames {
        codec.encode(frame, &mut out).unwrap();
    }
    out
}

#[test]
fn waits_for_a_whole_frame() {
    let full = encoded(&[ClientFrame::Hello(Hello {
        version: 1,
        api_key: Some("key".into()),
    })]);
    let mut codec = ServerCodec::default();
    let mut buf = BytesMut::new();
    for (i, byte) in full.iter().enumerate() {
        buf.put_u8(*byte);
        let got = codec.decode(&mut buf).unwrap();
        assert_eq!(got.is_some(), i == full.len() - 1, "byte {i}");
    }
}

#[test]
fn oversized_length_is_refused_before_the_body_arrives() {
    let mut codec = ServerCodec::new(1024);
    let mut buf = BytesMut::from(&[0x00, 0x00, 0x04, 0x01][..]); // 1025
    match codec.decode(&mut buf) {
        Err(FrameError::TooLarge {
            len: 1025,
            max: 1024,
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooLarge {
            len: 4_294_967_295,
            ..
        })
    ));
}

#[test]
fn a_body_at_the_limit_is_accepted() {
    let mut codec = ServerCodec::new(16);
    let mut buf = encoded(&[ClientFrame::Request(RequestFrame {
        id: 1,
        request: Request::Ping,
    })]);
    assert_eq!(buf.len(), 4 + 16);
    assert!(codec.decode(&mut buf).unwrap().is_some());
}

#[test]
fn encoding_over_the_limit_fails_cleanly() {
    let mut codec = ClientCodec::new(32);
    let frame = ClientFrame::Request(RequestFrame {
        id: 1,
        request: Request::Status {
            sale: "x".repeat(100),
        },
    });
    let mut out = BytesMut::new();
    assert!(codec.encode(frame, &mut out).is_err());
}

#[test]
fn garbage_body_is_malformed() {
    let mut codec = ServerCodec::default();
    // Unknown ClientFrame variant 9.
    let mut buf = BytesMut::from(&[0, 0, 0, 4, 9, 0, 0, 0][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::Malformed(_))
    ));
    // A string length far past the end of the body.
    let mut buf = BytesMut::from(
        &[
            0, 0, 0, 15, 0, 0, 0, 0, 1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ][..],
    );
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::Malformed(_))
    ));
    // Trailing bytes after a valid message.
    let mut buf = BytesMut::from(&[0, 0, 0, 8, 0, 0, 0, 0, 1, 0, 0, 0xaa][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::Malformed(_))
    ));
}

fn request() -> impl Strategy<Value = Request> {
    let sale = "[a-z0-9-]{0,64}";
    prop_oneof![
        Just(Request::Ping),
        (sale, any::<u64>()).prop_map(|(sale, user)| Request::Reserve { sale, user }),
        sale.prop_map(|sale| Request::Status { sale }),
        (sale, any::<u64>()).prop_map(|(sale, user)| Request::Lookup { sale, user }),
        (sale, any::<u64>(), ".{1,32}").prop_map(|(sale, user, payment_ref)| {
            Request::Confirm {
                sale,
                user,
                payment_ref,
            }
        }),
        (sale, any::<u64>()).prop_map(|(sale, user)| Request::Cancel { sale, user }),
        (sale, any::<u64>()).prop_map(|(sale, user)| Request::Release { sale, user }),
        Just(Request::ListSales),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (any::<u16>(), proptest::option::of(".{0,40}"))
            .prop_map(|(version, api_key)| ClientFrame::Hello(Hello { version, api_key })),
        (any::<u64>(), request())
            .prop_map(|(id, request)| ClientFrame::Request(RequestFrame { id, request })),
    ]
}

fn outcome() -> impl Strategy<Value = ReserveOutcome> {
    prop_oneof![
        any::<u32>().prop_map(|ticket| ReserveOutcome::Won { ticket }),
        any::<u32>().prop_map(|ticket| ReserveOutcome::AlreadyOwned { ticket }),
        Just(ReserveOutcome::SoldOut),
        any::<u64>().prop_map(|opens_at| ReserveOutcome::NotOpen { opens_at }),
        Just(ReserveOutcome::UnknownSale),
        any::<u32>().prop_map(|retry_after_ms| ReserveOutcome::Busy { retry_after_ms }),
        (any::<u32>(), any::<u64>())
            .prop_map(|(ticket, expires_at)| ReserveOutcome::Held { ticket, expires_at }),
        Just(ReserveOutcome::Paused),
        Just(ReserveOutcome::Closed),
        (any::<u32>(), proptest::option::of(any::<u64>()))
            .prop_map(|(ticket, expires_at)| ReserveOutcome::AlreadyHeld { ticket, expires_at }),
    ]
}

fn state() -> impl Strategy<Value = SaleState> {
    prop::sample::select(vec![
        SaleState::Upcoming,
        SaleState::Open,
        SaleState::SoldOut,
        SaleState::Paused,
        SaleState::Closed,
    ])
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    let response = prop_oneof![
        Just(Response::Pong),
        outcome().prop_map(Response::Reserve),
        proptest::option::of(any::<u32>()).prop_map(|ticket| Response::Lookup { ticket }),
        (any::<u16>(), ".{0,40}")
            .prop_map(|(c, m)| Response::Error(ErrorFrame::new(ErrorCode(c), m))),
        (
            "[a-z]{1,8}",
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            state()
        )
            .prop_map(|(sale, capacity, remaining, opens_at, state)| {
                Response::Status(SaleStatus {
                    sale,
                    capacity,
                    remaining,
                    sold: capacity.wrapping_sub(remaining),
                    state,
                    opens_at,
                })
            }),
        prop::sample::select(vec![
            ConfirmOutcome::Confirmed { ticket: 1 },
            ConfirmOutcome::OtherReference { ticket: 2 },
            ConfirmOutcome::Expired,
            ConfirmOutcome::NoHold,
            ConfirmOutcome::UnknownSale,
            ConfirmOutcome::NoHolds,
        ])
        .prop_map(Response::Confirm),
        prop::sample::select(vec![
            ReleaseOutcome::Released { ticket: 1 },
            ReleaseOutcome::Confirmed { ticket: 2 },
            ReleaseOutcome::NoHold,
            ReleaseOutcome::UnknownSale,
            ReleaseOutcome::NoHolds,
        ])
        .prop_map(Response::Release),
        proptest::collection::vec(
            (
                "[a-z]{1,8}",
                any::<u32>(),
                state(),
                proptest::option::of(any::<u32>())
            ),
            0..4
        )
        .prop_map(|sales| Response::Sales(
            sales
                .into_iter()
                .map(|(sale, capacity, state, hold_seconds)| SaleInfo {
                    sale,
                    capacity,
                    remaining: capacity / 2,
                    held: 1,
                    confirmed: 1,
                    sold: capacity - capacity / 2,
                    state,
                    opens_at: 7,
                    hold_seconds,
                })
                .collect()
        )),
        proptest::option::of((any::<u32>(), proptest::option::of(any::<u64>()))).prop_map(|hold| {
            Response::Hold(hold.map(|(ticket, expires_at)| HoldInfo { ticket, expires_at }))
        }),
    ];
    prop_oneof![
        (any::<u64>(), response)
            .prop_map(|(id, response)| ServerFrame::Response(ResponseFrame { id, response })),
        (any::<u16>(), any::<u32>()).prop_map(|(version, max_in_flight)| ServerFrame::Welcome(
            Welcome {
                version,
                max_in_flight
            }
        )),
    ]
}

proptest! {
    #[test]
    fn client_frames_round_trip_in_any_split(frames in proptest::collection::vec(client_frame(), 1..8), split in any::<prop::sample::Index>()) {
        let bytes = encoded(&frames);
        let cut = split.index(bytes.len() + 1);
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::from(&bytes[..cut]);
        let mut got = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() { got.push(f); }
        buf.extend_from_slice(&bytes[cut..]);
        while let Some(f) = codec.decode(&mut buf).unwrap() { got.push(f); }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let mut enc = ServerCodec::default();
        let mut buf = BytesMut::new();
        enc.encode(&frame, &mut buf).unwrap();
        let mut dec = ClientCodec::default();
        prop_assert_eq!(dec.decode(&mut buf).unwrap(), Some(frame));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut codec = ServerCodec::new(128);
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..64 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn borrowed_decode_equals_owned(frame in client_frame()) {
        let body = encoding::encode(&frame).unwrap();
        let borrowed: ClientFrameRef<'_> = encoding::decode(&body).unwrap();
        prop_assert_eq!(&borrowed, &ClientFrameRef::from(&frame));
        prop_assert_eq!(borrowed.to_owned_frame(), frame);
        prop_assert_eq!(encoding::encode(&borrowed).unwrap(), body);
    }

    #[test]
    fn borrowed_decode_accepts_and_rejects_the_same_bodies(
        prefix in proptest::collection::vec(any::<u8>(), 0..48),
        frame in client_frame(),
        cut in any::<prop::sample::Index>(),
        noise in any::<u8>(),
    ) {
        // Arbitrary bytes, and near misses of real bodies: cut short, one
        // byte changed, one byte too many.
        let mut body = encoding::encode(&frame).unwrap();
        let mut bodies = vec![prefix, body[..cut.index(body.len() + 1)].to_vec()];
        let at = cut.index(body.len());
        body[at] ^= noise;
        bodies.push(body.clone());
        body.push(noise);
        bodies.push(body);
        for body in bodies {
            let owned = encoding::decode::<ClientFrame>(&body).ok();
            let borrowed = encoding::decode::<ClientFrameRef<'_>>(&body).ok();
            prop_assert_eq!(borrowed.map(|f| f.to_owned_frame()), owned, "body {:02x?}", body);
        }
    }

    #[test]
    fn decode_body_then_decode_equals_decode(frames in proptest::collection::vec(client_frame(), 1..8)) {
        let bytes = encoded(&frames);
        let mut codec = ServerCodec::default();
        let mut buf = bytes.clone();
        let mut got = Vec::new();
        while let Some(body) = codec.decode_body(&mut buf).unwrap() {
            got.push(encoding::decode::<ClientFrameRef<'_>>(&body).unwrap().to_owned_frame());
        }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn frame_ready_says_when_decode_body_answers(
        frames in proptest::collection::vec(client_frame(), 1..4),
        max in 0usize..64,
    ) {
        // Fed byte by byte, a codec asked only once `frame_ready` holds
        // gives the same frames (or the same refusal) as one asked at every
        // byte.
        let bytes = encoded(&frames);
        let mut eager = ServerCodec::new(max);
        let mut lazy = ServerCodec::new(max);
        let (mut eager_buf, mut lazy_buf) = (BytesMut::new(), BytesMut::new());
        for byte in bytes.iter() {
            eager_buf.put_u8(*byte);
            lazy_buf.put_u8(*byte);
            loop {
                let expected = eager.decode_body(&mut eager_buf);
                let ready = lazy.frame_ready(&lazy_buf);
                match expected {
                    Ok(None) => {
                        prop_assert!(!ready);
                        break;
                    }
                    Ok(Some(body)) => {
                        prop_assert!(ready);
                        let got = lazy.decode_body(&mut lazy_buf).unwrap();
                        prop_assert_eq!(got.as_deref(), Some(&body[..]));
                    }
                    Err(FrameError::TooLarge { .. }) => {
                        prop_assert!(ready);
                        let refused = lazy.decode_body(&mut lazy_buf);
                        let too_large = matches!(refused, Err(FrameError::TooLarge { .. }));
                        prop_assert!(too_large);
                        return Ok(());
                    }
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
        }
    }

    #[test]
    fn in_place_encoding_is_prefix_then_body(
        frames in proptest::collection::vec(server_frame(), 1..8),
        already in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        // Byte for byte what a separate body and a big-endian prefix give,
        // appended after whatever the buffer already holds.
        let mut codec = ServerCodec::default();
        let mut out = BytesMut::from(&already[..]);
        let mut expected = already.clone();
        for frame in &frames {
            codec.encode(frame, &mut out).unwrap();
            let body = encoding::encode(frame).unwrap();
            expected.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
            expected.extend_from_slice(&body);
        }
        prop_assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn a_refused_encoding_leaves_the_buffer_as_it_was(
        frame in server_frame(),
        already in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let body_len = encoding::encode(&frame).unwrap().len();
        let mut codec = ServerCodec::new(body_len - 1);
        let mut out = BytesMut::from(&already[..]);
        prop_assert!(matches!(codec.encode(&frame, &mut out), Err(FrameError::Encode(_))));
        prop_assert_eq!(&out[..], &already[..]);
        let mut codec = ServerCodec::new(body_len);
        codec.encode(&frame, &mut out).unwrap();
        prop_assert_eq!(out.len(), already.len() + 4 + body_len);
    }
}

#[test]
fn malformed_bodies_are_explained_in_the_protocols_terms() {
    let cases: [(&[u8], &str); 6] = [
        // A Hello cut inside its version.
        (&[0, 0, 0, 0, 1], "the body ends before the message does"),
        (&[9, 0, 0, 0], "variant index"),
        (
            &[
                0, 0, 0, 0, 1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
            "the body ends before the message does",
        ),
        (
            &[0, 0, 0, 0, 1, 0, 0, 0xaa],
            "bytes after the end of the message",
        ),
        (&[0, 0, 0, 0, 1, 0, 2], "an Option tag of 2"),
        (
            &[0, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0xff],
            "not valid UTF-8",
        ),
    ];
    for (body, expected) in cases {
        let err = encoding::decode::<ClientFrame>(body)
            .expect_err("malformed")
            .to_string();
        assert!(err.contains(expected), "{body:?}: {err}");
        assert!(!err.contains("io error"), "{body:?}: {err}");
    }
}
