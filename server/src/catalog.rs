//! Which sales the server runs: what the log remembers, reconciled with what
//! the command line asks for.
//!
//! Sale definitions are records in the write-ahead log, so a restart on the
//! same data directory with no flags restores every sale exactly. A flag may
//! add a sale, or repeat a stored one; it may never change one: a different
//! capacity or opening time for a sale that has already sold tickets would
//! silently rewrite history, so it is refused with an error naming both
//! values. This module is pure: records in, a plan out.

use std::collections::HashMap;

use crate::config::{SaleArg, DEFAULT_CAPACITY, DEFAULT_SALE};
use crate::journal::change_of;
use flashsale_core::holds::Change;
use flashsale_core::{DrawSpec, History, Sale, SaleSpec};
use flashsale_draw::Seed;
use flashsale_protocol::SaleAction;
use flashsale_wal::{DrawSeed, Record};

/// A sale as the log describes it, with its durable winners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSale {
    /// The definition.
    pub spec: SaleSpec,
    /// `(user, ticket)` of every durable win, in log order (a sale without
    /// holds).
    pub sold: Vec<(u64, u32)>,
    /// Every hold, confirmation and release, in log order (a sale with
    /// holds).
    pub changes: Vec<Change>,
    /// The operator's last pause, resume or close, if any.
    pub gate: Option<SaleAction>,
    /// Every entrant of the sale's draw, in log order (a sale with a draw).
    pub entrants: Vec<u64>,
    /// When the draw was made, if its record is in the log.
    pub drawn_at_ms: Option<u64>,
}

impl StoredSale {
    /// A sale with nothing sold yet.
    pub fn new(spec: SaleSpec) -> StoredSale {
        StoredSale {
            spec,
            sold: Vec::new(),
            changes: Vec::new(),
            gate: None,
            entrants: Vec::new(),
            drawn_at_ms: None,
        }
    }

    /// What the core rebuilds the sale from.
    pub fn history(&self) -> History<'_> {
        History {
            sold: &self.sold,
            changes: &self.changes,
            entrants: &self.entrants,
            drawn_at_ms: self.drawn_at_ms,
        }
    }

    /// The records of the draw's winners that a crash cut off the log, to be
    /// appended before the sale is served; they are added to the sale too.
    ///
    /// The draw's record is followed, in ticket order, by one sale (or hold)
    /// per winner, and nothing else is sold before them; the log is a
    /// prefix of what was written, so if some are missing, they are the
    /// last ones and nothing follows. The draw made again from the seed and
    /// the logged entries is the same draw, so it names them.
    pub fn repair_draw(&mut self) -> Vec<Record> {
        let (Some(draw), Some(at_ms)) = (&self.spec.draw, self.drawn_at_ms) else {
            return Vec::new();
        };
        let winners = Sale::draw_winners(self.spec.capacity, draw, &self.entrants);
        let sale = self.spec.id.clone();
        let mut missing = Vec::new();
        match self.spec.hold_ms {
            None => {
                for (i, &user) in winners.iter().enumerate().skip(self.sold.len()) {
                    let ticket = ticket_of(i);
                    self.sold.push((user, ticket));
                    missing.push(Record::TicketSold {
                        sale: sale.clone(),
                        ticket,
                        user,
                        at_ms,
                    });
                }
            }
            Some(hold_ms) => {
                let expires_at_ms = at_ms.saturating_add(hold_ms);
                for (i, &user) in winners.iter().enumerate().skip(self.changes.len()) {
                    let ticket = ticket_of(i);
                    self.changes.push(Change::Held {
                        ticket,
                        user,
                        expires_at_ms,
                    });
                    missing.push(Record::HoldTaken {
                        sale: sale.clone(),
                        ticket,
                        user,
                        at_ms,
                        expires_at_ms,
                    });
                }
            }
        }
        missing
    }
}

/// The ticket of the winner at index `i` of a draw: `i + 1`.
fn ticket_of(i: usize) -> u32 {
    u32::try_from(i + 1).unwrap_or(u32::MAX)
}

/// What startup must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every sale to serve, stored ones first, in definition order.
    pub sales: Vec<StoredSale>,
    /// Definitions that are not in the log yet and must be appended (and made
    /// durable) before the server accepts a request.
    pub new_definitions: Vec<SaleSpec>,
}

