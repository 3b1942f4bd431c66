//! After the rush, in a sale with holds: the shop pays for some holds, some
//! buyers cancel theirs, the rest let them expire; and the sale is watched
//! so that the run stops once every ticket is confirmed.
//!
//! Each hold new to its user is acted on `--pay-after` after its answer
//! arrived, as [`payer_of`] decides for the user. Confirmations are a
//! backend call (the payment provider tells the shop, the shop tells
//! flashsale), so they go over the native protocol with the
//! [`flashsale_client`] library, as a shop's backend would; the buyers'
//! cancels take the same way. A run with payments therefore needs a native
//! target.
//!
//! A user whose hold expired or was cancelled goes on reserving with the
//! rest (a run with payments keeps cycling through its users), so tickets
//! that come back find new buyers, until every one is paid for.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use flashsale_client::{ClientConfig, ClientError, Pool, ReconnectPolicy};
use flashsale_protocol::SaleInfo;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::check::{unix_ms, HoldRef};
use crate::config::{Config, Payment, Target};
use crate::drive::Ctx;
use crate::plan::{payer_of, Payer};

/// How often the sale is asked whether every ticket is confirmed.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// Connections of the shop, per worker.
const SHOP_CONNECTIONS: usize = 2;

/// One worker's shop.
pub struct Shop {
    pool: Pool,
    sale: String,
    payment: Payment,
    timeout: Duration,
    /// Holds seen and not yet scheduled: user, hold, when to act.
    queue: RefCell<Vec<(u64, HoldRef, Instant)>>,
    wake: Notify,
    /// Every ticket is confirmed: no more reservations are needed.
    settled: Cell<bool>,
    /// The worker's users are done: the shop ends once its last action is.
    closing: Cell<bool>,
}

impl Shop {
    /// Opens the shop of a run with `payment`.
    ///
    /// # Errors
    ///
    /// The target is not a native one, or cannot be reached.
    pub async fn open(config: &Config, payment: Payment) -> anyhow::Result<Shop> {
        Ok(Shop {
            pool: connect(&config.target, config.timeout, SHOP_CONNECTIONS).await?,
            sale: config.sale.clone(),
            payment,
            timeout: config.timeout,
            queue: RefCell::new(Vec::new()),
            wake: Notify::new(),
            settled: Cell::new(false),
            closing: Cell::new(false),
        })
    }

    /// `hold` is new to `user`: act on it after the payment delay.
    pub fn on_hold(&self, user: u64, hold: HoldRef) {
        let at = Instant::now() + self.payment.after;
        self.queue.borrow_mut().push((user, hold, at));
        self.wake.notify_one();
    }

    /// Whether every ticket of the sale is confirmed.
    pub fn settled(&self) -> bool {
        self.settled.get()
    }

    /// The worker's users are done: finish the actions scheduled, then end.
    pub fn close(&self) {
        self.closing.set(true);
        self.wake.notify_one();
    }

    /// Acts on every hold it hears of and watches the sale, until closed
    /// and idle, or the run's deadline.
    pub async fn run(self: Rc<Self>, ctx: Rc<Ctx>) {
        let mut actions = JoinSet::new();
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due: Vec<_> = self.queue.borrow_mut().drain(..).collect();
            for (user, hold, at) in due {
                let payer = payer_of(user, &self.payment);
                if payer != Payer::Abandons && at < ctx.deadline {
                    actions.spawn_local(act(
                        Rc::clone(&self),
                        Rc::clone(&ctx),
                        user,
                        hold,
                        at,
                        payer,
                    ));
                }
            }
            if self.closing.get() && actions.is_empty() && self.queue.borrow().is_empty() {
                return;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                Some(_) = actions.join_next(), if !actions.is_empty() => {}
                _ = watch.tick(), if !self.settled.get() => self.watch().await,
                () = tokio::time::sleep_until(ctx.deadline) => {
                    actions.abort_all();
                    return;
                }
            }
        }
    }

    async fn watch(&self) {
        let sales = tokio::time::timeout(self.timeout, self.pool.sales()).await;
        if let Ok(Ok(sales)) = sales {
            if let Some(info) = sales.iter().find(|s| s.sale == self.sale) {
                self.settled.set(info.confirmed >= info.capacity);
            }
        }
    }
}

/// The payment reference the shop sends for `user`: one per user, so that
/// a repeated confirmation is recognised as the same payment.
pub fn payment_ref(user: u64) -> String {
    format!("loadgen-{user}")
}

async fn act(shop: Rc<Shop>, ctx: Rc<Ctx>, user: u64, hold: HoldRef, at: Instant, payer: Payer) {
    tokio::time::sleep_until(at).await;
    let cancel = payer == Payer::Cancels;
    ctx.tally.borrow_mut().acting(user, cancel);
    let sent = unix_ms();
    let (sale, timeout) = (shop.sale.as_str(), shop.timeout);
    if cancel {
        let answer = answered(timeout, shop.pool.cancel(sale, user)).await;
        ctx.tally.borrow_mut().cancelled(user, hold, answer);
    } else {
        let reference = payment_ref(user);
        let answer = answered(timeout, shop.pool.confirm(sale, user, &reference)).await;
        ctx.tally.borrow_mut().confirmed(user, hold, sent, answer);
    }
}

/// The outcome of `call`, or `None` if it failed or took longer than
/// `timeout`.
async fn answered<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Option<T> {
    tokio::time::timeout(timeout, call).await.ok()?.ok()
}

/// A pool of `connections` to a native target.
async fn connect(target: &Target, timeout: Duration, connections: usize) -> anyhow::Result<Pool> {
    let Target::Native { addr, api_key } = target else {
        anyhow::bail!("payments (--pay-fraction) need a flashsale native target: confirming a hold is a backend call");
    };
    let mut config = ClientConfig::new(addr.clone())
        .connect_timeout(timeout)
        .request_timeout(timeout)
        .reconnect(ReconnectPolicy::no_retry());
    if let Some(key) = api_key {
        config = config.api_key(key.clone());
    }
    Pool::connect(config, connections)
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// The sale's counters and options, as the target lists them.
///
/// # Errors
///
/// The target is not a native one, cannot be reached, or has no such sale.
pub async fn sale_info(target: &Target, sale: &str, timeout: Duration) -> anyhow::Result<SaleInfo> {
    let pool = connect(target, timeout, 1).await?;
    let sales = tokio::time::timeout(timeout, pool.sales())
        .await
        .context("listing the sales timed out")??;
    sales
        .into_iter()
        .find(|s| s.sale == sale)
        .with_context(|| format!("the server has no sale {sale:?}"))
}
