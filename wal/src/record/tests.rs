use proptest::prelude::*;

use super::*;

fn sale_defined() -> Record {
    Record::SaleDefined {
        sale: "gig".into(),
        capacity: 200,
        opens_at_ms: 1_700_000_000_000,
    }
}

fn ticket_sold() -> Record {
    Record::TicketSold {
        sale: "gig".into(),
        ticket: 7,
        user: 0x0102_0304_0506_0708,
        at_ms: 1_700_000_000_123,
    }
}

#[rustfmt::skip]
const SALE_DEFINED_BYTES: [u8; 26] = [
    0x11, 0x00, 0x00, 0x00,             // payload length 17
    0xe4, 0xc6, 0x40, 0xab,             // crc32 0xab40c6e4
    0x01,                               // kind SaleDefined
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0xc8, 0x00, 0x00, 0x00,             // capacity 200
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // opens_at_ms
];

#[rustfmt::skip]
const TICKET_SOLD_BYTES: [u8; 34] = [
    0x19, 0x00, 0x00, 0x00,             // payload length 25
    0xac, 0xa5, 0x4d, 0x22,             // crc32 0x224da5ac
    0x02,                               // kind TicketSold
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0x07, 0x00, 0x00, 0x00,             // ticket 7
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // user
    0x7b, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // at_ms
];

#[rustfmt::skip]
const UNKNOWN_BYTES: [u8; 11] = [
    0x02, 0x00, 0x00, 0x00,             // payload length 2
    0x85, 0x5f, 0x09, 0x0a,             // crc32 0x0a095f85
    0x90,                               // optional kind 0x90
    0xaa, 0xbb,
];

const USER: u64 = 0x0102_0304_0506_0708;

