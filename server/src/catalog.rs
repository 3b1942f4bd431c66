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
use flashsale_core::SaleSpec;
use flashsale_wal::Record;

/// A sale as the log describes it, with its durable winners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSale {
    /// The definition.
    pub spec: SaleSpec,
    /// `(user, ticket)` of every durable win, in log order.
    pub sold: Vec<(u64, u32)>,
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

/// Groups the log's records into sales with their winners.
pub fn stored_sales(records: &[Record]) -> Result<Vec<StoredSale>, CatalogError> {
    let mut sales: Vec<StoredSale> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for record in records {
        match record {
            Record::SaleDefined {
                sale,
                capacity,
                opens_at_ms,
            } => {
                if index.insert(sale.as_str(), sales.len()).is_some() {
                    return Err(CatalogError::Inconsistent(format!(
                        "sale {sale:?} is defined twice"
                    )));
                }
                sales.push(StoredSale {
                    spec: SaleSpec {
                        id: sale.clone(),
                        capacity: *capacity,
                        opens_at_ms: *opens_at_ms,
                    },
                    sold: Vec::new(),
                });
            }
            Record::TicketSold {
                sale, ticket, user, ..
            } => {
                let Some(&i) = index.get(sale.as_str()) else {
                    return Err(CatalogError::Inconsistent(format!(
                        "ticket {ticket} sold for undefined sale {sale:?}"
                    )));
                };
                sales[i].sold.push((*user, *ticket));
            }
            // Holds and the operator's changes decide who owns a ticket:
            // skipping them could sell one twice, so a server that does not
            // serve them refuses the log rather than guess.
            Record::SaleWithHolds { sale, .. }
            | Record::SaleChanged { sale, .. }
            | Record::HoldTaken { sale, .. }
            | Record::HoldConfirmed { sale, .. }
            | Record::TicketReleased { sale, .. } => {
                return Err(CatalogError::Inconsistent(format!(
                    "sale {sale:?} has a {} record, which this server does not serve",
                    record.kind_name()
                )));
            }
            Record::Unknown { .. } => {}
        }
    }
    Ok(sales)
}

/// Reconciles the stored sales with the requested ones. `now_ms` is the
/// opening time given to a new sale that names none.
pub fn plan(records: &[Record], requested: &[SaleArg], now_ms: u64) -> Result<Plan, CatalogError> {
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
            Some(stored) => check_matches(&stored.spec, arg)?,
            None => {
                let spec = SaleSpec {
                    id: arg.id.clone(),
                    capacity: arg.capacity,
                    opens_at_ms: arg.opens_at_ms.unwrap_or(now_ms),
                };
                // Checked before it is written: a definition the core
                // refuses would make the data directory unusable.
                spec.validate()
                    .map_err(|e| CatalogError::Invalid(arg.id.clone(), e.to_string()))?;
                new_definitions.push(spec.clone());
                sales.push(StoredSale {
                    spec,
                    sold: Vec::new(),
                });
            }
        }
    }
    Ok(Plan {
        sales,
        new_definitions,
    })
}

fn check_matches(stored: &SaleSpec, arg: &SaleArg) -> Result<(), CatalogError> {
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
    match arg.opens_at_ms {
        Some(at) if at != stored.opens_at_ms => {
            Err(conflict("opening time", stored.opens_at_ms, at))
        }
        _ => Ok(()),
    }
}

/// The log record that defines `spec`.
pub fn definition_record(spec: &SaleSpec) -> Record {
    Record::SaleDefined {
        sale: spec.id.clone(),
        capacity: spec.capacity,
        opens_at_ms: spec.opens_at_ms,
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

    #[test]
    fn fresh_directory_without_flags_gets_the_default_sale() {
        let plan = plan(&[], &[], 1000).unwrap();
        let spec = SaleSpec {
            id: "default".into(),
            capacity: 200,
            opens_at_ms: 1000,
        };
        assert_eq!(plan.new_definitions, vec![spec.clone()]);
        assert_eq!(plan.sales, vec![StoredSale { spec, sold: vec![] }]);
    }

    #[test]
    fn restart_without_flags_restores_every_stored_sale() {
        let log = [
            defined("a", 2, 5),
            sold("a", 1, 10),
            defined("b", 3, 6),
            sold("a", 2, 11),
        ];
        let plan = plan(&log, &[], 1000).unwrap();
        assert!(plan.new_definitions.is_empty());
        assert_eq!(plan.sales.len(), 2);
        assert_eq!(plan.sales[0].sold, vec![(10, 1), (11, 2)]);
        assert_eq!(plan.sales[1].spec.opens_at_ms, 6);
    }

    #[test]
    fn flags_may_repeat_or_add_but_never_change() {
        let log = [defined("a", 2, 5)];
        assert!(plan(&log, &[arg("a:2")], 9)
            .unwrap()
            .new_definitions
            .is_empty());
        assert!(plan(&log, &[arg("a:2:5")], 9)
            .unwrap()
            .new_definitions
            .is_empty());
        let added = plan(&log, &[arg("a:2"), arg("b:7")], 9).unwrap();
        assert_eq!(
            added.new_definitions,
            vec![SaleSpec {
                id: "b".into(),
                capacity: 7,
                opens_at_ms: 9
            }]
        );
        assert_eq!(added.sales.len(), 2);

        let err = plan(&log, &[arg("a:3")], 9).unwrap_err();
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
            plan(&log, &[arg("a:2:6")], 9),
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
            plan(&[], &[arg], 0),
            Err(CatalogError::Invalid(..))
        ));
    }

    #[test]
    fn inconsistent_logs_and_duplicate_flags_are_refused() {
        assert!(matches!(
            plan(&[sold("x", 1, 1)], &[], 0),
            Err(CatalogError::Inconsistent(_))
        ));
        assert!(matches!(
            plan(&[defined("a", 1, 0), defined("a", 1, 0)], &[], 0),
            Err(CatalogError::Inconsistent(_))
        ));
        assert_eq!(
            plan(&[], &[arg("a:1"), arg("a:1")], 0),
            Err(CatalogError::Duplicate("a".into()))
        );
    }

    #[test]
    fn definition_record_round_trips_through_stored_sales() {
        let spec = SaleSpec {
            id: "z".into(),
            capacity: 4,
            opens_at_ms: 77,
        };
        let sales = stored_sales(&[definition_record(&spec)]).unwrap();
        assert_eq!(sales[0].spec, spec);
    }
}
