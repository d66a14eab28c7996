//! `corral demo`: the quick start's visible tour against a running server.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use corral_client::v1 as pb;

use super::connect;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many sandboxes to run at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub count: u32,
}

const SNIPPET: &str = r#"
import os, platform, socket
n = int(os.environ["DEMO_N"])
print(f"sandbox #{n}: python {platform.python_version()} as uid {os.getuid()} on host {socket.gethostname()!r}")
m = (n + 1) * 1000
print(f"  sum of squares 1..{m} = {sum(i*i for i in range(1, m + 1))}")
print(f"  network interfaces: {[name for _, name in socket.if_nameindex()]}")
print(f"  /workspace holds {sorted(os.listdir('/workspace'))}")
"#;

pub async fn run(endpoint: &str, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let client = connect(endpoint).await?;
    let started = Instant::now();
    println!("creating {} sandboxes at {endpoint} ...", args.count);
    let creates = (0..args.count).map(|n| {
        let client = client.clone();
        async move {
            let req = pb::CreateSandboxRequest {
                env: [("DEMO_N".to_owned(), n.to_string())].into(),
                labels: [("demo".to_owned(), "quickstart".to_owned())].into(),
                ..Default::default()
            };
            let t = Instant::now();
            let s = client.create(req).await?;
            println!("  created {} on node {} in {:.1} ms", s.id, s.node_id, t.elapsed().as_secs_f64() * 1e3);
            client.write_file(&s.id, "/workspace/hello.py", SNIPPET.as_bytes().to_vec(), 0o644).await?;
            let out = client.run_argv(&s.id, &["python3", "/workspace/hello.py"]).await?;
            client.destroy(&s.id).await?;
            anyhow::Ok((n, s.id, out))
        }
    });
    let mut results = futures::future::try_join_all(creates).await?;
    results.sort_by_key(|r| r.0);
    for (_, id, out) in &results {
        println!("--- {id} (exit {}, {} ms)", out.exit_code, out.duration_ms);
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    println!("ran {} sandboxes and destroyed them in {:.2} s", results.len(), started.elapsed().as_secs_f64());
    let failed = results.iter().filter(|r| r.2.exit_code != 0).count();
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
