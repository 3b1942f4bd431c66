//! What the operator's API does in this process: the
//! [`Operator`](flashsale_http::admin::Operator) over the service, the
//! registry of sales and the log.
//!
//! Creating a sale and pausing, resuming or closing one are rare and must
//! be totally ordered with each other (two creates of one id, a resume
//! racing a close), so they take one async lock for their whole course. Each
//! is written to the log and made durable *before* it takes effect: a sale
//! answered as created survives a crash, and a pause the operator was told
//! about is still a pause after a restart.

use std::sync::Arc;

use flashsale_core::clock::now_ms;
use flashsale_core::{
    DrawSpec, History, Journal, Sale, SaleSpec, SaleState, MAX_CAPACITY, MAX_DRAW_WINDOW_MS,
    MAX_HOLD_MS,
};
use flashsale_draw::Seed;
use flashsale_http::admin::{AdminError, Created, Operator};
use flashsale_http::{Backend, BackendError};
use flashsale_protocol::json::{AdminSaleBody, ApiError, CreateSaleBody, DrawBody};
use flashsale_protocol::{ConfirmOutcome, ReleaseOutcome, SaleAction, MAX_SALE_ID_LEN};
use flashsale_wal::Record;
use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, Mutex};

use crate::backend::LocalBackend;
use crate::catalog::definition_record;
use crate::journal::WalJournal;
use crate::service::{draw_info, info, Service};
use crate::serving::Serving;

/// The operator's API over this process's sales.
pub struct LocalOperator {
    serving: Arc<Serving>,
    backend: LocalBackend,
    /// Orders the operator's changes (see the module docs).
    changing: Mutex<()>,
}

impl LocalOperator {
    /// An operator over the service `serving` holds; sales with holds it
    /// creates write their decisions to that service's log.
    pub fn new(serving: Arc<Serving>) -> LocalOperator {
        LocalOperator {
            backend: LocalBackend::new(Arc::clone(&serving)),
            serving,
            changing: Mutex::new(()),
        }
    }

    /// The service now, or the answer of a node of a cluster that does not
    /// lead it.
    fn service(&self) -> Result<Arc<Service>, AdminError> {
        self.serving.current().ok_or_else(|| {
            let leader = self.serving.not_leader().message;
            AdminError::new(
                ApiError::NotLeader,
                format!("this node does not lead its cluster; the leader serves at {leader:?}"),
            )
        })
    }

    /// Appends `record` to `service`'s log and waits until it is durable.
    async fn log(&self, service: &Service, record: Record) -> Result<(), AdminError> {
        let (tx, rx) = oneshot::channel();
        service.wal().append(record, Some(tx));
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AdminError::new(
                ApiError::LogUnavailable,
                format!("the change could not be made durable: {e}"),
            )),
            Err(_) => Err(AdminError::new(
                ApiError::LogUnavailable,
                "the log writer stopped",
            )),
        }
    }

    async fn create_sale(&self, body: CreateSaleBody) -> Result<Created, AdminError> {
        let now = now_ms();
        let seed = match body.draw_window_ms {
            Some(_) => {
                crate::server::draw_seed().map_err(|e| AdminError::new(ApiError::Internal, e))?
            }
            None => [0; flashsale_draw::SEED_LEN],
        };
        let requested = spec_of(&body, now, seed)?;
        let _changing = self.changing.lock().await;
        let service = self.service()?;
        if let Some(existing) = service.sales().load().get(&requested.id) {
            same_definition(existing.spec(), &body)?;
            return Ok(Created::Existing(admin_body(existing, now)));
        }
        // Durable before anyone is told: the seed behind the commitment a
        // page shows from now on must survive a crash.
        self.log(&service, definition_record(&requested)).await?;
        let id = requested.id.clone();
        let journal: Arc<dyn Journal> = Arc::new(WalJournal::new(service.wal().clone()));
        let sale = Sale::recover(requested, History::default(), journal)
            .map_err(|e| AdminError::new(ApiError::InvalidRequest, e.to_string()))?;
        let sale = service
            .sales()
            .add(sale)
            .map_err(|e| AdminError::new(ApiError::Conflict, e.to_string()))?;
        tracing::info!(sale = %id, capacity = sale.spec().capacity, hold_ms = ?sale.spec().hold_ms, draw = ?sale.spec().draw, "sale created by the operator");
        Ok(Created::New(admin_body(&sale, now_ms())))
    }

    async fn change_sale(&self, id: &str, action: SaleAction) -> Result<AdminSaleBody, AdminError> {
        let _changing = self.changing.lock().await;
        let service = self.service()?;
        let sale = service
            .sales()
            .load()
            .get(id)
            .cloned()
            .ok_or_else(|| AdminError::new(ApiError::UnknownSale, format!("no sale {id:?}")))?;
        let state = sale.status(now_ms()).state;
        let closed = state == SaleState::Closed;
        match (action, closed) {
            // Closing twice changes nothing: the same answer, no record.
            (SaleAction::Close, true) => return Ok(admin_body(&sale, now_ms())),
            (_, true) => {
                return Err(AdminError::new(
                    ApiError::Conflict,
                    format!("sale {id:?} is closed, and closing is final"),
                ))
            }
            (SaleAction::Pause, false) if state == SaleState::Paused => {
                return Ok(admin_body(&sale, now_ms()))
            }
            (SaleAction::Resume, false) if state != SaleState::Paused => {
                return Ok(admin_body(&sale, now_ms()))
            }
            _ => {}
        }
        self.log(
            &service,
            Record::SaleChanged {
                sale: id.to_owned(),
                action,
                at_ms: now_ms(),
            },
        )
        .await?;
        sale.apply(action);
        tracing::info!(sale = %id, action = action.label(), "sale changed by the operator");
        Ok(admin_body(&sale, now_ms()))
    }
}

