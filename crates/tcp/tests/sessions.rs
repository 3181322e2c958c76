//! Session ports with real sockets: bytes exact both ways, half-close, many at once, closing,
//! and the range running out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use gateway_tcp::{ForwardSettings, Placement, PortChoice, Target, TcpSessions, Wanted};
use gateway_testkit::backend::tcp_echo;
use gateway_testkit::wait::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A free range of `size` ports (found by binding and releasing).
fn free_range(size: u16) -> std::ops::RangeInclusive<u16> {
    loop {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let start = probe.local_addr().unwrap().port();
        drop(probe);
        let Some(end) = start.checked_add(size - 1) else {
            continue;
        };
        let all_free = (start..=end).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return start..=end;
        }
    }
}

fn wanted(key: &str, upstream: SocketAddr) -> Wanted {
    Wanted {
        target: Target {
            key: key.to_owned(),
            host: upstream.ip().to_string(),
            port: upstream.port(),
        },
        port: PortChoice::Allocate { adopt: None },
    }
}

fn port(placement: &Placement) -> u16 {
    match placement {
        Placement::Serving(port) => *port,
        other => panic!("not serving: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_each_way_arrive_exact_and_half_close_is_honoured() {
    for splice in [true, false] {
        exact_both_ways(ForwardSettings {
            splice,
            ..ForwardSettings::default()
        })
        .await;
    }
}

async fn exact_both_ways(settings: ForwardSettings) {
    let echo = tcp_echo().await;
    let sessions = TcpSessions::new(LOCALHOST, Some(free_range(4)), settings);
    let placed = sessions.apply(vec![wanted("t1", echo.addr())]).await;
    let port = port(&placed["t1"]);

    let stream = TcpStream::connect((LOCALHOST, port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sent: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let expected = sent.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        // Half-close: no more from us, but the rest of the reply must still come.
        writer.shutdown().await.unwrap();
    });
    let mut received = Vec::new();
    reader.read_to_end(&mut received).await.unwrap();
    writing.await.unwrap();
    assert_eq!(received.len(), expected.len());
    assert!(received == expected, "the bytes came back changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_at_once() {
    let echo = tcp_echo().await;
    let sessions = TcpSessions::new(LOCALHOST, Some(free_range(2)), ForwardSettings::default());
    let port = port(&sessions.apply(vec![wanted("t1", echo.addr())]).await["t1"]);
    let clients: Vec<_> = (0..200u32)
        .map(|i| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect((LOCALHOST, port)).await.unwrap();
                let message = format!("hello {i}");
                stream.write_all(message.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
                let mut back = String::new();
                stream.read_to_string(&mut back).await.unwrap();
                assert_eq!(back, message);
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_session_refuses_connections_cuts_open_ones_and_frees_its_port() {
    let echo = tcp_echo().await;
    let range = free_range(2);
    let sessions = TcpSessions::new(LOCALHOST, Some(range.clone()), ForwardSettings::default());
    let first = port(&sessions.apply(vec![wanted("t1", echo.addr())]).await["t1"]);
    let mut open = TcpStream::connect((LOCALHOST, first)).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.unwrap();

    sessions.apply(Vec::new()).await;
    assert!(
        TcpStream::connect((LOCALHOST, first)).await.is_err(),
        "refused once closed"
    );
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest)).await;
    assert!(cut.is_ok(), "the open connection was closed too");

    let placed = sessions
        .apply(vec![wanted("t2", echo.addr()), wanted("t3", echo.addr())])
        .await;
    let second = port(&placed["t2"]);
    let third = port(&placed["t3"]);
    assert_ne!(second, first, "a released port waits its turn");
    assert_eq!(third, first, "then it is used again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_of_two_ports_serves_two_sessions_and_the_third_waits() {
    let echo = tcp_echo().await;
    let sessions = TcpSessions::new(LOCALHOST, Some(free_range(2)), ForwardSettings::default());
    let all = vec![
        wanted("a", echo.addr()),
        wanted("b", echo.addr()),
        wanted("c", echo.addr()),
    ];
    let placed = sessions.apply(all.clone()).await;
    let exhausted: Vec<_> = placed
        .values()
        .filter(|p| **p == Placement::Exhausted)
        .collect();
    assert_eq!(exhausted.len(), 1, "{placed:?}");
    let waiting = placed
        .iter()
        .find(|(_, p)| **p == Placement::Exhausted)
        .unwrap()
        .0
        .clone();
    let others: Vec<Wanted> = all
        .into_iter()
        .filter(|w| w.target.key != waiting)
        .collect();
    let keep_one = vec![others[0].clone(), wanted(&waiting, echo.addr())];
    let placed = sessions.apply(keep_one).await;
    assert!(
        matches!(placed[&waiting], Placement::Serving(_)),
        "{placed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_another_process_holds_is_skipped_and_an_adopted_port_kept() {
    let echo = tcp_echo().await;
    let range = free_range(3);
    let held = std::net::TcpListener::bind(("127.0.0.1", *range.start())).unwrap();
    let sessions = TcpSessions::new(LOCALHOST, Some(range.clone()), ForwardSettings::default());
    let mut adopted = wanted("old", echo.addr());
    adopted.port = PortChoice::Allocate {
        adopt: Some(*range.end()),
    };
    let placed = sessions
        .apply(vec![wanted("new", echo.addr()), adopted])
        .await;
    assert_eq!(
        port(&placed["old"]),
        *range.end(),
        "the adopted port is kept"
    );
    assert_eq!(
        port(&placed["new"]),
        range.start() + 1,
        "the held port is skipped"
    );
    drop(held);
    let mut stream = TcpStream::connect((LOCALHOST, *range.end())).await.unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).await.unwrap();
    let ok = eventually(Duration::from_secs(1), || async {
        sessions.ports_in_use().await == 2
    })
    .await;
    assert!(ok);
}
