//! Golden byte vectors: the wire format, pinned.
//!
//! If one of these fails, the encoding changed and every deployed client in
//! another language breaks. Change them only together with a new
//! `PROTOCOL_VERSION` and `docs/PROTOCOL.md`.

use bytes::BytesMut;
use flashsale_protocol::encoding;
use flashsale_protocol::*;
use tokio_util::codec::{Decoder, Encoder};

/// Parses "01 00 ff" style hex.
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("test vector is hex"))
        .collect()
}

fn check<T>(value: T, bytes: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let expected = hex(bytes);
    assert_eq!(
        encoding::encode(&value).unwrap(),
        expected,
        "encoding of {value:?}"
    );
    assert_eq!(
        encoding::decode::<T>(&expected).unwrap(),
        value,
        "decoding of {bytes}"
    );
}

#[test]
fn hello() {
    check(
        ClientFrame::Hello(Hello {
            version: 1,
            api_key: None,
        }),
        "00 00 00 00  01 00  00",
    );
    check(
        ClientFrame::Hello(Hello {
            version: 1,
            api_key: Some("k1".into()),
        }),
        "00 00 00 00  01 00  01  02 00 00 00 00 00 00 00  6b 31",
    );
}

#[test]
fn requests() {
    let req = |id, request| ClientFrame::Request(RequestFrame { id, request });
    check(
        req(1, Request::Ping),
        "01 00 00 00  01 00 00 00 00 00 00 00  00 00 00 00",
    );
    check(
        req(7, Request::Reserve { sale: "d".into(), user: 42 }),
        "01 00 00 00  07 00 00 00 00 00 00 00  01 00 00 00  01 00 00 00 00 00 00 00 64  2a 00 00 00 00 00 00 00",
    );
    check(
        req(2, Request::Status { sale: "d".into() }),
        "01 00 00 00  02 00 00 00 00 00 00 00  02 00 00 00  01 00 00 00 00 00 00 00 64",
    );
    check(
        req(3, Request::Lookup { sale: "d".into(), user: u64::MAX }),
        "01 00 00 00  03 00 00 00 00 00 00 00  03 00 00 00  01 00 00 00 00 00 00 00 64  ff ff ff ff ff ff ff ff",
    );
}

/// The sale lifecycle's requests, appended after `Lookup`.
#[test]
fn lifecycle_requests() {
    let req = |request| ClientFrame::Request(RequestFrame { id: 4, request });
    let head = "01 00 00 00  04 00 00 00 00 00 00 00";
    let d = "01 00 00 00 00 00 00 00 64";
    check(
        req(Request::Confirm {
            sale: "d".into(),
            user: 42,
            payment_ref: "p1".into(),
        }),
        &format!(
            "{head}  04 00 00 00  {d}  2a 00 00 00 00 00 00 00  02 00 00 00 00 00 00 00 70 31"
        ),
    );
    check(
        req(Request::Cancel {
            sale: "d".into(),
            user: 42,
        }),
        &format!("{head}  05 00 00 00  {d}  2a 00 00 00 00 00 00 00"),
    );
    check(
        req(Request::Release {
            sale: "d".into(),
            user: 42,
        }),
        &format!("{head}  06 00 00 00  {d}  2a 00 00 00 00 00 00 00"),
    );
    check(req(Request::ListSales), &format!("{head}  07 00 00 00"));
}

#[test]
fn server_frames() {
    check(
        ServerFrame::Welcome(Welcome {
            version: 1,
            max_in_flight: 1024,
        }),
        "00 00 00 00  01 00  00 04 00 00",
    );
    check(
        ServerFrame::Error(ErrorFrame::new(ErrorCode::UNSUPPORTED_VERSION, "v")),
        "02 00 00 00  01 00  01 00 00 00 00 00 00 00 76",
    );
}

