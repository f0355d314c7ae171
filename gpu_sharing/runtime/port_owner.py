"""Who listens on a port: /proc/net/tcp{,6} LISTEN sockets mapped to processes by socket inode.

Why: a /health answer only proves that *something* speaks HTTP on the port. If another
local user's process took the port first (between our bind probe and vLLM's bind, or
long before an adopted record), an instance would go READY and the router would send
user prompts to that process. So READY needs the listening socket to belong to the
instance's process group, and a port found busy before a (re)spawn is reallocated
instead of being retried until FAILED.

Source of the format: proc(5), /proc/net/tcp: "local_address" is hex IP:port, "st" 0A
is TCP_LISTEN (include/net/tcp_states.h), "inode" is the socket inode, which
/proc/<pid>/fd/<n> links to as ``socket:[<inode>]``.
"""

from __future__ import annotations

import os
from typing import Iterable

TCP_LISTEN = "0A"
PROC_NET = ("/proc/net/tcp", "/proc/net/tcp6")


def listening_inodes(port: int, tables: Iterable[str] = PROC_NET) -> set[int]:
    """Inodes of the sockets in LISTEN state on ``port`` (any address)."""
    out: set[int] = set()
    for table in tables:
        try:
            with open(table, encoding="ascii", errors="replace") as f:
                lines = f.read(8 * 1024 * 1024).splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_LISTEN:
                continue
            try:
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    out.add(int(fields[9]))
            except (IndexError, ValueError):
                continue
    return out


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """Socket inodes held open by these processes (readable for our own processes)."""
    out: set[int] = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue
            if target.startswith("socket:[") and target.endswith("]"):
                out.add(int(target[8:-1]))
    return out


def listener_belongs_to(port: int, pids: Iterable[int]) -> bool | None:
    """True: a listener on port is one of these processes' sockets; False: the port has listeners and none
    is theirs; None: nobody listens on it (yet), so nothing can be said."""
    listeners = listening_inodes(port)
    if not listeners:
        return None
    return bool(listeners & socket_inodes(pids))


__all__ = ["listener_belongs_to", "listening_inodes", "socket_inodes"]
