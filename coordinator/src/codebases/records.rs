//! Reading and writing codebase records (`codebases/{tenant}/{id}`): the one owner of their key
//! and encoding. Updates are compare-and-swaps on the record's mod_revision.

use corral_core::codebase::CodebaseRecord;
use corral_core::ids::{CodebaseId, TenantId};
use corral_core::keys::{CodebaseKey, CodebasesPrefix};
use corral_core::store::{self, StateStore, Txn};

use crate::error::{ApiError, ApiResult};

/// The record format version written now.
pub const VERSION: u32 = 1;

/// A record with the revision it was read or written at.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub record: CodebaseRecord,
    pub revision: i64,
}

fn not_found(id: &CodebaseId) -> ApiError {
    ApiError::NotFound(format!("codebase {id}"))
}

pub async fn get(store: &dyn StateStore, tenant: &TenantId, id: &CodebaseId) -> ApiResult<Versioned> {
    let key = CodebaseKey { tenant, id }.to_string();
    let kv = store.get(&key).await?.ok_or_else(|| not_found(id))?;
    Ok(Versioned { record: store::decode(&kv)?, revision: kv.mod_revision })
}

/// Writes a new record; its id must be free.
pub async fn create(store: &dyn StateStore, record: &CodebaseRecord) -> ApiResult<i64> {
    let key = CodebaseKey { tenant: &record.tenant, id: &record.id };
    let out = store.txn(Txn::new().when(&key, 0).put(&key, store::encode(record))).await?;
    if !out.succeeded {
        return Err(ApiError::Conflict(format!("codebase {}", record.id)));
    }
    Ok(out.revision)
}

/// Replaces the record read at `revision`; `Ok(None)` when it changed since (the caller re-reads).
pub async fn replace(store: &dyn StateStore, record: &CodebaseRecord, revision: i64) -> ApiResult<Option<i64>> {
    let key = CodebaseKey { tenant: &record.tenant, id: &record.id };
    let out = store.txn(Txn::new().when(&key, revision).put(&key, store::encode(record))).await?;
    Ok(out.succeeded.then_some(out.revision))
}

/// Deletes the record read at `revision`; `Ok(false)` when it changed since.
pub async fn delete(store: &dyn StateStore, tenant: &TenantId, id: &CodebaseId, revision: i64) -> ApiResult<bool> {
    let key = CodebaseKey { tenant, id };
    let out = store.txn(Txn::new().when(&key, revision).delete(&key)).await?;
    Ok(out.succeeded)
}

/// One page of a tenant's codebases in id order, after `after`; the last id when more may follow.
pub async fn page(
    store: &dyn StateStore,
    tenant: &TenantId,
    after: Option<&CodebaseId>,
    limit: usize,
) -> ApiResult<(Vec<CodebaseRecord>, bool)> {
    let prefix = CodebasesPrefix(Some(tenant)).to_string();
    let start = after.map(|id| CodebaseKey { tenant, id }.to_string());
    let page = store.range(&prefix, start.as_deref(), limit).await?;
    let records = page.kvs.iter().map(store::decode).collect::<Result<Vec<CodebaseRecord>, _>>()?;
    Ok((records, page.more))
}