/// Why the log and the flags cannot be reconciled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A flag contradicts a stored sale.
    #[error("sale {sale:?} is stored with {field} {stored}, but {requested} was requested; start without --sale {sale}, or with the stored value, or use another data directory")]
    Conflict {
        /// The sale id.
        sale: String,
        /// `capacity` or `opening time`.
        field: &'static str,
        /// The value in the log.
        stored: u64,
        /// The value on the command line.
        requested: u64,
    },
    /// A sale the core cannot serve (capacity or id out of range).
    #[error("sale {0:?} cannot be created: {1}")]
    Invalid(String, String),
    /// The same sale named twice on the command line.
    #[error("sale {0:?} is named more than once")]
    Duplicate(String),
    /// The log holds a sale defined twice, or a ticket for a sale it never
    /// defined: it was not written by this server.
    #[error("the log is inconsistent: {0}")]
    Inconsistent(String),
}

/// Groups the log's records into sales with their winners, holds and
/// operator changes.
pub fn stored_sales(records: &[Record]) -> Result<Vec<StoredSale>, CatalogError> {
    let mut sales: Vec<StoredSale> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for record in records {
        let (sale, event) = match record {
            Record::SaleDefined {
                sale,
                capacity,
                opens_at_ms,
            } => (
                sale,
                Event::Defined(SaleSpec::instant(sale.clone(), *capacity, *opens_at_ms)),
            ),
            Record::SaleWithHolds {
                sale,
                capacity,
                opens_at_ms,
                hold_ms,
            } => (
                sale,
                Event::Defined(SaleSpec {
                    hold_ms: Some(*hold_ms),
                    ..SaleSpec::instant(sale.clone(), *capacity, *opens_at_ms)
                }),
            ),
            Record::SaleWithDraw {
                sale,
                capacity,
                opens_at_ms,
                hold_ms,
                window_ms,
                seed,
            } => (
                sale,
                Event::Defined(SaleSpec {
                    hold_ms: *hold_ms,
                    draw: Some(DrawSpec {
                        window_ms: *window_ms,
                        seed: seed.0,
                    }),
                    ..SaleSpec::instant(sale.clone(), *capacity, *opens_at_ms)
                }),
            ),
            Record::DrawEntered { sale, user, .. } => (sale, Event::Entered(*user)),
            Record::DrawMade { sale, at_ms } => (sale, Event::Drawn(*at_ms)),
            Record::TicketSold {
                sale, ticket, user, ..
            } => (sale, Event::Sold(*user, *ticket)),
            Record::SaleChanged { sale, action, .. } => (sale, Event::Gate(*action)),
            Record::HoldTaken { sale, .. }
            | Record::HoldConfirmed { sale, .. }
            | Record::TicketReleased { sale, .. } => match change_of(record) {
                Some((_, change)) => (sale, Event::Hold(change)),
                None => continue,
            },
            // Optional kinds cannot change who owns a ticket (docs/WAL.md).
            Record::Unknown { .. } => continue,
        };
        let inconsistent =
            |what: String| CatalogError::Inconsistent(format!("sale {sale:?}: {what}"));
        if let Event::Defined(spec) = event {
            if index.insert(sale.as_str(), sales.len()).is_some() {
                return Err(inconsistent("defined twice".into()));
            }
            sales.push(StoredSale::new(spec));
            continue;
        }
        let Some(&i) = index.get(sale.as_str()) else {
            return Err(inconsistent(format!(
                "{} before its definition",
                record.kind_name()
            )));
        };
        let stored = &mut sales[i];
        let holds = stored.spec.hold_ms.is_some();
        let undrawn = stored.spec.draw.is_some() && stored.drawn_at_ms.is_none();
        match event {
            Event::Entered(_) | Event::Drawn(_) if stored.spec.draw.is_none() => {
                return Err(inconsistent(format!(
                    "a {} record in a sale without a draw",
                    record.kind_name()
                )));
            }
            Event::Entered(user) => {
                if !undrawn {
                    return Err(inconsistent(format!("user {user} entered after the draw")));
                }
                stored.entrants.push(user);
            }
            Event::Drawn(at_ms) => {
                if !undrawn {
                    return Err(inconsistent("drawn twice".into()));
                }
                stored.drawn_at_ms = Some(at_ms);
            }
            Event::Sold(..) | Event::Hold(_) if undrawn => {
                return Err(inconsistent(format!(
                    "a {} record before the draw",
                    record.kind_name()
                )));
            }
            Event::Defined(_) => {}
            Event::Sold(user, ticket) if !holds => stored.sold.push((user, ticket)),
            Event::Hold(change) if holds => stored.changes.push(change),
            Event::Sold(..) | Event::Hold(_) => {
                return Err(inconsistent(format!(
                    "a {} record in a sale {} holds",
                    record.kind_name(),
                    if holds { "with" } else { "without" }
                )));
            }
            Event::Gate(action) => {
                if stored.gate == Some(SaleAction::Close) {
                    return Err(inconsistent(format!("{} after close", action.label())));
                }
                stored.gate = Some(action);
            }
        }
    }
    Ok(sales)
}

