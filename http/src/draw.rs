//! `GET /api/sales/{sale}/draw`: the published draw, for anyone to audit.
//!
//! Before the draw is made and durable the answer is `425 Too Early` with
//! `Retry-After` (the seed must never leak early); after it, the whole
//! document of `flashsale_draw::Document`: the seed, the commitment, every
//! entrant and every winner. A sale with a million entrants makes a document
//! of some 20 MB, so it is never built in memory: the body is written as it
//! is read from the core, one page of [`DRAW_PAGE_LEN`] users at a time (a
//! gateway asks its core for each page over the native protocol), and the
//! front holds one page per reader. The document never changes once
//! published, so it may be cached for as long as anyone likes.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use flashsale_core::clock::now_ms;
use flashsale_metrics::{self as metrics, Op, Outcome, Protocol};
use flashsale_protocol::json::ApiError;
use flashsale_protocol::DRAW_PAGE_LEN;
use futures_util::stream;

use super::backend::BackendError;
use super::{api, api_error, AppState};

/// The published draw of `sale`, streamed; 425 before it.
pub(crate) async fn document(State(state): State<AppState>, Path(sale): Path<String>) -> Response {
    if let Some(refused) = api::invalid_sale(&sale) {
        metrics::count(Protocol::Http, Op::Draw, ApiError::InvalidRequest);
        return refused;
    }
    let info = match state.backend.draw(&sale).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            metrics::count(Protocol::Http, Op::Draw, ApiError::NoDraw);
            return api_error(ApiError::NoDraw, format!("sale {sale:?} has no draw"));
        }
        Err(e) => {
            metrics::count(Protocol::Http, Op::Draw, Outcome::Error);
            return api::status_error(&e);
        }
    };
    let Some(seed) = info.seed else {
        metrics::count(Protocol::Http, Op::Draw, ApiError::DrawPending);
        return pending(&sale, info.draws_at);
    };
    metrics::count(Protocol::Http, Op::Draw, Outcome::Ok);
    let head = format!(
        r#"{{"sale":{},"capacity":{},"draws_at":{},"commitment":"{}","seed":"{}","entrants":["#,
        serde_json::to_string(&sale).unwrap_or_default(),
        info.capacity,
        info.draws_at,
        hex::encode(info.commitment),
        hex::encode(seed),
    );
    let body = Body::from_stream(stream::unfold(
        Writer {
            state,
            sale,
            part: Part::Head(head),
        },
        Writer::next,
    ));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400, immutable"),
    );
    response
}

/// 425 with `Retry-After`: the seconds to the draw, at least one.
fn pending(sale: &str, draws_at: u64) -> Response {
    let wait_s = draws_at.saturating_sub(now_ms()).div_ceil(1000).max(1);
    let mut response = api_error(
        ApiError::DrawPending,
        format!(
            "the draw of sale {sale:?} is made at {draws_at} (Unix ms) and published once durable"
        ),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(wait_s));
    response
}

/// Where the document's writing is.
enum Part {
    /// The fields before the entrants.
    Head(String),
    /// The entrants, from this index.
    Entrants(u32),
    /// The winners, from this index.
    Winners(u32),
    /// Written.
    Done,
}

/// Writes the document one piece at a time.
struct Writer {
    state: AppState,
    sale: String,
    part: Part,
}

impl Writer {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        let chunk = match std::mem::replace(&mut self.part, Part::Done) {
            Part::Done => return None,
            Part::Head(head) => {
                self.part = Part::Entrants(0);
                Ok(Bytes::from(head))
            }
            Part::Entrants(from) => self.page(false, from).await,
            Part::Winners(from) => self.page(true, from).await,
        }
        // The head is out: the only way left to say "incomplete" is to cut
        // the body short, which a reader sees as broken JSON.
        .map_err(|e| {
            tracing::warn!(sale = %self.sale, ?e, "the draw's document was cut short");
            std::io::Error::other(format!("{e:?}"))
        });
        Some((chunk, self))
    }

    /// The page of users from `from`, written, and the part after it.
    async fn page(&mut self, winners: bool, from: u32) -> Result<Bytes, BackendError> {
        let page = self
            .state
            .backend
            .draw_page(&self.sale, winners, from)
            .await?;
        let mut out = String::with_capacity(page.users.len() * 24 + 32);
        for (i, user) in (from..).zip(&page.users) {
            if i > 0 {
                out.push(',');
            }
            if winners {
                out.push_str(&format!(r#"{{"user":{user},"ticket":{}}}"#, i + 1));
            } else {
                out.push_str(&user.to_string());
            }
        }
        let read = u32::try_from(page.users.len()).unwrap_or(DRAW_PAGE_LEN);
        let next = from.saturating_add(read);
        let finished = page.users.is_empty() || next >= page.total;
        self.part = match (winners, finished) {
            (false, false) => Part::Entrants(next),
            (false, true) => {
                out.push_str(r#"],"winners":["#);
                Part::Winners(0)
            }
            (true, false) => Part::Winners(next),
            (true, true) => {
                out.push_str("]}");
                Part::Done
            }
        };
        Ok(Bytes::from(out))
    }
}
