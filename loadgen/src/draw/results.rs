//! Every user asks for their own result once the draw is published: a
//! native `Lookup` (what a shop's back end asks for its buyer), or
//! `GET /api/sales/{sale}/me` signed in as the user (what their page asks).
//!
//! Native lookups are pipelined ([`crate::native::lookups`]), many in flight
//! on each of `connections` connections; HTTP ones go one at a time per
//! keep-alive connection, over `connections` of them. A `busy` answer (the
//! result still being written) is asked again after a short pause, a
//! bounded number of times; whatever is still unanswered is
//! [`Told::Unanswered`], which the verdict counts against the user's result.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use flashsale_protocol::json::LookupBody;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};

use super::verdict::Told;
use crate::config::Target;
use crate::http::{open, sale_path, HttpShared, HttpTransport};
use crate::native::lookups::{self, BUSY_RETRIES};
use crate::transport::Transport;

/// The pause before asking again after `busy` over HTTP.
const BUSY_PAUSE: Duration = Duration::from_millis(10);

/// What users `first..first + users` are told, in id order, asked over
/// `connections` connections and given up on at `deadline`.
///
/// # Errors
///
/// The target cannot be reached, or is an HTTP target whose tokens cannot
/// be made.
pub async fn ask_all(
    target: &Target,
    sale: &str,
    users: (u64, u64),
    connections: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Vec<Told>> {
    match target {
        Target::Native { .. } => {
            let told = lookups::ask_all(target, sale, users, connections, deadline).await?;
            Ok(told
                .iter()
                .map(|body| body.as_ref().map_or(Told::Unanswered, Told::of))
                .collect())
        }
        Target::Http { .. } => http(target, sale, users, connections, deadline).await,
        Target::Redis { .. } => {
            anyhow::bail!("results are asked of a flashsale server or its HTTP front")
        }
    }
}

async fn http(
    target: &Target,
    sale: &str,
    (first, users): (u64, u64),
    connections: usize,
    deadline: tokio::time::Instant,
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
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
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
