//! [`Sales`]: every sale by id, fixed at startup.

use std::collections::HashMap;
use std::sync::Arc;

use super::{CoreError, Sale};

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
    pub fn get(&self, id: &str) -> Option<&Arc<Sale>> {
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
    use crate::core::SaleSpec;

    fn sale(id: &str) -> Sale {
        Sale::new(SaleSpec {
            id: id.to_owned(),
            capacity: 3,
            opens_at_ms: 0,
        })
        .unwrap()
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
    fn duplicate_id_is_rejected() {
        let err = Sales::new(vec![sale("a"), sale("a")]).unwrap_err();
        assert_eq!(err, CoreError::DuplicateSale { id: "a".into() });
    }
}
