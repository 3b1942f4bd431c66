//! The sale's draw as the target tells it: its facts before the window
//! opens, whether its seed is published yet, and the published document.
//!
//! Over the native protocol these are `Status`, `Draw` and `DrawPage` on a
//! [`flashsale_client::Pool`]; over HTTP `GET /api/sales/{sale}` and
//! `GET /api/sales/{sale}/draw`, on one keep-alive connection reopened
//! when it breaks. Either way the document is a [`Document`], so the same
//! audit reads both.

use std::time::Duration;

use bytes::Bytes;
use flashsale_client::{ClientConfig, Pool};
use flashsale_draw::{to_hex, Document, Winner};
use flashsale_protocol::json::SaleBody;
use flashsale_protocol::DRAW_PAGE_LEN;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HOST;
use hyper::{Request, StatusCode};

use crate::config::Target;
use crate::http::{open, sale_path};
use crate::transport::within;

/// A sale with a draw, as read before its window opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawSale {
    /// Tickets in the sale.
    pub capacity: u32,
    /// Tickets left.
    pub remaining: u32,
    /// When entries open, Unix ms.
    pub opens_at: u64,
    /// When entries close and the draw is made, Unix ms.
    pub draws_at: u64,
    /// `SHA-256(seed)`, lowercase hex.
    pub commitment: String,
    /// Entrants so far.
    pub entrants: u32,
    /// Whether the seed is published (the draw made).
    pub published: bool,
}

/// A control connection to the target, for the draw's questions.
pub enum Control {
    /// A flashsale server: a pool of native connections.
    Native(Pool),
    /// An HTTP front.
    Http {
        /// `host:port`.
        addr: String,
        /// The connection, while it lasts.
        sender: Option<SendRequest<Empty<Bytes>>>,
    },
}

impl Control {
    /// Opens a control connection to `target` (`connections` of them over
    /// the native protocol), each request bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// The target cannot be reached, or is Redis (which has no draw).
    pub async fn connect(
        target: &Target,
        connections: usize,
        timeout: Duration,
    ) -> anyhow::Result<Control> {
        match target {
            Target::Native { addr, api_key } => {
                let mut config = ClientConfig::new(addr.clone())
                    .connect_timeout(timeout)
                    .request_timeout(timeout);
                if let Some(key) = api_key {
                    config = config.api_key(key.clone());
                }
                Ok(Control::Native(config.connect_pool(connections).await?))
            }
            Target::Http { addr, .. } => Ok(Control::Http {
                addr: addr.clone(),
                sender: None,
            }),
            Target::Redis { .. } => {
                anyhow::bail!("Redis has no draw: --draw needs a flashsale target")
            }
        }
    }

    /// The sale's draw as it stands.
    ///
    /// # Errors
    ///
    /// The sale is unknown or has no draw, or the target cannot answer.
    pub async fn sale(&mut self, sale: &str) -> anyhow::Result<DrawSale> {
        match self {
            Control::Native(pool) => {
                let status = pool.status(sale).await?;
                let Some(draw) = pool.draw(sale).await? else {
                    anyhow::bail!("sale {sale:?} has no draw window");
                };
                Ok(DrawSale {
                    capacity: status.capacity,
                    remaining: status.remaining,
                    opens_at: status.opens_at,
                    draws_at: draw.draws_at,
                    commitment: to_hex(&draw.commitment),
                    entrants: draw.entrants,
                    published: draw.seed.is_some(),
                })
            }
            Control::Http { .. } => {
                let body = self.get(&sale_path(sale), StatusCode::OK).await?;
                let body: SaleBody = serde_json::from_slice(&body)?;
                let Some(draw) = body.draw else {
                    anyhow::bail!("sale {sale:?} has no draw window");
                };
                Ok(DrawSale {
                    capacity: body.status.capacity,
                    remaining: body.status.remaining,
                    opens_at: body.status.opens_at,
                    draws_at: draw.draws_at,
                    commitment: draw.commitment,
                    entrants: draw.entrants,
                    published: draw.seed.is_some(),
                })
            }
        }
    }

    /// The published draw of `sale`.
    ///
    /// # Errors
    ///
    /// The draw is not published, or the target cannot answer.
    pub async fn document(&mut self, sale: &str) -> anyhow::Result<Document> {
        match self {
            Control::Native(pool) => {
                let Some(info) = pool.draw(sale).await? else {
                    anyhow::bail!("sale {sale:?} has no draw window");
                };
                let Some(seed) = info.seed else {
                    anyhow::bail!("the draw of sale {sale:?} is not published");
                };
                let winners = pages(pool, sale, true).await?;
                let entrants = pages(pool, sale, false).await?;
                Ok(Document {
                    sale: sale.to_owned(),
                    capacity: info.capacity,
                    draws_at: info.draws_at,
                    commitment: to_hex(&info.commitment),
                    seed: to_hex(&seed),
                    entrants,
                    winners: winners
                        .into_iter()
                        .zip(1..)
                        .map(|(user, ticket)| Winner { user, ticket })
                        .collect(),
                })
            }
            Control::Http { .. } => {
                let path = format!("{}/draw", sale_path(sale));
                let body = self.get(&path, StatusCode::OK).await?;
                Ok(serde_json::from_slice(&body)?)
            }
        }
    }

    /// `GET path` on the HTTP front; the body, if the status is `expected`.
    async fn get(&mut self, path: &str, expected: StatusCode) -> anyhow::Result<Bytes> {
        let Control::Http { addr, sender } = self else {
            anyhow::bail!("not an HTTP target");
        };
        let mut conn = match sender.take() {
            Some(conn) if !conn.is_closed() => conn,
            _ => open(addr).await?,
        };
        let request = Request::builder()
            .uri(path)
            .header(HOST, addr.as_str())
            .body(Empty::new())?;
        let response = conn.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        *sender = Some(conn);
        anyhow::ensure!(
            status == expected,
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        Ok(body)
    }
}

/// Every page of the published winners (`winners`) or entrants.
async fn pages(pool: &Pool, sale: &str, winners: bool) -> anyhow::Result<Vec<u64>> {
    let mut users = Vec::new();
    loop {
        let from = u32::try_from(users.len())?;
        let page = pool.draw_page(sale, winners, from).await?;
        if page.users.is_empty() || users.len() >= page.total as usize {
            return Ok(users);
        }
        anyhow::ensure!(
            page.users.len() <= DRAW_PAGE_LEN as usize,
            "a draw page of {} users, more than {DRAW_PAGE_LEN}",
            page.users.len()
        );
        users.extend(page.users);
    }
}

/// Asks `control` for `sale` until its draw is published, every `every`,
/// for at most `patience`. Whether it was.
///
/// # Errors
///
/// The target cannot answer.
pub async fn await_published(
    control: &mut Control,
    sale: &str,
    every: Duration,
    patience: Duration,
) -> anyhow::Result<bool> {
    let until = tokio::time::Instant::now() + patience;
    loop {
        let asked = tokio::time::Instant::now();
        if within(patience, "the draw's status", control.sale(sale))
            .await?
            .published
        {
            return Ok(true);
        }
        if asked >= until {
            return Ok(false);
        }
        tokio::time::sleep_until(asked + every).await;
    }
}
