//! Finding sandbox directories no sandbox owns any more: a destroy cut short (its task aborted
//! at shutdown after the sandbox left the map) leaves its directory, cgroups and disk mounts.

use std::collections::HashSet;
use std::path::PathBuf;

use super::BwrapRuntime;
use super::pool::POOL_PREFIX;

impl BwrapRuntime {
    /// Directories under `{state_dir}/sandboxes` that belong to no sandbox being created,
    /// running, or waiting in the pool (the pool slot being started is left alone).
    pub(super) fn stray_dirs(&self) -> Vec<PathBuf> {
        let root = self.config.state_dir.join("sandboxes");
        let mut owned: HashSet<String> = HashSet::new();
        for (id, cell) in self.map().iter() {
            owned.insert(id.to_string());
            if let Some(s) = cell.get() {
                owned.insert(s.slot_name());
            }
        }
        let mut newest_slot = None;
        if let Some(pool) = &self.pool {
            let st = pool.state();
            newest_slot = Some(format!("{POOL_PREFIX}{}", st.next_slot));
            owned.extend(
                st.ready
                    .iter()
                    .filter_map(|w| w.dir())
                    .filter_map(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned()),
            );
        }
        let Ok(entries) = std::fs::read_dir(&root) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !owned.contains(&name) && newest_slot.as_deref() != Some(name.as_str())
            })
            .map(|e| e.path())
            .collect()
    }
}
