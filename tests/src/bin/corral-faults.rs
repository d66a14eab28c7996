//! Long mode of the fault suite: runs each scenario `--runs` times with seeds `--seed`,
//! `--seed`+1, …, prints each run's report as a JSON line, and with `--doc PATH` writes the
//! table of figures into that markdown file between the `<!-- faults:begin -->` and
//! `<!-- faults:end -->` markers. Exits non-zero when any run found a violation.
//!
//! `corral-faults [--runs N] [--seed S] [--scenario ID]... [--doc docs/RELIABILITY.md]`

use std::process::ExitCode;

use anyhow::{Context, bail};
use corral_e2e::faults::{RunReport, Scenario, run};

struct Args {
    runs: u64,
    seed: u64,
    scenarios: Vec<Scenario>,
    doc: Option<std::path::PathBuf>,
}

const USAGE: &str = "\
usage: corral-faults [--runs N] [--seed S] [--scenario ID]... [--doc PATH]

Runs each fault scenario N times (default 1) with seeds S, S+1, ... (default 1) over real etcd,
NATS, coordinators and agents; prints one JSON report per run; with --doc, writes the table of
figures into PATH between the <!-- faults:begin --> and <!-- faults:end --> markers.
Scenarios (default all): F1 F2 F3 F4 F6 F7 F8 F9 F10 F11 F12 F13 stall skew.
Needs root (network namespaces, iptables) and the binaries of `cargo build --workspace --bins`.
Exits non-zero when any run found a violation.";

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut a = Args { runs: 1, seed: 1, scenarios: Vec::new(), doc: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--scenario" => {
                let v = value()?;
                a.scenarios.push(Scenario::parse(&v).with_context(|| format!("unknown scenario {v}"))?);
            }
            "--doc" => a.doc = Some(value()?.into()),
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    if a.scenarios.is_empty() {
        a.scenarios = Scenario::ALL.to_vec();
    }
    Ok(Some(a))
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

fn secs(v: Option<f64>) -> String {
    v.map_or("—".to_owned(), |s| format!("{s:.1} s"))
}

/// One table row per scenario.
fn row(s: Scenario, reports: &[RunReport]) -> String {
    let n = reports.len();
    let pass = reports.iter().filter(|r| r.passed()).count();
    let sum = |f: fn(&RunReport) -> usize| reports.iter().map(f).sum::<usize>();
    let worst = reports.iter().map(|r| r.figures.worst_overlap_s).fold(0.0, f64::max);
    let alive = reports.iter().map(|r| format!("{}/{}", r.figures.max_alive, r.figures.cap)).collect::<Vec<_>>();
    let mut det: Vec<f64> = reports.iter().filter_map(|r| r.detection_s).collect();
    det.sort_by(f64::total_cmp);
    format!(
        "| {} | {} | {n} | {pass} | {} | {} | {:.2} s | {} | {} | {} / {} |",
        s.id(),
        s.describe(),
        sum(|r| r.figures.lost),
        sum(|r| r.figures.dup_commits),
        worst,
        alive.join(", "),
        sum(|r| r.figures.reruns),
        secs(percentile(&det, 0.5)),
        secs(det.last().copied()),
    )
}

fn table(results: &[(Scenario, Vec<RunReport>)], args: &Args) -> String {
    let mut t = format!(
        "Seeds {}..{} per scenario, `scripts/faults.sh --runs {}`.\n\n\
         | # | fault | runs | pass | lost | dup commits | worst overlap | max alive / cap | re-runs | detection p50 / max |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        args.seed,
        args.seed + args.runs - 1,
        args.runs
    );
    for (s, reports) in results {
        t += &row(*s, reports);
        t.push('\n');
    }
    t += "| F14 | object store down during a checkpoint | — | — | — | — | — | — | — | not yet applicable: checkpoints do not exist (issue 16) |\n";
    t
}

fn write_doc(path: &std::path::Path, table: &str) -> anyhow::Result<()> {
    let (begin, end) = ("<!-- faults:begin -->", "<!-- faults:end -->");
    let doc = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
        bail!("{} has no {begin} … {end} markers", path.display())
    };
    let new = format!("{}{begin}\n{table}{}", &doc[..b], &doc[e..]);
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<ExitCode> {
    let Some(args) = parse_args()? else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let mut results = Vec::new();
    let mut failed = false;
    for s in &args.scenarios {
        let mut reports = Vec::new();
        for seed in args.seed..args.seed + args.runs {
            let report = run(*s, seed).await.with_context(|| format!("{} seed {seed}", s.id()))?;
            println!("{}", serde_json::to_string(&report)?);
            failed |= !report.passed();
            reports.push(report);
        }
        results.push((*s, reports));
    }
    let table = table(&results, &args);
    print!("{table}");
    if let Some(doc) = &args.doc {
        write_doc(doc, &table)?;
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