/// The lifecycle records, one of each, with their pinned bytes.
fn lifecycle_records() -> [(Record, &'static [u8]); 5] {
    [
        (
            Record::SaleWithHolds {
                sale: "gig".into(),
                capacity: 5,
                opens_at_ms: 1_700_000_000_000,
                hold_ms: 600_000,
            },
            &SALE_WITH_HOLDS_BYTES,
        ),
        (
            Record::SaleChanged {
                sale: "gig".into(),
                action: SaleAction::Pause,
                at_ms: 1_700_000_000_500,
            },
            &SALE_CHANGED_BYTES,
        ),
        (
            Record::HoldTaken {
                sale: "gig".into(),
                ticket: 3,
                user: USER,
                at_ms: 1_700_000_000_123,
                expires_at_ms: 1_700_000_600_123,
            },
            &HOLD_TAKEN_BYTES,
        ),
        (
            Record::HoldConfirmed {
                sale: "gig".into(),
                ticket: 3,
                user: USER,
                at_ms: 1_700_000_060_000,
                payment_ref: "pi_42".into(),
            },
            &HOLD_CONFIRMED_BYTES,
        ),
        (
            Record::TicketReleased {
                sale: "gig".into(),
                ticket: 3,
                user: USER,
                at_ms: 1_700_000_600_123,
                reason: ReleaseReason::Expired,
            },
            &TICKET_RELEASED_BYTES,
        ),
    ]
}

#[rustfmt::skip]
const SALE_WITH_HOLDS_BYTES: [u8; 34] = [
    0x19, 0x00, 0x00, 0x00,             // payload length 25
    0xbd, 0x46, 0x7b, 0x6f,             // crc32 0x6f7b46bd
    0x03,                               // kind SaleWithHolds
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0x05, 0x00, 0x00, 0x00,             // capacity 5
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // opens_at_ms
    0xc0, 0x27, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, // hold_ms 600000
];

#[rustfmt::skip]
const SALE_CHANGED_BYTES: [u8; 23] = [
    0x0e, 0x00, 0x00, 0x00,             // payload length 14
    0x9f, 0xd8, 0x84, 0x01,             // crc32 0x0184d89f
    0x04,                               // kind SaleChanged
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0x01,                               // action: pause
    0xf4, 0x69, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // at_ms
];

#[rustfmt::skip]
const HOLD_TAKEN_BYTES: [u8; 42] = [
    0x21, 0x00, 0x00, 0x00,             // payload length 33
    0xa1, 0x90, 0x32, 0x37,             // crc32 0x373290a1
    0x05,                               // kind HoldTaken
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0x03, 0x00, 0x00, 0x00,             // ticket 3
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // user
    0x7b, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // at_ms
    0x3b, 0x90, 0xee, 0xcf, 0x8b, 0x01, 0x00, 0x00, // expires_at_ms
];

#[rustfmt::skip]
const HOLD_CONFIRMED_BYTES: [u8; 41] = [
    0x20, 0x00, 0x00, 0x00,             // payload length 32
    0xb6, 0x42, 0x01, 0xe3,             // crc32 0xe30142b6
    0x06,                               // kind HoldConfirmed
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0x03, 0x00, 0x00, 0x00,             // ticket 3
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // user
    0x60, 0x52, 0xe6, 0xcf, 0x8b, 0x01, 0x00, 0x00, // at_ms
    0x05, 0x00, b'p', b'i', b'_', b'4', b'2', // payment_ref
];

#[rustfmt::skip]
const TICKET_RELEASED_BYTES: [u8; 35] = [
    0x1a, 0x00, 0x00, 0x00,             // payload length 26
    0xc0, 0x51, 0x68, 0x97,             // crc32 0x976851c0
    0x07,                               // kind TicketReleased
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0x03, 0x00, 0x00, 0x00,             // ticket 3
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // user
    0x3b, 0x90, 0xee, 0xcf, 0x8b, 0x01, 0x00, 0x00, // at_ms
    0x01,                               // reason: expired
];

#[rustfmt::skip]
const SALE_WITH_DRAW_BYTES: [u8; 74] = [
    0x41, 0x00, 0x00, 0x00,             // payload length 65
    0x4b, 0x47, 0x12, 0x49,             // crc32 0x4912474b
    0x08,                               // kind SaleWithDraw
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0x05, 0x00, 0x00, 0x00,             // capacity 5
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // opens_at_ms
    0xc0, 0x27, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, // hold_ms 600000 (0: none)
    0x88, 0x13, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // window_ms 5000
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, // seed
    0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];

#[rustfmt::skip]
const DRAW_ENTERED_BYTES: [u8; 30] = [
    0x15, 0x00, 0x00, 0x00,             // payload length 21
    0x96, 0xc6, 0x61, 0xf6,             // crc32 0xf661c696
    0x09,                               // kind DrawEntered
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // user
    0x01, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // at_ms
];

#[rustfmt::skip]
const DRAW_MADE_BYTES: [u8; 22] = [
    0x0d, 0x00, 0x00, 0x00,             // payload length 13
    0x76, 0x3b, 0xbe, 0xaa,             // crc32 0xaabe3b76
    0x0a,                               // kind DrawMade
    0x03, 0x00, b'g', b'i', b'g',       // sale
    0x88, 0x7b, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // at_ms
];

/// The draw's records, one of each, with their pinned bytes.
fn draw_records() -> [(Record, &'static [u8]); 4] {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    [
        (
            Record::SaleWithDraw {
                sale: "gig".into(),
                capacity: 5,
                opens_at_ms: 1_700_000_000_000,
                hold_ms: Some(600_000),
                window_ms: 5_000,
                seed: DrawSeed(seed),
            },
            &SALE_WITH_DRAW_BYTES,
        ),
        (
            Record::DrawEntered {
                sale: "gig".into(),
                user: USER,
                at_ms: 1_700_000_000_001,
            },
            &DRAW_ENTERED_BYTES,
        ),
        (
            Record::DrawMade {
                sale: "gig".into(),
                at_ms: 1_700_000_005_000,
            },
            &DRAW_MADE_BYTES,
        ),
        (
            Record::SaleWithDraw {
                sale: "gig".into(),
                capacity: 5,
                opens_at_ms: 1_700_000_000_000,
                hold_ms: None,
                window_ms: 5_000,
                seed: DrawSeed(seed),
            },
            // The same bytes with hold_ms 0 and its CRC: built in the test.
            &[],
        ),
    ]
}

#[test]
fn draw_golden_vectors() {
    for (record, bytes) in draw_records() {
        if bytes.is_empty() {
            let encoded = record.encode().unwrap();
            assert_eq!(
                &encoded[RECORD_HEADER_LEN + 17..RECORD_HEADER_LEN + 25],
                &[0; 8]
            );
            assert_eq!(decode_record(&encoded), Ok((record, encoded.len())));
            continue;
        }
        assert_eq!(record.encode().unwrap(), bytes, "{record}");
        assert_eq!(decode_record(bytes), Ok((record, bytes.len())));
    }
}

#[test]
fn a_draw_seed_never_shows_in_debug_or_display() {
    let (record, _) = &draw_records()[0];
    for text in [format!("{record:?}"), record.to_string()] {
        assert!(!text.contains("29, 30, 31"), "{text}");
        assert!(!text.contains("1d1e1f"), "{text}");
    }
}

#[test]
fn file_header_golden() {
    assert_eq!(&file_header(), b"FSALEWAL\x01\x00\x00\x00");
    assert_eq!(check_file_header(&file_header()), Ok(()));
}

#[test]
fn golden_vectors() {
    let unknown = Record::Unknown {
        kind: 0x90,
        payload: vec![0xaa, 0xbb],
    };
    for (record, bytes) in [
        (sale_defined(), &SALE_DEFINED_BYTES[..]),
        (ticket_sold(), &TICKET_SOLD_BYTES[..]),
        (unknown, &UNKNOWN_BYTES[..]),
    ] {
        assert_eq!(record.encode().unwrap(), bytes, "{record}");
        assert_eq!(decode_record(bytes), Ok((record, bytes.len())));
    }
    for (record, bytes) in lifecycle_records() {
        assert_eq!(record.encode().unwrap(), bytes, "{record}");
        assert_eq!(decode_record(bytes), Ok((record, bytes.len())));
    }
}

#[test]
fn unknown_codes_in_lifecycle_records_are_invalid() {
    for (kind, payload) in [
        (KIND_SALE_CHANGED, &SALE_CHANGED_BYTES[RECORD_HEADER_LEN..]),
        (
            KIND_TICKET_RELEASED,
            &TICKET_RELEASED_BYTES[RECORD_HEADER_LEN..],
        ),
    ] {
        let code_at = if kind == KIND_SALE_CHANGED {
            5
        } else {
            payload.len() - 1
        };
        for bad in [0, 4, 0xff] {
            let mut payload = payload.to_vec();
            payload[code_at] = bad;
            let mut frame = Vec::new();
            encode_frame(kind, &payload, &mut frame).unwrap();
            assert!(
                matches!(
                    decode_record(&frame),
                    Err(DecodeError::InvalidPayload { kind: k, .. }) if k == kind
                ),
                "kind {kind}, code {bad}"
            );
        }
    }
}

#[test]
fn bad_file_headers() {
    assert_eq!(
        check_file_header(b"FSALE"),
        Err(HeaderError::Short { len: 5 })
    );
    assert!(matches!(
        check_file_header(b"NOTAWAL!\x01\x00\x00\x00"),
        Err(HeaderError::BadMagic { .. })
    ));
    assert_eq!(
        check_file_header(b"FSALEWAL\x02\x00\x00\x00"),
        Err(HeaderError::Version { found: 2 })
    );
    assert_eq!(
        check_file_header(b"FSALEWAL\x01\x00\x01\x00"),
        Err(HeaderError::Reserved { found: 1 })
    );
}

#[test]
fn required_unknown_kind_is_refused() {
    let mut frame = Vec::new();
    encode_frame(0x7f, b"future", &mut frame).unwrap();
    assert_eq!(
        decode_record(&frame),
        Err(DecodeError::RequiredKind { kind: 0x7f })
    );
}

#[test]
fn damage_is_classified() {
    let good = &TICKET_SOLD_BYTES[..];
    assert_eq!(
        decode_record(&good[..4]),
        Err(DecodeError::ShortHeader { available: 4 })
    );
    assert_eq!(
        decode_record(&good[..20]),
        Err(DecodeError::ShortPayload {
            len: 25,
            available: 11
        })
    );
    let mut flipped = good.to_vec();
    flipped[20] ^= 0x01;
    assert!(matches!(
        decode_record(&flipped),
        Err(DecodeError::Crc { .. })
    ));
    let huge = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1];
    assert_eq!(
        decode_record(&huge),
        Err(DecodeError::TooLong { len: u32::MAX })
    );
}

