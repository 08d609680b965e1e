//! Lock latency: how long from an administrator's lock request until every live session of
//! the identity is gone from the client's point of view.
//!
//! Each round opens `--sessions` idle sessions of one identity (tokio-postgres over TLS,
//! through a real release-built `ward serve` to a real PostgreSQL, both from the integration
//! test harness), then sends `POST /api/v1/identities/{name}/lock` and timestamps the moment
//! each client's connection ends (it reads ward's FATAL 57P01 and then EOF). It reports, over
//! all rounds, the time to the *last* client (what "every socket closed" means), the time to
//! the API's answer (which comes once the lock is saved), and the time to each client.
//!
//!     bench/lock_latency.sh                      # 100 sessions, 20 rounds
//!     cargo bench -p ward --bench lock_latency -- --sessions 100 --rounds 20

#[path = "../tests/harness/mod.rs"]
mod harness;

use harness::{AuthMethod, Postgres, Target, Ward, WardOptions, insecure_connector};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDENTITY: &str = "bench-bot";
const TARGET: &str = "bench-db";

struct Options {
    sessions: usize,
    rounds: usize,
    /// Niceness for the PostgreSQL server (`--postgres-nice N`): on a small machine the
    /// backends of the ended sessions all exit at once and compete for the cores with ward
    /// and with the clients being timed; a lower priority separates ward's latency from the
    /// co-located database's teardown. Default: unchanged.
    postgres_nice: Option<i32>,
}

/// `--sessions N --rounds N`; anything else (e.g. cargo's `--bench`) is ignored.
fn options() -> Options {
    let mut options = Options {
        sessions: 100,
        rounds: 20,
        postgres_nice: None,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = pair[1].parse::<usize>().ok().filter(|&n| n > 0);
        match (pair[0].as_str(), value) {
            ("--sessions", Some(n)) => options.sessions = n,
            ("--rounds", Some(n)) => options.rounds = n,
            ("--sessions" | "--rounds", None) => {
                eprintln!("{} needs a positive number; got {:?}", pair[0], pair[1]);
                std::process::exit(2);
            }
            ("--postgres-nice", _) => match pair[1].parse::<i32>() {
                Ok(n) if (0..=19).contains(&n) => options.postgres_nice = Some(n),
                _ => {
                    eprintln!("--postgres-nice needs 0 to 19; got {:?}", pair[1]);
                    std::process::exit(2);
                }
            },
            _ => {}
        }
    }
    options
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(options));
}

/// A one-shot HTTP request to the admin API over a fresh connection; returns status and
/// body. Async, so the clock starts right before the request leaves.
async fn api(ward: &Ward, token: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(ward.api_addr())
        .await
        .expect("connect to the admin API");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        ward.api_addr()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("receive");
    harness::parse_http_response(&raw).expect("an HTTP response")
}

/// Opens `n` sessions concurrently; returns the clients (kept alive) and, per session, a
/// task that yields the instant its connection ended.
async fn open_sessions(
    ward: &Ward,
    n: usize,
) -> (
    Vec<tokio_postgres::Client>,
    Vec<tokio::task::JoinHandle<Instant>>,
) {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..n {
        let config = ward.pg_config(IDENTITY, TARGET);
        opening.spawn(async move {
            let (client, connection) = config
                .connect(insecure_connector())
                .await
                .expect("open a session through ward");
            let ended = tokio::spawn(async move {
                let _ = connection.await;
                Instant::now()
            });
            (client, ended)
        });
    }
    let mut clients = Vec::with_capacity(n);
    let mut ended = Vec::with_capacity(n);
    while let Some(opened) = opening.join_next().await {
        let (client, end) = opened.expect("session task");
        clients.push(client);
        ended.push(end);
    }
    (clients, ended)
}

/// Lowers the priority of the harness's PostgreSQL server; the backends it forks for the
/// sessions inherit it.
fn renice_postgres(pg: &Postgres, nice: i32) {
    let pid_file = pg.data_dir().join("postmaster.pid");
    let pid: Option<libc::id_t> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse().ok());
    let Some(pid) = pid else {
        eprintln!(
            "cannot read {}; PostgreSQL keeps its priority",
            pid_file.display()
        );
        return;
    };
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, nice) } != 0 {
        eprintln!(
            "cannot renice PostgreSQL ({}); it keeps its priority",
            std::io::Error::last_os_error()
        );
    }
}

/// The value at percentile `p` (nearest rank) of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn run(options: Options) {
    let pg = Postgres::get();
    let db = pg.create_target("lock_bench", AuthMethod::ScramSha256);
    if let Some(nice) = options.postgres_nice {
        renice_postgres(pg, nice);
    }
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres(TARGET, &db))
            .token(IDENTITY)
            // Per-session log lines would be most of ward's work here.
            .env("RUST_LOG", "warn"),
    );
    let token = ward.admin_token();
    let lock_path = format!("/api/v1/identities/{IDENTITY}/lock");
    let mut all_closed = Vec::new();
    let mut answered = Vec::new();
    let mut each = Vec::new();
    eprintln!(
        "lock latency: {} live sessions, {} rounds",
        options.sessions, options.rounds
    );
    for round in 1..=options.rounds {
        let (clients, ended) = open_sessions(&ward, options.sessions).await;
        // Let the last handshakes settle so the round measures the lock alone.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let start = Instant::now();
        let (status, body) = api(&ward, &token, "POST", &lock_path).await;
        let answer = start.elapsed();
        assert_eq!(status, 200, "lock: {body}");
        let result: serde_json::Value = serde_json::from_str(&body).expect("lock answer");
        assert_eq!(
            result["sessions_ended"].as_u64(),
            Some(options.sessions as u64),
            "every session is live when the lock comes: {body}"
        );
        let mut this_round = Vec::with_capacity(options.sessions);
        for end in ended {
            let at = tokio::time::timeout(Duration::from_secs(30), end)
                .await
                .expect("every session ends")
                .expect("session task");
            this_round.push(at.saturating_duration_since(start));
        }
        this_round.sort();
        let closed = this_round[this_round.len() - 1];
        eprintln!(
            "round {round:>3}: all {} closed after {} (half after {}, 90% after {}), API \
             answered after {}",
            options.sessions,
            ms(closed),
            ms(percentile(&this_round, 50.0)),
            ms(percentile(&this_round, 90.0)),
            ms(answer)
        );
        each.extend(this_round);
        all_closed.push(closed);
        answered.push(answer);
        drop(clients);

        let (status, body) = api(&ward, &token, "DELETE", &lock_path).await;
        assert_eq!(status, 200, "unlock: {body}");
    }

    let table = |what: &str, mut values: Vec<Duration>| {
        values.sort();
        format!(
            "| {what} | {} | {} | {} |",
            ms(percentile(&values, 50.0)),
            ms(percentile(&values, 99.0)),
            ms(values[values.len() - 1]),
        )
    };
    println!(
        "\nLock latency, {} live sessions of one identity, {} rounds \
         (nearest-rank percentiles; with {} rounds p99 is the worst round):\n",
        options.sessions, options.rounds, options.rounds
    );
    println!("| from the lock request to | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        table("every client saw its connection end", all_closed)
    );
    println!("{}", table("the API's answer (lock saved)", answered));
    println!(
        "{}",
        table("each client (all sessions of all rounds)", each)
    );
}
