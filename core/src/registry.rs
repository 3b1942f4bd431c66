//! [`Sales`], every sale by id, and [`Registry`], the sales of a running
//! server, to which the operator adds sales without a restart.
//!
//! A lookup is on every request's path, so it must not lock or write shared
//! memory. The registry therefore swaps whole immutable [`Sales`] snapshots
//! (copy on write, with `arc-swap`): a reader loads the current snapshot
//! through a per-thread slot, without touching a shared reference count,
//! and an operator's new sale is a new snapshot. Sales are never removed (a
//! closed sale is still answered), so a snapshot is only ever replaced by a
//! larger one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, Guard};

use super::{CoreError, Sale};

/// Sales up to which [`Sales::get`] scans instead of hashing.
const LINEAR_SCAN_MAX: usize = 8;

/// A set of sales, looked up by id. Immutable: the [`Registry`] replaces it
/// as a whole when a sale is added.
#[derive(Debug, Default, Clone)]
pub struct Sales {
    /// Sales in the order they were given.
    ordered: Vec<Arc<Sale>>,
    /// Index into `ordered` by sale id.
    by_id: HashMap<String, usize>,
}

impl Sales {
    /// Collects the sales, keeping their order.
    ///
    /// # Errors
    ///
    /// [`CoreError::DuplicateSale`] if two sales share an id.
    pub fn new(sales: Vec<Sale>) -> Result<Sales, CoreError> {
        let mut by_id = HashMap::with_capacity(sales.len());
        let mut ordered = Vec::with_capacity(sales.len());
        for sale in sales {
            let id = sale.spec().id.clone();
            if by_id.contains_key(&id) {
                return Err(CoreError::DuplicateSale { id });
            }
            by_id.insert(id, ordered.len());
            ordered.push(Arc::new(sale));
        }
        Ok(Sales { ordered, by_id })
    }

    /// The sale with this id.
    ///
    /// A server runs a handful of sales, and this is on every request's
    /// path: up to [`LINEAR_SCAN_MAX`] sales, comparing the ids' lengths and
    /// then their bytes beats hashing the id (SipHash) and probing the map.
    pub fn get(&self, id: &str) -> Option<&Arc<Sale>> {
        if self.ordered.len() <= LINEAR_SCAN_MAX {
            return self.ordered.iter().find(|sale| sale.spec().id == id);
        }
        self.by_id.get(id).map(|&i| &self.ordered[i])
    }

    /// All sales, in the order given to [`Sales::new`].
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Sale>> {
        self.ordered.iter()
    }

    /// Number of sales.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// True if there is no sale.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// These sales and `sale`, after them.
    ///
    /// # Errors
    ///
    /// [`CoreError::DuplicateSale`] if a sale has its id.
    pub fn with(&self, sale: Sale) -> Result<Sales, CoreError> {
        let id = sale.spec().id.clone();
        if self.by_id.contains_key(&id) {
            return Err(CoreError::DuplicateSale { id });
        }
        let mut next = self.clone();
        next.by_id.insert(id, next.ordered.len());
        next.ordered.push(Arc::new(sale));
        Ok(next)
    }
}

/// The sales of a running server: read without locks, added to at runtime.
#[derive(Debug)]
pub struct Registry {
    current: ArcSwap<Sales>,
    /// Serialises additions, so that the duplicate check and the swap are
    /// one step. Readers never take it.
    adding: Mutex<()>,
}

impl Registry {
    /// A registry starting with `sales`.
    pub fn new(sales: Sales) -> Registry {
        Registry {
            current: ArcSwap::from_pointee(sales),
            adding: Mutex::new(()),
        }
    }

    /// The current sales. Cheap (no lock, no shared counter): call it per
    /// request, and do not keep the guard across an await.
    pub fn load(&self) -> Guard<Arc<Sales>> {
        self.current.load()
    }

    /// The current sales, as an owned snapshot that may be kept.
    pub fn snapshot(&self) -> Arc<Sales> {
        self.current.load_full()
    }

    /// Adds `sale`, visible to every later [`Registry::load`].
    ///
    /// # Errors
    ///
    /// [`CoreError::DuplicateSale`] if a sale has its id; nothing changes.
    pub fn add(&self, sale: Sale) -> Result<Arc<Sale>, CoreError> {
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let id = sale.spec().id.clone();
        let next = self.current.load().with(sale)?;
        let added = next.get(&id).cloned();
        self.current.store(Arc::new(next));
        added.ok_or(CoreError::DuplicateSale { id })
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;
    use crate::SaleSpec;

    fn sale(id: &str) -> Sale {
        Sale::new(SaleSpec::instant(id, 3, 0)).unwrap()
    }

    #[test]
    fn lookup_by_id_and_order() {
        let sales = Sales::new(vec![sale("b"), sale("a")]).unwrap();
        assert_eq!(sales.len(), 2);
        assert_eq!(sales.get("a").unwrap().spec().id, "a");
        assert!(sales.get("c").is_none());
        let ids: Vec<_> = sales.iter().map(|s| s.spec().id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
    }

    #[test]
    fn lookup_by_id_past_the_linear_scan() {
        let ids: Vec<String> = (0..=LINEAR_SCAN_MAX * 2).map(|i| format!("s{i}")).collect();
        for n in [1, LINEAR_SCAN_MAX, LINEAR_SCAN_MAX + 1, ids.len()] {
            let sales = Sales::new(ids[..n].iter().map(|id| sale(id)).collect()).unwrap();
            for id in &ids[..n] {
                assert_eq!(&sales.get(id).unwrap().spec().id, id);
            }
            assert!(sales.get("s").is_none());
            assert!(sales.get(&format!("{}x", ids[0])).is_none());
            assert!(sales.get("").is_none());
        }
    }

    #[test]
    fn a_registry_adds_sales_and_keeps_old_snapshots_whole() {
        let registry = Registry::new(Sales::new(vec![sale("a")]).unwrap());
        let before = registry.snapshot();
        let added = registry.add(sale("b")).unwrap();
        assert_eq!(added.spec().id, "b");
        assert!(before.get("b").is_none(), "a snapshot never changes");
        assert!(registry.load().get("b").is_some());
        assert_eq!(
            registry.add(sale("a")).unwrap_err(),
            CoreError::DuplicateSale { id: "a".into() }
        );
        let ids: Vec<_> = registry
            .load()
            .iter()
            .map(|s| s.spec().id.clone())
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn duplicate_id_is_rejected() {
        let err = Sales::new(vec![sale("a"), sale("a")]).unwrap_err();
        assert_eq!(err, CoreError::DuplicateSale { id: "a".into() });
    }
}