/// What one record says about its sale.
enum Event {
    Defined(SaleSpec),
    Sold(u64, u32),
    Hold(Change),
    Gate(SaleAction),
    Entered(u64),
    Drawn(u64),
}

/// What the command line asks of the sales it names besides their ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    /// `--draw-window-ms`: the draw window of every sale the flags name.
    pub draw_window_ms: Option<u64>,
}

/// Reconciles the stored sales with the requested ones. `now_ms` is the
/// opening time given to a new sale that names none; a new sale with a draw
/// gets its secret from `seed`.
pub fn plan(
    records: &[Record],
    requested: &[SaleArg],
    options: Requested,
    now_ms: u64,
    seed: &mut dyn FnMut() -> Result<Seed, String>,
) -> Result<Plan, CatalogError> {
    let mut sales = stored_sales(records)?;
    let mut new_definitions = Vec::new();
    let defaults;
    let requested = if requested.is_empty() && sales.is_empty() {
        defaults = [SaleArg {
            id: DEFAULT_SALE.into(),
            capacity: DEFAULT_CAPACITY,
            opens_at_ms: None,
        }];
        &defaults[..]
    } else {
        requested
    };
    for (i, arg) in requested.iter().enumerate() {
        if requested[..i].iter().any(|other| other.id == arg.id) {
            return Err(CatalogError::Duplicate(arg.id.clone()));
        }
        match sales.iter().find(|s| s.spec.id == arg.id) {
            Some(stored) => check_matches(&stored.spec, arg, options)?,
            None => {
                let draw = match options.draw_window_ms {
                    Some(window_ms) => Some(DrawSpec {
                        window_ms,
                        seed: seed().map_err(|e| CatalogError::Invalid(arg.id.clone(), e))?,
                    }),
                    None => None,
                };
                let spec = SaleSpec {
                    draw,
                    ..SaleSpec::instant(
                        arg.id.clone(),
                        arg.capacity,
                        arg.opens_at_ms.unwrap_or(now_ms),
                    )
                };
                // Checked before it is written: a definition the core
                // refuses would make the data directory unusable.
                spec.validate()
                    .map_err(|e| CatalogError::Invalid(arg.id.clone(), e.to_string()))?;
                new_definitions.push(spec.clone());
                sales.push(StoredSale::new(spec));
            }
        }
    }
    Ok(Plan {
        sales,
        new_definitions,
    })
}

fn check_matches(stored: &SaleSpec, arg: &SaleArg, options: Requested) -> Result<(), CatalogError> {
    let conflict = |field, stored: u64, requested: u64| CatalogError::Conflict {
        sale: arg.id.clone(),
        field,
        stored,
        requested,
    };
    if stored.capacity != arg.capacity {
        return Err(conflict(
            "capacity",
            stored.capacity.into(),
            arg.capacity.into(),
        ));
    }
    if let Some(at) = arg.opens_at_ms.filter(|&at| at != stored.opens_at_ms) {
        return Err(conflict("opening time", stored.opens_at_ms, at));
    }
    let stored_window = stored.draw.as_ref().map_or(0, |d| d.window_ms);
    match options.draw_window_ms {
        Some(window) if window != stored_window => {
            Err(conflict("draw window (ms)", stored_window, window))
        }
        _ => Ok(()),
    }
}

