//! TCP session ports against going straight to the task, on loopback, in one run: bulk
//! throughput (one connection sending 1 GiB one way) and the time to connect and get a first
//! byte back. Rounds alternate between the two paths; medians are reported.
//!
//! `cargo bench --bench tcp_throughput` (set `TCP_BENCH_MIB` to change the volume).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use gateway_tcp::{ForwardSettings, Placement, PortChoice, Target, TcpSessions, Wanted};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 5;
const CONNECTS: usize = 500;

/// A task: reads everything and answers the byte count when the client half-closes; also
/// echoes one byte for the latency probe.
async fn task_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(1) if total == 0 => {
                            let _ = stream.write_all(b"!").await;
                            total = 1;
                        }
                        Ok(n) => total += n as u64,
                    }
                }
                let _ = stream.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    addr
}

async fn send_bulk(addr: SocketAddr, bytes: u64) -> f64 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let chunk = vec![0x5au8; 256 * 1024];
    let started = Instant::now();
    let mut sent = 0u64;
    // The first byte alone would be taken for a latency probe.
    stream.write_all(&chunk[..2]).await.expect("write");
    sent += 2;
    while sent < bytes {
        let n = (bytes - sent).min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).await.expect("write");
        sent += n as u64;
    }
    stream.shutdown().await.expect("shutdown");
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).await.expect("the count");
    assert_eq!(u64::from_be_bytes(count), bytes, "every byte arrived");
    bytes as f64 / started.elapsed().as_secs_f64() / (1024.0 * 1024.0 * 1024.0)
}

async fn first_byte(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.write_all(b"?").await.expect("write");
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).await.expect("read");
    started.elapsed()
}

/// A session port leading to `task`, moving bytes with `splice(2)` or through user space.
/// The sessions value is returned so that the port stays open.
async fn session_port(task: SocketAddr, splice: bool) -> (SocketAddr, TcpSessions) {
    let settings = ForwardSettings {
        splice,
        ..ForwardSettings::default()
    };
    let sessions = TcpSessions::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(20_000..=60_000),
        settings,
    );
    let key = if splice { "splice" } else { "copy" };
    let wanted = Wanted {
        target: Target {
            key: key.into(),
            host: "127.0.0.1".into(),
            port: task.port(),
        },
        port: PortChoice::Allocate { adopt: None },
    };
    let Placement::Serving(port) = sessions.apply(vec![wanted]).await[key].clone() else {
        panic!("no session port");
    };
    (([127, 0, 0, 1], port).into(), sessions)
}

fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mib: u64 = std::env::var("TCP_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
        let task = task_server().await;
        let spliced = session_port(task, true).await;
        let copied = session_port(task, false).await;

        // Another proxy for reference (nginx's stream module, say), listening at this
        // address and leading to the task port printed here.
        let reference: Option<SocketAddr> = std::env::var("TCP_BENCH_REFERENCE").ok().and_then(|a| a.parse().ok());
        if let Ok(file) = std::env::var("TCP_BENCH_TASK_PORT_FILE") {
            std::fs::write(file, task.port().to_string()).expect("write the task port");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let (mut direct, mut through_splice, mut through_copy, mut through_reference) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            direct.push(send_bulk(task, mib << 20).await);
            through_splice.push(send_bulk(spliced.0, mib << 20).await);
            through_copy.push(send_bulk(copied.0, mib << 20).await);
            if let Some(reference) = reference {
                through_reference.push(send_bulk(reference, mib << 20).await);
            }
        }
        let (d, s, c) = (median(direct.clone()), median(through_splice.clone()), median(through_copy.clone()));
        println!("throughput, {mib} MiB one way, median of {ROUNDS} alternating rounds:");
        println!("  direct                   {d:6.2} GiB/s   rounds {direct:.2?}");
        println!("  session port, splice    {s:6.2} GiB/s   rounds {through_splice:.2?}   {:5.1} % of direct", s / d * 100.0);
        println!("  session port, user copy {c:6.2} GiB/s   rounds {through_copy:.2?}   {:5.1} % of direct", c / d * 100.0);
        if !through_reference.is_empty() {
            let r = median(through_reference.clone());
            println!("  reference proxy         {r:6.2} GiB/s   rounds {through_reference:.2?}   {:5.1} % of direct", r / d * 100.0);
        }
        let gateway = spliced.0;

        let (mut direct, mut through) = (Vec::new(), Vec::new());
        for _ in 0..CONNECTS {
            direct.push(first_byte(task).await);
            through.push(first_byte(gateway).await);
        }
        let (d, g) = (median(direct), median(through));
        println!("connect and first byte back, median of {CONNECTS}:");
        println!("  direct        {d:?}");
        println!("  session port  {g:?}");
        println!("  added         {:?}", g.saturating_sub(d));
    });
}
