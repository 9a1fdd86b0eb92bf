//! `[[listen]]`: the sockets the supervisor binds for the payload, and the
//! checks of their names, addresses and modes.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) mode: Option<String>,
}

/// One `[[listen]]` socket.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenConfig {
    /// The name given in `LISTEN_FDNAMES`.
    pub name: String,
    /// `host:port` for TCP, or a path for a Unix stream socket.
    pub address: String,
    /// File mode of a Unix socket, octal.
    pub mode: Option<u32>,
}

/// systemd's rule for `LISTEN_FDNAMES` entries: 1–255 printable ASCII, no `:`.
const MAX_LISTEN_NAME: usize = 255;

/// The largest Unix socket mode (permission bits only).
const MAX_SOCKET_MODE: u32 = 0o777;

impl ListenConfig {
    pub(super) fn parse(raw: RawListen) -> Result<ListenConfig, String> {
        let name = &raw.name;
        if name.is_empty()
            || name.len() > MAX_LISTEN_NAME
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(format!(
                "[[listen]] name `{name}`: must be 1-255 printable ASCII characters without `:` (LISTEN_FDNAMES)"
            ));
        }
        let address = &raw.address;
        let bad = |why: &str| format!("[[listen]] {name} address `{address}`: {why}");
        let is_path = address.starts_with('/');
        if is_path {
            if address.contains('\0') {
                return Err(bad("a socket path cannot hold a NUL byte"));
            }
        } else if address.starts_with("./") {
            return Err(bad("a Unix socket path must be absolute"));
        } else {
            let (host, port) = address
                .rsplit_once(':')
                .ok_or_else(|| bad("must be host:port or an absolute Unix socket path"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                return Err(bad("the host is missing or malformed"));
            }
            port.parse::<u16>()
                .map_err(|_| bad("the port must be 0-65535"))?;
        }
        let mode = match &raw.mode {
            None => None,
            Some(_) if !is_path => return Err(bad("mode applies to Unix sockets only")),
            Some(m) => match u32::from_str_radix(m, 8) {
                Ok(mode) if mode <= MAX_SOCKET_MODE => Some(mode),
                _ => {
                    return Err(format!(
                        "[[listen]] {name} mode `{m}`: must be octal permission bits, 0-777"
                    ));
                }
            },
        };
        Ok(ListenConfig {
            name: raw.name,
            address: raw.address,
            mode,
        })
    }
}