/// The log record that defines `spec`: `SaleDefined`, or `SaleWithHolds`
/// for a sale with holds.
pub fn definition_record(spec: &SaleSpec) -> Record {
    if let Some(draw) = &spec.draw {
        return Record::SaleWithDraw {
            sale: spec.id.clone(),
            capacity: spec.capacity,
            opens_at_ms: spec.opens_at_ms,
            hold_ms: spec.hold_ms,
            window_ms: draw.window_ms,
            seed: DrawSeed(draw.seed),
        };
    }
    match spec.hold_ms {
        None => Record::SaleDefined {
            sale: spec.id.clone(),
            capacity: spec.capacity,
            opens_at_ms: spec.opens_at_ms,
        },
        Some(hold_ms) => Record::SaleWithHolds {
            sale: spec.id.clone(),
            capacity: spec.capacity,
            opens_at_ms: spec.opens_at_ms,
            hold_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defined(sale: &str, capacity: u32, opens_at_ms: u64) -> Record {
        Record::SaleDefined {
            sale: sale.into(),
            capacity,
            opens_at_ms,
        }
    }

    fn sold(sale: &str, ticket: u32, user: u64) -> Record {
        Record::TicketSold {
            sale: sale.into(),
            ticket,
            user,
            at_ms: 1,
        }
    }

    fn arg(s: &str) -> SaleArg {
        s.parse().unwrap()
    }

    fn no_seed() -> Result<Seed, String> {
        panic!("no sale with a draw is created here")
    }

    #[test]
    fn fresh_directory_without_flags_gets_the_default_sale() {
        let plan = plan(&[], &[], Requested::default(), 1000, &mut no_seed).unwrap();
        let spec = SaleSpec::instant("default", 200, 1000);
        assert_eq!(plan.new_definitions, vec![spec.clone()]);
        assert_eq!(plan.sales, vec![StoredSale::new(spec)]);
    }

    #[test]
    fn restart_without_flags_restores_every_stored_sale() {
        let log = [
            defined("a", 2, 5),
            sold("a", 1, 10),
            defined("b", 3, 6),
            sold("a", 2, 11),
        ];
        let plan = plan(&log, &[], Requested::default(), 1000, &mut no_seed).unwrap();
        assert!(plan.new_definitions.is_empty());
        assert_eq!(plan.sales.len(), 2);
        assert_eq!(plan.sales[0].sold, vec![(10, 1), (11, 2)]);
        assert_eq!(plan.sales[1].spec.opens_at_ms, 6);
    }

    #[test]
    fn flags_may_repeat_or_add_but_never_change() {
        let log = [defined("a", 2, 5)];
        assert!(
            plan(&log, &[arg("a:2")], Requested::default(), 9, &mut no_seed)
                .unwrap()
                .new_definitions
                .is_empty()
        );
        assert!(
            plan(&log, &[arg("a:2:5")], Requested::default(), 9, &mut no_seed)
                .unwrap()
                .new_definitions
                .is_empty()
        );
        let added = plan(
            &log,
            &[arg("a:2"), arg("b:7")],
            Requested::default(),
            9,
            &mut no_seed,
        )
        .unwrap();
        assert_eq!(added.new_definitions, vec![SaleSpec::instant("b", 7, 9)]);
        assert_eq!(added.sales.len(), 2);

        let err = plan(&log, &[arg("a:3")], Requested::default(), 9, &mut no_seed).unwrap_err();
        assert_eq!(
            err,
            CatalogError::Conflict {
                sale: "a".into(),
                field: "capacity",
                stored: 2,
                requested: 3
            }
        );
        assert!(err.to_string().contains("capacity 2, but 3"));
        assert!(matches!(
            plan(&log, &[arg("a:2:6")], Requested::default(), 9, &mut no_seed),
            Err(CatalogError::Conflict {
                field: "opening time",
                ..
            })
        ));
    }

    #[test]
    fn an_invalid_sale_is_refused_before_it_is_written() {
        let arg = SaleArg {
            id: "big".into(),
            capacity: flashsale_core::MAX_CAPACITY + 1,
            opens_at_ms: None,
        };
        assert!(matches!(
            plan(&[], &[arg], Requested::default(), 0, &mut no_seed),
            Err(CatalogError::Invalid(..))
        ));
    }

    #[test]
    fn inconsistent_logs_and_duplicate_flags_are_refused() {
        assert!(matches!(
            plan(
                &[sold("x", 1, 1)],
                &[],
                Requested::default(),
                0,
                &mut no_seed
            ),
            Err(CatalogError::Inconsistent(_))
        ));
        assert!(matches!(
            plan(
                &[defined("a", 1, 0), defined("a", 1, 0)],
                &[],
                Requested::default(),
                0,
                &mut no_seed
            ),
            Err(CatalogError::Inconsistent(_))
        ));
        assert_eq!(
            plan(
                &[],
                &[arg("a:1"), arg("a:1")],
                Requested::default(),
                0,
                &mut no_seed
            ),
            Err(CatalogError::Duplicate("a".into()))
        );
    }

    #[test]
    fn definition_record_round_trips_through_stored_sales() {
        let instant = SaleSpec::instant("z", 4, 77);
        let held = SaleSpec {
            hold_ms: Some(600_000),
            ..SaleSpec::instant("h", 2, 5)
        };
        let records = [definition_record(&instant), definition_record(&held)];
        let sales = stored_sales(&records).unwrap();
        assert_eq!(sales[0].spec, instant);
        assert_eq!(sales[1].spec, held);
    }

    fn with_holds(sale: &str) -> Record {
        Record::SaleWithHolds {
            sale: sale.into(),
            capacity: 2,
            opens_at_ms: 0,
            hold_ms: 1_000,
        }
    }

    fn changed(sale: &str, action: SaleAction) -> Record {
        Record::SaleChanged {
            sale: sale.into(),
            action,
            at_ms: 1,
        }
    }

    #[test]
    fn holds_and_the_gate_are_collected_in_log_order() {
        let log = [
            with_holds("h"),
            Record::HoldTaken {
                sale: "h".into(),
                ticket: 1,
                user: 7,
                at_ms: 1,
                expires_at_ms: 1_001,
            },
            changed("h", SaleAction::Pause),
            Record::HoldConfirmed {
                sale: "h".into(),
                ticket: 1,
                user: 7,
                at_ms: 2,
                payment_ref: "pi".into(),
            },
            Record::TicketReleased {
                sale: "h".into(),
                ticket: 1,
                user: 7,
                at_ms: 3,
                reason: flashsale_protocol::ReleaseReason::Released,
            },
            changed("h", SaleAction::Resume),
        ];
        let sales = stored_sales(&log).unwrap();
        assert_eq!(sales[0].gate, Some(SaleAction::Resume));
        assert!(sales[0].sold.is_empty());
        assert_eq!(
            sales[0].changes,
            [
                Change::Held {
                    ticket: 1,
                    user: 7,
                    expires_at_ms: 1_001
                },
                Change::Confirmed {
                    ticket: 1,
                    user: 7,
                    payment_ref: "pi".into()
                },
                Change::Released {
                    ticket: 1,
                    user: 7,
                    reason: flashsale_protocol::ReleaseReason::Released
                },
            ]
        );
    }

    #[test]
    fn records_that_do_not_fit_their_sale_are_refused() {
        let hold = |sale: &str| Record::HoldTaken {
            sale: sale.into(),
            ticket: 1,
            user: 7,
            at_ms: 1,
            expires_at_ms: 2,
        };
        for log in [
            vec![defined("a", 1, 0), hold("a")],
            vec![with_holds("h"), sold("h", 1, 1)],
            vec![hold("h")],
            vec![changed("a", SaleAction::Pause)],
            vec![
                defined("a", 1, 0),
                changed("a", SaleAction::Close),
                changed("a", SaleAction::Resume),
            ],
        ] {
            assert!(
                matches!(stored_sales(&log), Err(CatalogError::Inconsistent(_))),
                "{log:?}"
            );
        }
    }

    fn draw_spec(window_ms: u64, hold_ms: Option<u64>) -> SaleSpec {
        SaleSpec {
            hold_ms,
            draw: Some(DrawSpec {
                window_ms,
                seed: [4; 32],
            }),
            ..SaleSpec::instant("d", 3, 100)
        }
    }

    fn entered(user: u64) -> Record {
        Record::DrawEntered {
            sale: "d".into(),
            user,
            at_ms: 101,
        }
    }

    fn made() -> Record {
        Record::DrawMade {
            sale: "d".into(),
            at_ms: 200,
        }
    }

    #[test]
    fn a_draw_flag_gives_new_sales_a_draw_and_a_fresh_seed() {
        let mut seeds = 0;
        let mut seed = || {
            seeds += 1;
            Ok([seeds; 32])
        };
        let options = Requested {
            draw_window_ms: Some(5_000),
        };
        let created = plan(&[], &[arg("a:2"), arg("b:3")], options, 7, &mut seed).unwrap();
        let draws: Vec<_> = created
            .new_definitions
            .iter()
            .map(|s| s.draw.clone().unwrap())
            .collect();
        assert_eq!(draws[0].window_ms, 5_000);
        assert_ne!(draws[0].seed, draws[1].seed, "one secret per sale");
        let stored = stored_sales(&[definition_record(&created.new_definitions[0])]).unwrap();
        assert_eq!(stored[0].spec, created.new_definitions[0]);
        // Restarted with the same flag: the stored sale and its seed stand.
        let log = [definition_record(&created.new_definitions[0])];
        let again = plan_again(&log, options);
        assert!(again.new_definitions.is_empty());
        assert_eq!(again.sales[0].spec.draw, Some(draws[0].clone()));
        let other = Requested {
            draw_window_ms: Some(9),
        };
        assert!(matches!(
            plan(&log, &[arg("a:2")], other, 7, &mut no_seed),
            Err(CatalogError::Conflict {
                field: "draw window (ms)",
                ..
            })
        ));
    }

    struct Discard;

    impl flashsale_core::Journal for Discard {
        fn write(&self, _: &str, _: &Change, _: u64) {}
        fn draw(&self, _: &str, _: &flashsale_core::draw::DrawEvent, _: u64) {}
    }

    fn plan_again(log: &[Record], options: Requested) -> Plan {
        plan(log, &[arg("a:2")], options, 7, &mut no_seed).unwrap()
    }

    #[test]
    fn entries_and_the_draw_are_collected_and_checked() {
        let spec = draw_spec(50, None);
        let log = [definition_record(&spec), entered(1), entered(2), made()];
        let sales = stored_sales(&log).unwrap();
        assert_eq!(sales[0].spec, spec);
        assert_eq!(sales[0].entrants, [1, 2]);
        assert_eq!(sales[0].drawn_at_ms, Some(200));
        for bad in [
            vec![definition_record(&spec), made(), entered(3)],
            vec![definition_record(&spec), made(), made()],
            vec![definition_record(&spec), sold("d", 1, 1)],
            vec![defined("d", 1, 0), entered(1)],
            vec![defined("d", 1, 0), made()],
        ] {
            assert!(
                matches!(stored_sales(&bad), Err(CatalogError::Inconsistent(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn winners_cut_off_the_log_are_appended_again() {
        for hold_ms in [None, Some(1_000)] {
            let spec = draw_spec(50, hold_ms);
            let draw = spec.draw.clone().unwrap();
            let entrants: Vec<u64> = (10..20).collect();
            let winners = Sale::draw_winners(3, &draw, &entrants);
            let mut log = vec![definition_record(&spec)];
            log.extend(entrants.iter().map(|&u| entered(u)));
            log.push(made());
            let first = match hold_ms {
                None => Record::TicketSold {
                    sale: "d".into(),
                    ticket: 1,
                    user: winners[0],
                    at_ms: 200,
                },
                Some(ms) => Record::HoldTaken {
                    sale: "d".into(),
                    ticket: 1,
                    user: winners[0],
                    at_ms: 200,
                    expires_at_ms: 200 + ms,
                },
            };
            log.push(first);
            let mut stored = stored_sales(&log).unwrap().remove(0);
            let missing = stored.repair_draw();
            assert_eq!(missing.len(), 2, "{hold_ms:?}");
            for (record, (&user, ticket)) in missing.iter().zip(winners[1..].iter().zip(2..)) {
                let (_, t, u, at) = record.ticket_fields().unwrap();
                assert_eq!((t, u, at), (ticket, user, 200));
            }
            // Appended, the log restores; and there is nothing more to add.
            log.extend(missing);
            let mut again = stored_sales(&log).unwrap().remove(0);
            assert!(again.repair_draw().is_empty());
            let journal = std::sync::Arc::new(Discard);
            assert!(Sale::recover(again.spec.clone(), again.history(), journal).is_ok());
        }
    }
}
