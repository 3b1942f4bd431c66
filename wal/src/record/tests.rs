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
    encode_frame(0x05, b"future", &mut frame).unwrap();
    assert_eq!(
        decode_record(&frame),
        Err(DecodeError::RequiredKind { kind: 5 })
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
        kind: 0x05,
        payload: vec![],
    };
    assert_eq!(future.encode(), Err(EncodeError::NotOptional { kind: 5 }));
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
