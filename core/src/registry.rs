//! [`Sales`]: every sale by id, fixed at startup.

use std::collections::HashMap;
use std::sync::Arc;

use super::{CoreError, Sale};

/// Sales up to which [`Sales::get`] scans instead of hashing.
const LINEAR_SCAN_MAX: usize = 8;

/// The sales this server runs, looked up by id.
///
/// Built once before the listeners start and never changed afterwards, so a
/// shared `&Sales` (or `Arc<Sales>`) is read by every core with no lock.
#[derive(Debug, Default)]
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
    fn duplicate_id_is_rejected() {
        let err = Sales::new(vec![sale("a"), sale("a")]).unwrap_err();
        assert_eq!(err, CoreError::DuplicateSale { id: "a".into() });
    }
}
