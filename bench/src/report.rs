//! The results of one run: a markdown report (tables and targets) and the same as JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::docker::{DockerLatency, DockerResults};
use crate::latency::CorralLatency;
use crate::layers::RuntimeLatency;
use crate::memory::{IdleMemory, RawIdle};
use crate::records::CoordinatorMemory;
use crate::stats::{Samples, round3};

#[derive(Debug, Default)]
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
    pub bwrap: String,
    pub load_start: String,
    pub load_end: String,
}

#[derive(Debug, Default)]
pub struct Results {
    pub machine: Machine,
    pub iterations: usize,
    pub raw_true: Option<Samples>,
    pub raw_python: Option<Samples>,
    /// The agent's runtime alone, in this process.
    pub runtime: Option<RuntimeLatency>,
    pub dev: Option<CorralLatency>,
    pub cluster: Option<CorralLatency>,
    pub raw_idle: Option<RawIdle>,
    pub idle: Option<IdleMemory>,
    pub coordinator: Option<CoordinatorMemory>,
    pub docker: Option<DockerResults>,
}

struct Target {
    what: &'static str,
    limit: String,
    measured: Option<String>,
    met: Option<bool>,
}

fn pair(s: &Samples) -> String {
    format!("{:.2} / {:.2}", s.p50(), s.p99())
}

fn added(corral: &Samples, raw: Option<&Samples>) -> (String, String) {
    match raw {
        Some(r) => (format!("{:+.2}", corral.p50() - r.p50()), format!("{:.2}×", corral.p50() / r.p50())),
        None => ("—".into(), "—".into()),
    }
}

impl Results {
    fn added_ms(&self, mode: Option<&CorralLatency>) -> Option<f64> {
        Some(mode?.cycle_true.p50() - self.raw_true.as_ref()?.p50())
    }

    fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let ms = |v: f64| format!("{v:.2} ms");
        let create = self.dev.as_ref().map(|d| d.create.p50());
        t.push(Target {
            what: "create-to-ready p50, dev mode",
            limit: "≤ 10 ms".into(),
            measured: create.map(ms),
            met: create.map(|v| v <= 10.0),
        });
        for (what, mode, limit) in [
            ("added latency over bare bwrap (create + exec `true` + destroy) p50, dev", self.dev.as_ref(), 1.5),
            ("added latency over bare bwrap (create + exec `true` + destroy) p50, cluster", self.cluster.as_ref(), 3.0),
        ] {
            let v = self.added_ms(mode);
            t.push(Target { what, limit: format!("≤ {limit} ms"), measured: v.map(ms), met: v.map(|v| v <= limit) });
        }
        let host = self.idle.as_ref().map(IdleMemory::host_per_sandbox_mib);
        t.push(Target {
            what: "host memory per idle sandbox (max of process PSS and cgroup charge, + server RSS growth)",
            limit: "≤ 1 MiB".into(),
            measured: host.map(|v| format!("{v:.2} MiB")),
            met: host.map(|v| v <= 1.0),
        });
        if let Some(d) = &self.docker {
            for (what, mode) in [
                ("Docker create-to-ready p50 − raw `docker create` + `docker start` p50, dev", &d.dev),
                ("Docker create-to-ready p50 − raw `docker create` + `docker start` p50, cluster", &d.cluster),
            ] {
                let v = mode.create.p50() - d.raw.create_start.p50();
                t.push(Target {
                    what,
                    limit: "≤ 10 ms".into(),
                    measured: Some(format!("{v:+.2} ms")),
                    met: Some(v <= 10.0),
                });
            }
        }
        let coord = self.coordinator.as_ref();
        t.push(Target {
            what: "coordinator RSS with 10,000 sandbox records",
            limit: "≤ 64 MiB".into(),
            measured: coord.map(|c| format!("{:.1} MiB ({} records)", c.rss_mib(), c.records)),
            met: coord.map(|c| c.rss_mib() <= 64.0 && c.records >= 10_000),
        });
        t
    }

    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(o, "Machine: {} CPUs ({}), Linux {}, {}", m.cpus, m.model, m.kernel, m.bwrap);
        let _ = writeln!(o, "Load average at start: {}; at end: {}\n", m.load_start, m.load_end);
        if self.raw_true.is_some() || self.dev.is_some() || self.cluster.is_some() {
            self.latency_table(&mut o);
        }
        if self.idle.is_some() || self.raw_idle.is_some() || self.coordinator.is_some() {
            self.memory_table(&mut o);
        }
        if let Some(d) = &self.docker {
            docker_table(d, &mut o);
        }
        let _ = writeln!(o, "| target | limit | measured | met |\n|---|---|---|---|");
        for t in self.targets().into_iter().filter(|t| t.met.is_some()) {
            let met = if t.met == Some(true) { "**yes**" } else { "**no**" };
            let _ = writeln!(o, "| {} | {} | {} | {met} |", t.what, t.limit, t.measured.unwrap_or_default());
        }
        o
    }

    fn latency_table(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "Latency in ms, p50 / p99 over {} sequential iterations (added = Corral p50 − raw p50; \
             ratio = Corral p50 / raw p50; runtime only = the agent's BwrapRuntime driven in-process, \
             without coordinator, store, bus or gRPC):\n",
            self.iterations
        );
        let _ = writeln!(
            o,
            "| operation | raw bwrap | runtime only | dev | dev added | dev ratio | cluster | cluster added | cluster ratio |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
        type Pick = fn(&CorralLatency) -> &Samples;
        type PickRt = Option<fn(&RuntimeLatency) -> &Samples>;
        let rows: [(&str, Pick, PickRt, Option<&Samples>); 6] = [
            (
                "create → exec `true` → destroy (raw: `bwrap … true`)",
                |l| &l.cycle_true,
                Some(|r| &r.cycle),
                self.raw_true.as_ref(),
            ),
            (
                "create → exec `python3 -c 'print(1)'` → destroy (raw: `bwrap … python3 -c 'print(1)'`)",
                |l| &l.cycle_python,
                None,
                self.raw_python.as_ref(),
            ),
            ("create-to-ready (create returns RUNNING)", |l| &l.create, Some(|r| &r.create), None),
            ("first exec `true` in a fresh sandbox", |l| &l.first_exec, Some(|r| &r.exec), None),
            ("exec `python3 -c 'print(1)'`", |l| &l.exec_python, None, None),
            ("destroy", |l| &l.destroy, Some(|r| &r.destroy), None),
        ];
        for (what, pick, pick_rt, raw) in rows {
            let raw_cell = raw.map_or("—".into(), pair);
            let rt_cell = self.runtime.as_ref().zip(pick_rt).map_or("—".into(), |(r, f)| pair(f(r)));
            let mut cells = vec![what.to_owned(), raw_cell, rt_cell];
            for mode in [self.dev.as_ref(), self.cluster.as_ref()] {
                match mode {
                    Some(l) => {
                        let (a, r) = added(pick(l), raw);
                        cells.extend([pair(pick(l)), a, r]);
                    }
                    None => cells.extend(["not run".into(), "—".into(), "—".into()]),
                }
            }
            let _ = writeln!(o, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(o);
    }

    fn memory_table(&self, o: &mut String) {
        let _ = writeln!(o, "| memory | value |\n|---|---|");
        let mib = |k: u64| k as f64 / 1024.0;
        if let Some(r) = &self.raw_idle {
            let _ = writeln!(
                o,
                "| bare `bwrap … sleep` idle sandbox, PSS of its processes ({} sandboxes, {} processes) | {:.2} MiB |",
                r.sandboxes,
                r.processes,
                r.pss_per_sandbox_mib()
            );
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                o,
                "| Corral idle sandbox (dev), PSS of its processes ({} sandboxes, {} processes) | {:.2} MiB |",
                i.sandboxes,
                i.processes,
                i.pss_per_sandbox_mib()
            );
            let cg = i.cgroup_per_sandbox_mib().map_or("no memory cgroup found".into(), |v| format!("{v:.2} MiB"));
            let _ = writeln!(o, "| Corral idle sandbox, memory cgroup charge ({} cgroups) | {cg} |", i.cgroups_found);
            let _ = writeln!(
                o,
                "| dev server RSS growth per sandbox ({:.1} → {:.1} MiB) | {:.3} MiB |",
                mib(i.server_rss_before_kib),
                mib(i.server_rss_after_kib),
                i.server_growth_per_sandbox_mib()
            );
            let _ = writeln!(
                o,
                "| host memory per idle sandbox (max(PSS, cgroup charge) + server growth) | {:.2} MiB |",
                i.host_per_sandbox_mib()
            );
        }
        if let Some(c) = &self.coordinator {
            let _ = writeln!(o, "| coordinator RSS, no records | {:.1} MiB |", mib(c.empty_rss_kib));
            let _ = writeln!(o, "| coordinator RSS, {} records loaded | {:.1} MiB |", c.records, mib(c.loaded_rss_kib));
            let _ = writeln!(
                o,
                "| coordinator RSS after listing all {} (page_size 1000, {:.2} s) | {:.1} MiB |",
                c.records,
                c.list_secs,
                mib(c.listed_rss_kib)
            );
            let _ = writeln!(o, "| coordinator peak RSS (VmHWM) | {:.1} MiB |", mib(c.hwm_kib));
        }
        let _ = writeln!(o);
    }

    pub fn to_json(&self) -> Value {
        let m = &self.machine;
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|t| json!({"target": t.what, "limit": t.limit, "measured": t.measured, "met": t.met}))
            .collect();
        let added = |mode: Option<&CorralLatency>| {
            json!({
                "true_p50_ms": self.added_ms(mode).map(round3),
                "python_p50_ms": mode.zip(self.raw_python.as_ref()).map(|(l, r)| round3(l.cycle_python.p50() - r.p50())),
            })
        };
        json!({
            "machine": {
                "cpus": m.cpus, "model": m.model, "kernel": m.kernel, "bwrap": m.bwrap,
                "load_start": m.load_start, "load_end": m.load_end,
            },
            "iterations": self.iterations,
            "raw": {
                "bwrap_true": self.raw_true.as_ref().map(Samples::to_json),
                "bwrap_python": self.raw_python.as_ref().map(Samples::to_json),
                "idle_sandbox": self.raw_idle.as_ref().map(RawIdle::to_json),
            },
            "runtime_only": self.runtime.as_ref().map(RuntimeLatency::to_json),
            "dev": self.dev.as_ref().map(CorralLatency::to_json),
            "dev_added_over_raw": added(self.dev.as_ref()),
            "cluster": self.cluster.as_ref().map(CorralLatency::to_json),
            "cluster_added_over_raw": added(self.cluster.as_ref()),
            "idle_memory": self.idle.as_ref().map(IdleMemory::to_json),
            "coordinator_memory": self.coordinator.as_ref().map(CoordinatorMemory::to_json),
            "docker": self.docker.as_ref().map(DockerResults::to_json),
            "targets": targets,
        })
    }
}

