"""Hosts on a private network inside this machine: Linux network namespaces on a bridge.

`PrivateNetwork.create(["api", "w1"])` makes a bridge in this (the root) namespace with the
network's first address (10.213.N.1/24, N drawn from this process's id so that two runs do
not collide), and for each host a namespace with a veth pair: one end in the namespace with
the next address, the other end a port of the bridge. Servers that listen on the bridge's
address are reached from every host over that path. `cut(host)` takes the host's bridge
port down (its cable pulled: what it sends is dropped, nothing is refused), `heal(host)`
puts it back. Every name starts with `tfnet<pid>`; `remove()` deletes the namespaces (their
veth pairs go with them) and the bridge by name, whatever state they were left in.

Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and the `ip` command (iproute2);
`NamespacesUnavailable` says which is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

COMMAND_TIMEOUT = 30.0


class NamespacesUnavailable(Exception):
    """Network namespaces cannot be made here (no `ip` command, or not permitted)."""


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str
    port: str
    """The bridge side of its veth pair: down means the host is cut off."""


@dataclass
class PrivateNetwork:
    prefix: str
    subnet: int
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def gateway(self) -> str:
        """The bridge's address in this namespace, where the servers listen."""
        return f"10.213.{self.subnet}.1"

    @property
    def gateway_interface(self) -> str:
        return f"{self.gateway}/24"

    @classmethod
    def create(cls, names: list[str]) -> PrivateNetwork:
        if shutil.which("ip") is None:
            raise NamespacesUnavailable("the `ip` command (iproute2) is not installed")
        pid = os.getpid()
        network = cls(prefix=f"tfnet{pid % 100_000}", subnet=pid % 250 + 2)
        try:
            network._probe()
            _ip("link", "add", network.bridge, "type", "bridge")
            _ip("addr", "add", network.gateway_interface, "dev", network.bridge)
            _ip("link", "set", network.bridge, "up")
            for number, name in enumerate(names, start=2):
                network._add_host(name, f"10.213.{network.subnet}.{number}")
        except BaseException:
            network.remove()
            raise
        return network

    def _probe(self) -> None:
        """Make and delete one namespace, to tell 'not permitted here' from a real failure."""
        probe = f"{self.prefix}probe"
        done = subprocess.run(
            ["ip", "netns", "add", probe],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise NamespacesUnavailable(
                f"cannot create a network namespace here: {done.stderr.strip()}"
            )
        _ip("netns", "delete", probe)

    def _add_host(self, name: str, address: str) -> None:
        host = Host(
            name=name,
            namespace=f"{self.prefix}{name}",
            address=address,
            port=f"{self.prefix}{name}",
        )
        self.hosts[name] = host
        _ip("netns", "add", host.namespace)
        _ip(
            "link",
            "add",
            host.port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.namespace,
        )
        _ip("link", "set", host.port, "master", self.bridge)
        _ip("link", "set", host.port, "up")
        _ip("-n", host.namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")

    def command(self, host: str, *argv: str) -> list[str]:
        """`argv` run on `host` (`ip netns exec` execs it: the process keeps the pid)."""
        return ["ip", "netns", "exec", self.hosts[host].namespace, *argv]

    def cut(self, host: str) -> None:
        _ip("link", "set", self.hosts[host].port, "down")

    def heal(self, host: str) -> None:
        _ip("link", "set", self.hosts[host].port, "up")

    def remove(self) -> None:
        """Delete every namespace and link this network may have made, by name."""
        names = [f"{self.prefix}probe", *(host.namespace for host in self.hosts.values())]
        for namespace in names:
            _ip("netns", "delete", namespace, check=False)
        for link in [*(host.port for host in self.hosts.values()), self.bridge]:
            _ip("link", "delete", link, check=False)


def _ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
