//! Reading and writing sandbox records. Every update is a compare-and-swap on the record's
//! mod_revision, and every state change goes through `SandboxState::check_transition`.

use std::sync::Arc;

use corral_core::ids::{SandboxId, SandboxName, TenantId};
use corral_core::keys::{DeadlineKey, NameKey, SandboxKey};
use corral_core::model::SandboxRecord;
use corral_core::state::SandboxState;
use corral_core::store::{self, StateStore, Txn};
use corral_core::time::now_ms_after;

use crate::error::{ApiError, ApiResult};

/// A record with the revision it was read or written at.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub record: SandboxRecord,
    pub revision: i64,
}

const CAS_ATTEMPTS: usize = 8;

pub async fn get(store: &dyn StateStore, tenant: &TenantId, id: &SandboxId) -> ApiResult<Versioned> {
    let key = SandboxKey { tenant, id }.to_string();
    let kv = store.get(&key).await?.ok_or_else(|| ApiError::SandboxNotFound(id.to_string()))?;
    Ok(Versioned { record: store::decode(&kv)?, revision: kv.mod_revision })
}

/// Writes a new record (and its name, which must be free) in one transaction.
pub async fn create(store: &dyn StateStore, record: &SandboxRecord) -> ApiResult<i64> {
    let spec = &record.spec;
    let key = SandboxKey { tenant: &spec.tenant, id: &spec.id };
    let mut txn = Txn::new().when(&key, 0).put(&key, store::encode(record));
    if let Some(name) = &spec.name {
        let nk = NameKey { tenant: &spec.tenant, name };
        txn = txn.when(&nk, 0).put(&nk, spec.id.as_str().as_bytes().to_vec());
    }
    let out = store.txn(txn).await?;
    if !out.succeeded {
        return Err(match &spec.name {
            Some(name) => ApiError::NameTaken(name.to_string()),
            None => ApiError::Conflict(format!("sandbox {}", spec.id)),
        });
    }
    Ok(out.revision)
}

/// Looks up a live sandbox's id by name.
pub async fn id_by_name(store: &dyn StateStore, tenant: &TenantId, name: &SandboxName) -> ApiResult<SandboxId> {
    let kv = store
        .get(&NameKey { tenant, name }.to_string())
        .await?
        .ok_or_else(|| ApiError::NameNotFound(name.to_string()))?;
    let raw = String::from_utf8_lossy(&kv.value);
    SandboxId::parse(&raw).map_err(|e| ApiError::Internal(format!("name record {name}: {e}")))
}

/// Moves a sandbox to `to` (checked), letting `edit` fill in the details, with CAS retries.
/// `known` is a version the caller already holds: the first attempt uses it without a read.
/// Reaching a terminal state frees the sandbox's name in the same transaction.
/// Returns `Ok(None)` when the sandbox is already terminal (nothing written).
pub async fn transition(
    store: &Arc<dyn StateStore>,
    tenant: &TenantId,
    id: &SandboxId,
    known: Option<Versioned>,
    to: SandboxState,
    edit: impl Fn(&mut SandboxRecord),
) -> ApiResult<Option<Versioned>> {
    update(store, tenant, id, known, |record| apply_transition(record, to, &edit)).await
}

/// Applies a checked state change to `record` (with its timestamps and `edit`); `Ok(false)` when
/// the sandbox is already terminal.
pub fn apply_transition(
    record: &mut SandboxRecord,
    to: SandboxState,
    edit: &impl Fn(&mut SandboxRecord),
) -> ApiResult<bool> {
    if record.state.is_terminal() {
        return Ok(false);
    }
    record.state = record.state.check_transition(to)?;
    // Clocks of different coordinators may disagree: keep created <= started <= ended.
    if to == SandboxState::Running && record.started_at_ms == 0 {
        record.started_at_ms = now_ms_after(record.created_at_ms);
    }
    if to.is_terminal() {
        record.ended_at_ms = now_ms_after(record.started_at_ms.max(record.created_at_ms));
    }
    edit(record);
    Ok(true)
}

/// The one compare-and-swap loop every record update goes through. `change` edits a fresh copy of
/// the record (state changes only through [`apply_transition`]) and returns whether to write it;
/// `Ok(None)` when it declined. A record that became terminal frees its name and drops its
/// deadline key in the same transaction; a record whose `deadline_lease` changed puts its
/// deadline key on the new lease in the same transaction (see [`crate::deadlines`]).
pub async fn update(
    store: &Arc<dyn StateStore>,
    tenant: &TenantId,
    id: &SandboxId,
    known: Option<Versioned>,
    change: impl Fn(&mut SandboxRecord) -> ApiResult<bool>,
) -> ApiResult<Option<Versioned>> {
    let key = SandboxKey { tenant, id }.to_string();
    let mut known = known;
    for _ in 0..CAS_ATTEMPTS {
        let Versioned { mut record, revision } = match known.take() {
            Some(v) => v,
            None => get(store.as_ref(), tenant, id).await?,
        };
        let (was_terminal, old_lease) = (record.state.is_terminal(), record.deadline_lease);
        if !change(&mut record)? {
            return Ok(None);
        }
        let mut txn = Txn::new().when(&key, revision).put(&key, store::encode(&record));
        let deadline = DeadlineKey { tenant, id: id.as_str() };
        if !was_terminal && record.state.is_terminal() {
            if let Some(name) = &record.spec.name {
                txn = txn.delete(NameKey { tenant, name });
            }
            if old_lease != 0 || record.deadline_lease != 0 {
                txn = txn.delete(&deadline);
            }
        } else if record.deadline_lease != old_lease {
            txn = match record.deadline_lease {
                0 => txn.delete(&deadline),
                lease => txn.put_with_lease(&deadline, id.as_str().as_bytes().to_vec(), lease),
            };
        }
        let out = store.txn(txn).await?;
        if out.succeeded {
            return Ok(Some(Versioned { record, revision: out.revision }));
        }
    }
    Err(ApiError::Conflict(format!("sandbox {id}")))
}
