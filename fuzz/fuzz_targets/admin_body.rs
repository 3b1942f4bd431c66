//! Arbitrary bytes as a request body of the operator's API, through the
//! functions its handlers parse and check them with.
//!
//! Input: one byte choosing the body (`POST /admin/sales`,
//! `.../{sale}/confirm` or `.../{sale}/release`), then the body. A create
//! body goes through `parse_body` and the server's `spec_of`
//! (`server/src/operator.rs`) and `same_definition`; a confirm body through
//! `confirm_body`, a release body through `parse_body` (`http/src/admin.rs`).
//! No socket, no log: the sale is never built, so a capacity of millions
//! costs nothing here.
//!
//! Checked: nothing panics; a refusal is `invalid_request`, and a refused
//! definition names its field; an accepted body re-serializes to JSON that
//! parses to the same body (what `flashsale-server sales` sends is what the
//! server reads); an accepted definition is within the core's bounds, keeps
//! the id, the capacity, the opening time (or now), the hold and the draw
//! window (with the seed it was given), and matches itself as a stored sale
//! (a repeated create is idempotent); an accepted
//! confirm has a `payment_ref` of 1..=128 bytes, and a parsed one within
//! those bounds is accepted.

#![no_main]

use flashsale_core::{MAX_CAPACITY, MAX_DRAW_WINDOW_MS, MAX_HOLD_MS};
use flashsale_http::admin::{confirm_body, parse_body, AdminError};
use flashsale_protocol::json::{ApiError, ConfirmBody, CreateSaleBody, UserBody};
use flashsale_protocol::{MAX_PAYMENT_REF_LEN, MAX_SALE_ID_LEN};
use flashsale_server::operator::{same_definition, spec_of};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

/// "Now" for sales created without an opening time.
const NOW_MS: u64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let [choice, body @ ..] = data else {
        return;
    };
    match choice % 3 {
        0 => create(body),
        1 => confirm(body),
        _ => {
            if let Some(body) = accepted(parse_body::<UserBody>(body)) {
                round_trip(&body);
            }
        }
    }
});

fn create(bytes: &[u8]) {
    let Some(body) = accepted(parse_body::<CreateSaleBody>(bytes)) else {
        return;
    };
    round_trip(&body);
    let spec = match spec_of(&body, NOW_MS, [7; 32]) {
        Ok(spec) => spec,
        Err(e) => {
            assert_eq!(e.error, ApiError::InvalidRequest, "{e:?}");
            // One of the body's own fields, whichever fields it has.
            let field = e.message.split(':').next().unwrap_or_default();
            let fields = serde_json::to_value(&body).expect("a body serializes");
            assert!(
                fields.get(field).is_some(),
                "a refusal names its field: {e:?}"
            );
            return;
        }
    };
    assert_eq!(spec.id, body.sale);
    assert!((1..=MAX_SALE_ID_LEN).contains(&spec.id.len()), "{spec:?}");
    assert_eq!(spec.capacity, body.capacity);
    assert!((1..=MAX_CAPACITY).contains(&spec.capacity), "{spec:?}");
    assert_eq!(spec.opens_at_ms, body.opens_at.unwrap_or(NOW_MS));
    assert_eq!(spec.hold_ms, body.hold_seconds.map(|s| u64::from(s) * 1000));
    assert!(
        spec.hold_ms
            .is_none_or(|ms| (1000..=MAX_HOLD_MS).contains(&ms)),
        "{spec:?}"
    );
    let draw = spec.draw.as_ref().map(|d| (d.window_ms, d.seed));
    assert_eq!(draw, body.draw_window_ms.map(|ms| (ms, [7; 32])));
    assert!(
        draw.is_none_or(|(ms, _)| (1..=MAX_DRAW_WINDOW_MS).contains(&ms)),
        "{spec:?}"
    );
    same_definition(&spec, &body).expect("a definition matches itself");
    let later = CreateSaleBody {
        opens_at: None,
        ..body
    };
    same_definition(&spec, &later).expect("no opening time matches any");
}

fn confirm(bytes: &[u8]) {
    let parsed = parse_body::<ConfirmBody>(bytes).ok();
    let checked = accepted(confirm_body(bytes));
    if let Some(body) = &checked {
        assert!(
            (1..=MAX_PAYMENT_REF_LEN).contains(&body.payment_ref.len()),
            "{body:?}"
        );
        round_trip(body);
    }
    let in_bounds = parsed
        .as_ref()
        .is_some_and(|b| (1..=MAX_PAYMENT_REF_LEN).contains(&b.payment_ref.len()));
    assert_eq!(checked.is_some(), in_bounds, "{parsed:?}");
}

/// The body, or `None` after checking the refusal is `invalid_request`.
fn accepted<T>(parsed: Result<T, AdminError>) -> Option<T> {
    match parsed {
        Ok(body) => Some(body),
        Err(e) => {
            assert_eq!(e.error, ApiError::InvalidRequest, "{e:?}");
            None
        }
    }
}

fn round_trip<T>(body: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(body).expect("a body serializes");
    let again: T = parse_body(&json).expect("its JSON parses");
    assert_eq!(&again, body);
}