/// The Docker rows: raw `docker` CLI, dev and cluster mode with `runtime=DOCKER`.
fn docker_table(d: &DockerResults, o: &mut String) {
    let _ = writeln!(
        o,
        "Docker (engine {}, image `{}`): latency in ms, p50 / p99 over {} sequential iterations \
         (added = Corral p50 − raw p50; ratio = Corral p50 / raw p50):\n",
        d.engine,
        crate::docker::IMAGE,
        d.iterations
    );
    let _ = writeln!(
        o,
        "| operation | raw docker | dev | dev added | dev ratio | cluster | cluster added | cluster ratio |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    type Pick = fn(&DockerLatency) -> &Samples;
    let raw = &d.raw;
    let rows: [(&str, Pick, Option<&Samples>); 5] = [
        (
            "create-to-ready, create returns RUNNING (raw: `docker create … true` + `docker start`)",
            |l| &l.create,
            Some(&raw.create_start),
        ),
        (
            "create-to-ready (raw: the same with `docker create --network none`, a sandbox's default network)",
            |l| &l.create,
            Some(&raw.create_start_no_net),
        ),
        ("create → exec `true` → destroy (raw: `docker run --rm corral/base true`)", |l| &l.cycle, Some(&raw.run_rm)),
        ("first exec `true` in a fresh sandbox", |l| &l.first_exec, None),
        ("destroy (raw: `docker rm -f -v` of the exited container)", |l| &l.destroy, Some(&raw.rm)),
    ];
    for (what, pick, raw) in rows {
        let mut cells = vec![what.to_owned(), raw.map_or("—".into(), pair)];
        for mode in [&d.dev, &d.cluster] {
            let (a, r) = added(pick(mode), raw);
            cells.extend([pair(pick(mode)), a, r]);
        }
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(o);
}