#[test]
fn invalid_payloads_for_known_kinds() {
    let mut extra = Vec::new();
    let mut payload = SALE_DEFINED_BYTES[RECORD_HEADER_LEN..].to_vec();
    payload.push(0);
    encode_frame(KIND_SALE_DEFINED, &payload, &mut extra).unwrap();
    assert!(matches!(
        decode_record(&extra),
        Err(DecodeError::InvalidPayload {
            reason: "trailing bytes",
            ..
        })
    ));

    let mut not_utf8 = Vec::new();
    encode_frame(KIND_TICKET_SOLD, &[2, 0, 0xff, 0xfe], &mut not_utf8).unwrap();
    assert!(matches!(
        decode_record(&not_utf8),
        Err(DecodeError::InvalidPayload { kind: 2, .. })
    ));
}

#[test]
fn encode_refuses_what_it_cannot_write() {
    let long = Record::SaleDefined {
        sale: "x".repeat(70_000),
        capacity: 1,
        opens_at_ms: 0,
    };
    let mut out = vec![1, 2, 3];
    assert_eq!(
        long.encode_into(&mut out),
        Err(EncodeError::StringTooLong { len: 70_000 })
    );
    assert_eq!(out, [1, 2, 3]);

    let big = Record::Unknown {
        kind: 0x81,
        payload: vec![0; MAX_PAYLOAD_LEN + 1],
    };
    assert!(matches!(
        big.encode(),
        Err(EncodeError::PayloadTooLarge { .. })
    ));

    let disguised = Record::Unknown {
        kind: KIND_TICKET_SOLD,
        payload: vec![],
    };
    assert_eq!(
        disguised.encode(),
        Err(EncodeError::NotOptional { kind: 2 })
    );
    let future = Record::Unknown {
        kind: 0x7f,
        payload: vec![],
    };
    assert_eq!(
        future.encode(),
        Err(EncodeError::NotOptional { kind: 0x7f })
    );
}