impl Operator for LocalOperator {
    fn sales(&self) -> BoxFuture<'_, Vec<AdminSaleBody>> {
        Box::pin(async move {
            let now = now_ms();
            let Some(service) = self.serving.current() else {
                return Vec::new();
            };
            let sales = service.sales().load();
            sales.iter().map(|sale| admin_body(sale, now)).collect()
        })
    }

    fn create(&self, sale: CreateSaleBody) -> BoxFuture<'_, Result<Created, AdminError>> {
        Box::pin(self.create_sale(sale))
    }

    fn change<'a>(
        &'a self,
        sale: &'a str,
        action: SaleAction,
    ) -> BoxFuture<'a, Result<AdminSaleBody, AdminError>> {
        Box::pin(self.change_sale(sale, action))
    }

    fn confirm<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
        payment_ref: &'a str,
    ) -> BoxFuture<'a, Result<ConfirmOutcome, BackendError>> {
        self.backend.confirm(sale, user, payment_ref)
    }

    fn release<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<ReleaseOutcome, BackendError>> {
        Box::pin(self.backend.release(sale, user))
    }

    fn refresh_metrics(&self) {
        if let Some(service) = self.serving.current() {
            crate::gauges::refresh(&service);
        }
    }
}

/// `sale` as the admin API answers it at `now_ms`.
fn admin_body(sale: &Sale, now_ms: u64) -> AdminSaleBody {
    AdminSaleBody {
        sale: info(sale, now_ms),
        draw_window_ms: sale.spec().draw.as_ref().map(|d| d.window_ms),
        draw: draw_info(sale).as_ref().map(DrawBody::from),
    }
}

/// The core's spec for a create request at `now_ms`, or 400 naming the
/// field; a sale with a draw gets `seed` (fresh from the operating system:
/// see `create`). Pure: the `admin_body` fuzz target calls it as `create`
/// does.
///
/// # Errors
///
/// An id, a capacity, a hold or a draw window out of bounds.
pub fn spec_of(body: &CreateSaleBody, now_ms: u64, seed: Seed) -> Result<SaleSpec, AdminError> {
    let invalid = |message: String| AdminError::new(ApiError::InvalidRequest, message);
    if body.sale.is_empty() || body.sale.len() > MAX_SALE_ID_LEN {
        return Err(invalid(format!(
            "sale: the id must be 1..={MAX_SALE_ID_LEN} bytes"
        )));
    }
    if !(1..=MAX_CAPACITY).contains(&body.capacity) {
        return Err(invalid(format!("capacity: must be 1..={MAX_CAPACITY}")));
    }
    let max_hold_s = MAX_HOLD_MS / 1000;
    if let Some(hold) = body.hold_seconds {
        if hold == 0 || u64::from(hold) > max_hold_s {
            return Err(invalid(format!(
                "hold_seconds: must be 1..={max_hold_s}, or null for a sale without holds"
            )));
        }
    }
    if let Some(window) = body.draw_window_ms {
        if !(1..=MAX_DRAW_WINDOW_MS).contains(&window) {
            return Err(invalid(format!(
                "draw_window_ms: must be 1..={MAX_DRAW_WINDOW_MS}, or null for a sale without a draw"
            )));
        }
    }
    Ok(SaleSpec {
        hold_ms: body.hold_seconds.map(|s| u64::from(s) * 1000),
        draw: body
            .draw_window_ms
            .map(|window_ms| DrawSpec { window_ms, seed }),
        ..SaleSpec::instant(
            body.sale.clone(),
            body.capacity,
            body.opens_at.unwrap_or(now_ms),
        )
    })
}

