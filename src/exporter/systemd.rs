//! systemd socket activation (`--web.systemd-socket`): serve on the
//! listening sockets systemd passes (`LISTEN_FDS` for this process's
//! `LISTEN_PID`, read with the `listenfd` crate) instead of binding
//! `--web.listen-address`. [`Exporter::bind_to`](super::Exporter::bind_to)
//! adopts them.

use std::net::TcpListener;

/// Why the passed sockets cannot be served on.
#[derive(Debug, thiserror::Error)]
pub enum SocketActivationError {
    #[error(
        "--web.systemd-socket: systemd passed no sockets (LISTEN_FDS is unset or 0, or \
         LISTEN_PID names another process); start the exporter through a .socket unit, \
         or drop the flag to bind --web.listen-address"
    )]
    NoSockets,
    /// The check's error is the `source`, so a cause chain shows it once.
    #[error("--web.systemd-socket: passed socket {nth} of {count} is not a TCP socket")]
    NotTcp {
        nth: usize,
        count: usize,
        source: std::io::Error,
    },
    #[error("--web.systemd-socket: passed socket {nth} of {count} was already taken")]
    Taken { nth: usize, count: usize },
}

/// Sockets a service manager passed, by position (`listenfd::ListenFd`).
pub trait Passed {
    /// How many sockets were passed.
    fn count(&self) -> usize;
    /// The socket at `index` as a TCP listener; `Ok(None)` if it was taken
    /// before, an error if it is not a TCP socket.
    fn take_tcp_listener(&mut self, index: usize) -> std::io::Result<Option<TcpListener>>;
}

impl Passed for listenfd::ListenFd {
    fn count(&self) -> usize {
        self.len()
    }
    fn take_tcp_listener(&mut self, index: usize) -> std::io::Result<Option<TcpListener>> {
        listenfd::ListenFd::take_tcp_listener(self, index)
    }
}

/// With `--web.systemd-socket`, the sockets systemd passed, in order (see
/// [`listeners`]); without it, none. Call it before the runtime starts
/// threads: taking the sockets clears the variables that pass them, so
/// child processes do not see them.
pub fn listeners_if(systemd_socket: bool) -> Result<Vec<TcpListener>, SocketActivationError> {
    if systemd_socket {
        listeners(&mut listenfd::ListenFd::from_env())
    } else {
        Ok(Vec::new())
    }
}

/// Every passed socket as a TCP listener, in order; an error if there are
/// none or one is not a TCP socket. The exporter logs their addresses when
/// it starts serving.
pub fn listeners(passed: &mut impl Passed) -> Result<Vec<TcpListener>, SocketActivationError> {
    let count = passed.count();
    if count == 0 {
        return Err(SocketActivationError::NoSockets);
    }
    (0..count)
        .map(|index| {
            let nth = index + 1;
            passed
                .take_tcp_listener(index)
                .map_err(|source| SocketActivationError::NotTcp { nth, count, source })?
                .ok_or(SocketActivationError::Taken { nth, count })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passed sockets as a list: a listener, `None` (taken), or an error.
    struct Fake(Vec<Option<std::io::Result<Option<TcpListener>>>>);

    impl Passed for Fake {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn take_tcp_listener(&mut self, index: usize) -> std::io::Result<Option<TcpListener>> {
            self.0[index].take().unwrap_or(Ok(None))
        }
    }

    fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    #[test]
    fn every_passed_socket_is_served_in_order() {
        let (a, b) = (listener(), listener());
        let addrs = [a.local_addr().unwrap(), b.local_addr().unwrap()];
        let mut passed = Fake(vec![Some(Ok(Some(a))), Some(Ok(Some(b)))]);
        let got = listeners(&mut passed).unwrap();
        let got: Vec<_> = got.iter().map(|l| l.local_addr().unwrap()).collect();
        assert_eq!(got, addrs);
        // Taken once: asking again finds them gone.
        let err = listeners(&mut passed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--web.systemd-socket: passed socket 1 of 2 was already taken"
        );
    }

    #[test]
    fn socket_errors_say_which_socket_and_why() {
        let err = listeners(&mut Fake(Vec::new())).unwrap_err();
        assert!(matches!(err, SocketActivationError::NoSockets));
        assert!(
            err.to_string().starts_with(
                "--web.systemd-socket: systemd passed no sockets (LISTEN_FDS is unset or 0"
            ),
            "{err}"
        );
        let not_tcp = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a stream socket");
        let mut passed = Fake(vec![Some(Ok(Some(listener()))), Some(Err(not_tcp))]);
        let err = anyhow::Error::from(listeners(&mut passed).unwrap_err());
        assert_eq!(
            format!("{err:#}"),
            "--web.systemd-socket: passed socket 2 of 2 is not a TCP socket: not a stream socket"
        );
        let mut passed = Fake(vec![Some(Ok(Some(listener()))), Some(Ok(None))]);
        let err = listeners(&mut passed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--web.systemd-socket: passed socket 2 of 2 was already taken"
        );
    }

    /// Without the flag nothing is read, whatever the environment says.
    #[test]
    fn without_the_flag_no_socket_is_taken() {
        assert!(listeners_if(false).unwrap().is_empty());
    }
}