pub(crate) fn any_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (".{0,12}", any::<u32>(), any::<u64>()).prop_map(|(sale, capacity, opens_at_ms)| {
            Record::SaleDefined {
                sale,
                capacity,
                opens_at_ms,
            }
        }),
        (".{0,12}", any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(sale, ticket, user, at_ms)| Record::TicketSold {
                sale,
                ticket,
                user,
                at_ms
            }
        ),
        (".{0,12}", any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(sale, capacity, opens_at_ms, hold_ms)| Record::SaleWithHolds {
                sale,
                capacity,
                opens_at_ms,
                hold_ms
            }
        ),
        (
            ".{0,12}",
            prop::sample::select(&SaleAction::ALL[..]),
            any::<u64>()
        )
            .prop_map(|(sale, action, at_ms)| Record::SaleChanged {
                sale,
                action,
                at_ms
            }),
        (
            ".{0,12}",
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(sale, ticket, user, at_ms, expires_at_ms)| Record::HoldTaken {
                    sale,
                    ticket,
                    user,
                    at_ms,
                    expires_at_ms
                }
            ),
        (
            ".{0,12}",
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            ".{1,16}"
        )
            .prop_map(
                |(sale, ticket, user, at_ms, payment_ref)| Record::HoldConfirmed {
                    sale,
                    ticket,
                    user,
                    at_ms,
                    payment_ref
                }
            ),
        (
            ".{0,12}",
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            prop::sample::select(&ReleaseReason::ALL[..])
        )
            .prop_map(
                |(sale, ticket, user, at_ms, reason)| Record::TicketReleased {
                    sale,
                    ticket,
                    user,
                    at_ms,
                    reason
                }
            ),
        (0x80u8.., proptest::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(kind, payload)| Record::Unknown { kind, payload }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(record in any_record(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut bytes = record.encode().unwrap();
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(decode_record(&bytes), Ok((record, len)));
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_record(&bytes);
        let _ = check_file_header(&bytes);
    }

    #[test]
    fn decode_never_panics_on_valid_crc(kind in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..48)) {
        let mut frame = Vec::new();
        encode_frame(kind, &payload, &mut frame).unwrap();
        if let Ok((record, used)) = decode_record(&frame) {
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(record.encode().unwrap(), frame);
        }
    }
}