#[test]
fn responses() {
    let resp = |id, response| ServerFrame::Response(ResponseFrame { id, response });
    let head = "01 00 00 00  09 00 00 00 00 00 00 00";
    check(resp(9, Response::Pong), &format!("{head} 00 00 00 00"));
    let outcomes = [
        (
            ReserveOutcome::Won { ticket: 200 },
            "00 00 00 00  c8 00 00 00",
        ),
        (
            ReserveOutcome::AlreadyOwned { ticket: 1 },
            "01 00 00 00  01 00 00 00",
        ),
        (ReserveOutcome::SoldOut, "02 00 00 00"),
        (
            ReserveOutcome::NotOpen { opens_at: 1 },
            "03 00 00 00  01 00 00 00 00 00 00 00",
        ),
        (ReserveOutcome::UnknownSale, "04 00 00 00"),
        (
            ReserveOutcome::Busy { retry_after_ms: 5 },
            "05 00 00 00  05 00 00 00",
        ),
    ];
    for (outcome, bytes) in outcomes {
        check(
            resp(9, Response::Reserve(outcome)),
            &format!("{head} 01 00 00 00 {bytes}"),
        );
    }
    check(
        resp(
            9,
            Response::Status(SaleStatus {
                sale: "d".into(),
                capacity: 200,
                remaining: 0,
                sold: 200,
                state: SaleState::SoldOut,
                opens_at: 256,
            }),
        ),
        &format!(
            "{head} 02 00 00 00  01 00 00 00 00 00 00 00 64  c8 00 00 00  00 00 00 00  c8 00 00 00  02 00 00 00  00 01 00 00 00 00 00 00"
        ),
    );
    check(
        resp(9, Response::Lookup { ticket: Some(3) }),
        &format!("{head} 03 00 00 00  01  03 00 00 00"),
    );
    check(
        resp(9, Response::Lookup { ticket: None }),
        &format!("{head} 03 00 00 00  00"),
    );
    check(
        resp(
            9,
            Response::Error(ErrorFrame::new(ErrorCode::UNKNOWN_SALE, "")),
        ),
        &format!("{head} 04 00 00 00  07 00  00 00 00 00 00 00 00 00"),
    );
    // Appended after `Error`: every earlier vector is unchanged.
    check(
        resp(9, Response::Busy { retry_after_ms: 10 }),
        &format!("{head} 05 00 00 00  0a 00 00 00"),
    );
}

/// The sale lifecycle's answers, appended after `Busy`, and its outcomes,
/// appended after `ReserveOutcome::Busy` and `SaleState::SoldOut`.
#[test]
fn lifecycle_responses() {
    let resp = |response| ServerFrame::Response(ResponseFrame { id: 9, response });
    let head = "01 00 00 00  09 00 00 00 00 00 00 00";
    let outcomes = [
        (
            ReserveOutcome::Held {
                ticket: 3,
                expires_at: 256,
            },
            "06 00 00 00  03 00 00 00  00 01 00 00 00 00 00 00",
        ),
        (ReserveOutcome::Paused, "07 00 00 00"),
        (ReserveOutcome::Closed, "08 00 00 00"),
        (
            ReserveOutcome::AlreadyHeld {
                ticket: 3,
                expires_at: Some(256),
            },
            "09 00 00 00  03 00 00 00  01 00 01 00 00 00 00 00 00",
        ),
        (
            ReserveOutcome::AlreadyHeld {
                ticket: 3,
                expires_at: None,
            },
            "09 00 00 00  03 00 00 00  00",
        ),
    ];
    for (outcome, bytes) in outcomes {
        check(
            resp(Response::Reserve(outcome)),
            &format!("{head} 01 00 00 00 {bytes}"),
        );
    }
    let confirms = [
        (
            ConfirmOutcome::Confirmed { ticket: 3 },
            "00 00 00 00  03 00 00 00",
        ),
        (
            ConfirmOutcome::OtherReference { ticket: 3 },
            "01 00 00 00  03 00 00 00",
        ),
        (ConfirmOutcome::Expired, "02 00 00 00"),
        (ConfirmOutcome::NoHold, "03 00 00 00"),
        (ConfirmOutcome::UnknownSale, "04 00 00 00"),
        (ConfirmOutcome::NoHolds, "05 00 00 00"),
    ];
    for (outcome, bytes) in confirms {
        check(
            resp(Response::Confirm(outcome)),
            &format!("{head} 06 00 00 00 {bytes}"),
        );
    }
    let releases = [
        (
            ReleaseOutcome::Released { ticket: 3 },
            "00 00 00 00  03 00 00 00",
        ),
        (
            ReleaseOutcome::Confirmed { ticket: 3 },
            "01 00 00 00  03 00 00 00",
        ),
        (ReleaseOutcome::NoHold, "02 00 00 00"),
        (ReleaseOutcome::UnknownSale, "03 00 00 00"),
        (ReleaseOutcome::NoHolds, "04 00 00 00"),
    ];
    for (outcome, bytes) in releases {
        check(
            resp(Response::Release(outcome)),
            &format!("{head} 07 00 00 00 {bytes}"),
        );
    }
    check(
        resp(Response::Sales(vec![SaleInfo {
            sale: "d".into(),
            capacity: 5,
            remaining: 1,
            held: 2,
            confirmed: 2,
            sold: 4,
            state: SaleState::Paused,
            opens_at: 256,
            hold_seconds: Some(600),
        }])),
        &format!(
            "{head} 08 00 00 00  01 00 00 00 00 00 00 00  01 00 00 00 00 00 00 00 64  05 00 00 00  01 00 00 00  02 00 00 00  02 00 00 00  04 00 00 00  03 00 00 00  00 01 00 00 00 00 00 00  01 58 02 00 00"
        ),
    );
    check(
        resp(Response::Hold(Some(HoldInfo {
            ticket: 3,
            expires_at: None,
        }))),
        &format!("{head} 09 00 00 00  01  03 00 00 00  00"),
    );
    check(
        resp(Response::Hold(None)),
        &format!("{head} 09 00 00 00  00"),
    );
    check(SaleState::Closed, "04 00 00 00");
}