/// Ok if `body` asks for the sale `stored` already is (an opening time of
/// `null` matches any); 409 naming the first field that differs.
///
/// # Errors
///
/// A field of `body` differs from `stored`.
pub fn same_definition(stored: &SaleSpec, body: &CreateSaleBody) -> Result<(), AdminError> {
    let stored_hold = stored.hold_ms.map(|ms| ms / 1000);
    let asked_hold = body.hold_seconds.map(u64::from);
    let differs = if stored.capacity != body.capacity {
        Some((
            "capacity",
            stored.capacity.to_string(),
            body.capacity.to_string(),
        ))
    } else if body.opens_at.is_some_and(|at| at != stored.opens_at_ms) {
        Some((
            "opens_at",
            stored.opens_at_ms.to_string(),
            format!("{:?}", body.opens_at),
        ))
    } else if stored_hold != asked_hold {
        Some((
            "hold_seconds",
            format!("{stored_hold:?}"),
            format!("{asked_hold:?}"),
        ))
    } else if stored.draw.as_ref().map(|d| d.window_ms) != body.draw_window_ms {
        Some((
            "draw_window_ms",
            format!("{:?}", stored.draw.as_ref().map(|d| d.window_ms)),
            format!("{:?}", body.draw_window_ms),
        ))
    } else {
        None
    };
    match differs {
        None => Ok(()),
        Some((field, stored_value, asked)) => Err(AdminError::new(
            ApiError::Conflict,
            format!(
                "{field}: sale {:?} exists with {field} {stored_value}, not {asked}",
                stored.id
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> CreateSaleBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn invalid_definitions_name_their_field() {
        for (json, field) in [
            (r#"{"sale":"","capacity":1}"#, "sale"),
            (r#"{"sale":"g","capacity":0}"#, "capacity"),
            (
                r#"{"sale":"g","capacity":1,"hold_seconds":0}"#,
                "hold_seconds",
            ),
            (
                r#"{"sale":"g","capacity":1,"hold_seconds":999999999}"#,
                "hold_seconds",
            ),
            (
                r#"{"sale":"g","capacity":1,"draw_window_ms":0}"#,
                "draw_window_ms",
            ),
            (
                r#"{"sale":"g","capacity":1,"draw_window_ms":86400001}"#,
                "draw_window_ms",
            ),
        ] {
            let e = spec_of(&body(json), 5, [0; 32]).unwrap_err();
            assert_eq!(e.error, ApiError::InvalidRequest);
            assert!(e.message.starts_with(field), "{json}: {}", e.message);
        }
        let spec = spec_of(
            &body(r#"{"sale":"g","capacity":2,"hold_seconds":3}"#),
            5,
            [0; 32],
        )
        .unwrap();
        assert_eq!((spec.opens_at_ms, spec.hold_ms), (5, Some(3_000)));
    }

    #[test]
    fn a_repeated_definition_matches_and_a_different_one_names_the_field() {
        let stored = spec_of(
            &body(r#"{"sale":"g","capacity":2,"opens_at":9,"hold_seconds":3}"#),
            0,
            [0; 32],
        )
        .unwrap();
        let same = [
            r#"{"sale":"g","capacity":2,"opens_at":9,"hold_seconds":3}"#,
            r#"{"sale":"g","capacity":2,"opens_at":null,"hold_seconds":3}"#,
        ];
        for json in same {
            assert!(same_definition(&stored, &body(json)).is_ok(), "{json}");
        }
        for (json, field) in [
            (r#"{"sale":"g","capacity":3,"hold_seconds":3}"#, "capacity"),
            (
                r#"{"sale":"g","capacity":2,"opens_at":8,"hold_seconds":3}"#,
                "opens_at",
            ),
            (r#"{"sale":"g","capacity":2}"#, "hold_seconds"),
            (
                r#"{"sale":"g","capacity":2,"hold_seconds":3,"draw_window_ms":5}"#,
                "draw_window_ms",
            ),
        ] {
            let e = same_definition(&stored, &body(json)).unwrap_err();
            assert_eq!(e.error, ApiError::Conflict);
            assert!(e.message.starts_with(field), "{json}: {}", e.message);
        }
    }
}
