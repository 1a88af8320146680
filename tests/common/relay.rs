//! A TCP relay on a loopback port in front of a service that cannot be killed without losing
//! what it holds (moto keeps its queues in memory): killing the relay is the service going
//! away for its clients (open connections reset, new ones refused), restarting it on the same
//! port is the service coming back with its state.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Relay {
    pub port: u16,
    target: SocketAddr,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    accept: std::thread::JoinHandle<()>,
}

impl Relay {
    /// Relaying `127.0.0.1:<new port>` to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let mut relay = Relay {
            port: super::free_port(),
            target,
            running: None,
        };
        relay.up();
        relay
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Resets every open connection and stops listening.
    pub fn kill(&mut self) {
        let Some(r) = self.running.take() else { return };
        r.stop.store(true, Ordering::SeqCst);
        let _ = r.accept.join();
        for s in r.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn up(&mut self) {
        assert!(self.running.is_none(), "the relay is already up");
        let listener = super::wait_for("the relay port", Duration::from_secs(10), || {
            TcpListener::bind(("127.0.0.1", self.port)).map_err(|e| e.to_string())
        });
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (target, s, st) = (self.target, stop.clone(), streams.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => relay_one(client, target, &st),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.running = Some(Running {
            stop,
            streams,
            accept,
        });
    }
}

fn relay_one(client: TcpStream, target: SocketAddr, streams: &Mutex<Vec<TcpStream>>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let mut open = streams.lock().unwrap();
    open.push(client.try_clone().unwrap());
    open.push(server.try_clone().unwrap());
    for (mut from, mut to) in [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server, client),
    ] {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}