#[test]
fn a_hand_built_frame_matches_the_codec() {
    let message = ClientFrame::Request(RequestFrame {
        id: 1,
        request: Request::Ping,
    });
    let mut out = BytesMut::new();
    ClientCodec::default()
        .encode(message.clone(), &mut out)
        .unwrap();
    assert_eq!(codec::frame(&message).unwrap(), &out[..]);
}

#[test]
fn frame_prefix_is_big_endian_body_length() {
    let mut codec = ClientCodec::default();
    let mut out = BytesMut::new();
    codec
        .encode(
            ClientFrame::Request(RequestFrame {
                id: 1,
                request: Request::Ping,
            }),
            &mut out,
        )
        .unwrap();
    assert_eq!(
        &out[..],
        &hex("00 00 00 10  01 00 00 00  01 00 00 00 00 00 00 00  00 00 00 00")[..]
    );

    let mut server = ServerCodec::default();
    let decoded = server.decode(&mut out).unwrap();
    assert_eq!(
        decoded,
        Some(ClientFrame::Request(RequestFrame {
            id: 1,
            request: Request::Ping
        }))
    );
    assert!(out.is_empty());
}

#[test]
fn draw_requests() {
    let req = |request| ClientFrame::Request(RequestFrame { id: 4, request });
    let head = "01 00 00 00  04 00 00 00 00 00 00 00";
    let d = "01 00 00 00 00 00 00 00 64";
    check(
        req(Request::Draw { sale: "d".into() }),
        &format!("{head}  08 00 00 00  {d}"),
    );
    check(
        req(Request::DrawPage {
            sale: "d".into(),
            winners: true,
            from: 4096,
        }),
        &format!("{head}  09 00 00 00  {d}  01  00 10 00 00"),
    );
}

#[test]
fn draw_responses() {
    let resp = |response| ServerFrame::Response(ResponseFrame { id: 9, response });
    let head = "01 00 00 00  09 00 00 00 00 00 00 00";
    let ms = "00 01 00 00 00 00 00 00";
    check(
        resp(Response::Reserve(ReserveOutcome::Entered { draws_at: 256 })),
        &format!("{head} 01 00 00 00  0a 00 00 00  {ms}"),
    );
    check(
        resp(Response::Entry(EntryInfo {
            draws_at: 256,
            drawn: true,
        })),
        &format!("{head} 0a 00 00 00  {ms}  01"),
    );
    let aa = "aa ".repeat(32);
    let bb = "bb ".repeat(32);
    check(
        resp(Response::Draw(Some(Box::new(DrawInfo {
            commitment: [0xaa; 32],
            draws_at: 256,
            entrants: 3,
            winners: 2,
            capacity: 5,
            seed: Some([0xbb; 32]),
        })))),
        &format!(
            "{head} 0b 00 00 00  01  {aa} {ms}  03 00 00 00  02 00 00 00  05 00 00 00  01 {bb}"
        ),
    );
    check(
        resp(Response::Draw(None)),
        &format!("{head} 0b 00 00 00  00"),
    );
    check(
        resp(Response::DrawPage(DrawPage {
            total: 2,
            users: vec![1, 2],
        })),
        &format!(
            "{head} 0c 00 00 00  02 00 00 00  02 00 00 00 00 00 00 00  01 00 00 00 00 00 00 00  02 00 00 00 00 00 00 00"
        ),
    );
}
