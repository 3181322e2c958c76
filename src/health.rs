//! `--health-check`: the container's health probe, without a shell or curl in the image.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;

/// Asks the gateway listening where `config` says for `/_gateway/health`; 0 if it answers
/// 200, 1 otherwise (with the reason on standard error).
pub fn check(config: &Config) -> ExitCode {
    let host = match config.listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let address = SocketAddr::new(host, config.listen.port());
    match ask(address) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("clearml-gateway: /_gateway/health at {address} answered {status}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("clearml-gateway: /_gateway/health at {address}: {err}");
            ExitCode::FAILURE
        }
    }
}

fn ask(address: SocketAddr) -> std::io::Result<u16> {
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(
        b"GET /_gateway/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    Ok(status)
}
