//! The node watchdog's kill reaches every process of every sandbox of the runtime (part of the
//! conformance suite): the cgroup directories the runtime names hold them all, so a stalled
//! agent's sandboxes cannot outlive the watchdog's deadline.

use corral_core::model::{Command, ExecSpec};

use super::{Harness, exec_spec, run, sandbox, sh};

pub async fn watchdog_kill_reaches_every_sandbox_process(h: &Harness) {
    let (a, b) = (sandbox(h).await, sandbox(h).await);
    for sb in [&a, &b] {
        let out = sh(&*h.rt, sb, "nohup sleep 300 >/dev/null 2>&1 & echo started").await;
        assert_eq!(out.out(), "started\n", "{}", out.err());
    }
    let dirs = h.rt.process_cgroups();
    assert!(!dirs.is_empty(), "the runtime names no cgroups for the watchdog");
    let killed = corral_init::watchdog::kill_all(&dirs);
    // Each sandbox has at least its init and the background sleep.
    assert!(killed >= 4, "the watchdog signalled only {killed} processes in {dirs:?}");
    assert_eq!(corral_init::watchdog::kill_all(&dirs), 0, "processes survived the kill");
    for sb in [&a, &b] {
        let spec: ExecSpec = exec_spec(Command::Argv(vec!["true".into()]));
        let result = run(&*h.rt, sb, spec).await;
        assert!(result.is_err(), "sandbox {sb} still runs commands after the watchdog's kill: {result:?}");
    }
}
