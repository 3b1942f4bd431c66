//! Every user asks for their own result once the draw is published: a
//! native `Lookup` (what a shop's back end asks for its buyer), or
//! `GET /api/sales/{sale}/me` signed in as the user (what their page asks).
//!
//! Native lookups are pipelined over a pool, many in flight; HTTP ones go
//! one at a time per keep-alive connection, over `connections` of them. A
//! `busy` answer (the result still being written) is asked again after a
//! short pause, a bounded number of times; whatever is still unanswered is
//! [`Told::Unanswered`], which the verdict counts against the user's result.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use flashsale_client::{ClientError, Pool};
use flashsale_protocol::json::LookupBody;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};

use super::verdict::Told;
use crate::config::Target;
use crate::http::{open, sale_path, HttpShared, HttpTransport};
use crate::transport::Transport;

/// Times a `busy` lookup is asked again.
const BUSY_RETRIES: u32 = 50;
/// The pause before asking again after `busy`.
const BUSY_PAUSE: Duration = Duration::from_millis(10);
/// Native lookups in flight over the whole pool.
const NATIVE_IN_FLIGHT: usize = 4096;

/// What users `first..first + users` are told, in id order.
///
/// # Errors
///
/// An HTTP target whose tokens cannot be made.
pub async fn ask_all(
    target: &Target,
    pool: Option<&Pool>,
    sale: &str,
    (first, users): (u64, u64),
    connections: usize,
) -> anyhow::Result<Vec<Told>> {
    match (target, pool) {
        (Target::Native { .. }, Some(pool)) => Ok(native(pool, sale, first, users).await),
        (Target::Http { .. }, _) => http(target, sale, first, users, connections).await,
        _ => anyhow::bail!("results are asked of a flashsale server or its HTTP front"),
    }
}

async fn native(pool: &Pool, sale: &str, first: u64, users: u64) -> Vec<Told> {
    let mut told = vec![Told::Unanswered; usize::try_from(users).unwrap_or(0)];
    let mut answers = futures_util::stream::iter(first..first + users)
        .map(|user| async move { (user, native_one(pool, sale, user).await) })
        .buffer_unordered(NATIVE_IN_FLIGHT);
    while let Some((user, answer)) = answers.next().await {
        if let Some(slot) = usize::try_from(user - first)
            .ok()
            .and_then(|i| told.get_mut(i))
        {
            *slot = answer;
        }
    }
    told
}

async fn native_one(pool: &Pool, sale: &str, user: u64) -> Told {
    for _ in 0..=BUSY_RETRIES {
        match pool.me(sale, user).await {
            Ok(body) => return Told::of(&body),
            Err(ClientError::Busy { .. }) => tokio::time::sleep(BUSY_PAUSE).await,
            Err(_) => return Told::Unanswered,
        }
    }
    Told::Unanswered
}

async fn http(
    target: &Target,
    sale: &str,
    first: u64,
    users: u64,
    connections: usize,
) -> anyhow::Result<Vec<Told>> {
    let shared = Rc::new(HttpTransport::prepare(target, sale)?);
    let told = Rc::new(RefCell::new(vec![
        Told::Unanswered;
        usize::try_from(users).unwrap_or(0)
    ]));
    let path = Rc::new(format!("{}/me", sale_path(sale)));
    let len = told.borrow().len();
    let lanes = connections.clamp(1, len.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        let (shared, told, path) = (Rc::clone(&shared), Rc::clone(&told), Rc::clone(&path));
        tasks.spawn_local(async move {
            let mut conn = None;
            for i in (lane..len).step_by(lanes) {
                let user = first + i as u64;
                let answer = http_one(&shared, &path, user, &mut conn).await;
                told.borrow_mut()[i] = answer;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let told = told.borrow().clone();
    Ok(told)
}

/// `user`'s result over `conn` (opened, or reopened, as needed).
async fn http_one(
    shared: &HttpShared,
    path: &str,
    user: u64,
    conn: &mut Option<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>>,
) -> Told {
    for _ in 0..=BUSY_RETRIES {
        let mut sender = match conn.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => match open(shared.addr()).await {
                Ok(sender) => sender,
                Err(_) => return Told::Unanswered,
            },
        };
        let Ok(request) = shared.signed(Method::GET, path, user) else {
            return Told::Unanswered;
        };
        let Ok(response) = sender.send_request(request).await else {
            continue;
        };
        let status = response.status();
        let Ok(body) = response.into_body().collect().await else {
            continue;
        };
        *conn = Some(sender);
        match status {
            StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(BUSY_PAUSE).await,
            // A 404 is a non-entrant's `{"ticket":null}`, not any error.
            StatusCode::OK | StatusCode::NOT_FOUND => {
                return serde_json::from_slice::<serde_json::Value>(&body.to_bytes())
                    .ok()
                    .filter(|v| v.get("ticket").is_some())
                    .and_then(|v| serde_json::from_value::<LookupBody>(v).ok())
                    .map_or(Told::Unanswered, |body| Told::of(&body));
            }
            _ => return Told::Unanswered,
        }
    }
    Told::Unanswered
}
