"""Where the tests find Postgres and Redis, and the private servers started when none answers.

`find_postgres` / `find_redis` try, in order: the server named in the environment
(TASKFORGE_TEST_POSTGRES_DSN / TASKFORGE_TEST_REDIS_URL), the one on its default local port
(127.0.0.1:5432 as `postgres`, 127.0.0.1:6379), a private throwaway server started from this
machine's own binaries, then a container when a Docker engine answers. With none of them
they raise ServicesUnavailable with one line that says what to install.

A private server is a Postgres cluster (initdb into a fresh temporary directory owned by an
unprivileged user when running as root, since Postgres refuses to run as root; started with
`pg_ctl` on a free 127.0.0.1 port) or a `redis-server` (free port, no persistence; optionally
a replica, or TLS only), or a Redis Sentinel. The fault suite starts its own, which it may
kill, restart and pause. `TlsFiles` makes a throwaway CA and a server certificate for them.
Nothing here touches any other server; `remove()` stops the processes by pid and deletes the
directories.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from tests.support import free_port

SERVICE_TIMEOUT = 60.0
"""Longest wait for a server to start or stop."""


class ServicesUnavailable(Exception):
    """The Postgres server binaries or redis-server are not installed here."""


def postgres_bindir() -> Path:
    """Where initdb, pg_ctl and postgres live: PATH, then `pg_config --bindir`, then the
    Debian layout (/usr/lib/postgresql/<version>/bin, newest first)."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += debian
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise ServicesUnavailable(
        "the Postgres server binaries (initdb, pg_ctl, postgres) are not installed"
    )


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise ServicesUnavailable("redis-server is not installed")
    return found


def check_available() -> None:
    """Raise ServicesUnavailable naming what is missing to start private servers."""
    postgres_bindir()
    redis_server_binary()
    _cluster_owner()


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA (`ca`, PEM) and a server certificate it signed (`cert`, `key`) for
    `localhost` and 127.0.0.1, made with the `openssl` command."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> TlsFiles:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ServicesUnavailable("the openssl command is not installed")
        files = cls(
            ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key"
        )
        ca_key = directory / "ca.key"
        request = directory / "server.csr"
        extensions = directory / "server.ext"
        extensions.write_text(
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid, issuer\n"
        )
        ca_request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        ca_request += ["-keyout", str(ca_key), "-out", str(files.ca), "-subj", "/CN=TaskForge CA"]
        ca_request += ["-addext", "basicConstraints=critical,CA:TRUE"]
        ca_request += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        server_request = ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files.key)]
        server_request += ["-out", str(request), "-subj", "/CN=localhost"]
        signing = ["x509", "-req", "-in", str(request), "-CA", str(files.ca), "-CAkey", str(ca_key)]
        signing += ["-CAcreateserial", "-days", "2", "-out", str(files.cert)]
        signing += ["-extfile", str(extensions)]
        for command in (ca_request, server_request, signing):
            subprocess.run(
                [openssl, *command], capture_output=True, timeout=60, check=True, cwd=directory
            )
        return files


def _cluster_owner() -> str | None:
    """The unprivileged user that owns a private cluster when this process is root (Postgres
    refuses to run as root): `postgres` where the packages created it, else `nobody`.
    None when this process is not root: the tools then run as this user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser") is None:
            raise ServicesUnavailable("running as root, but `runuser` (util-linux) is missing")
        return name
    raise ServicesUnavailable("running as root, but there is no unprivileged user to run initdb as")


def _shared_tempdir() -> str:
    """A temporary directory other users can reach (the cluster's owner must enter it): the
    usual one unless TMPDIR points somewhere private, then /tmp."""
    usual = Path(tempfile.gettempdir()).resolve()
    reachable = all(os.stat(path).st_mode & 0o001 for path in [usual, *usual.parents])
    return str(usual) if reachable or not Path("/tmp").is_dir() else "/tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class PrivatePostgres:
    """One Postgres cluster in a temporary directory. `dsn(db)` connects directly (no proxy)."""

    root: Path
    port: int
    bindir: Path
    run_as: str | None
    """The user that owns the cluster when this process is root; None runs tools as is."""
    settings: dict[str, str] = field(default_factory=dict)
    """postgresql.conf lines beyond the defaults below."""
    passwords: bool = False
    """TCP logins other than `postgres` must give their role's password (scram-sha-256)."""
    tls: TlsFiles | None = None
    """Serve TLS (`ssl = on`) with this certificate, and refuse TCP logins without it."""
    networks: tuple[str, ...] = ()
    """More interfaces to serve, each `address/prefix` (as 10.0.0.1/24): the server listens
    on the address too, and lets in the network's clients as it lets in 127.0.0.1."""
    log: Path = field(init=False)
    data: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    @classmethod
    def create(
        cls,
        settings: dict[str, str] | None = None,
        *,
        passwords: bool = False,
        tls: TlsFiles | None = None,
        networks: tuple[str, ...] = (),
    ) -> PrivatePostgres:
        """Initialise and start a cluster; `settings` add postgresql.conf lines, `passwords`
        makes every role but `postgres` log in over TCP with its password, `tls` turns on
        TLS with that certificate, `networks` serve more interfaces."""
        bindir = postgres_bindir()
        run_as = _cluster_owner()
        root = Path(tempfile.mkdtemp(prefix="taskforge-pg-", dir=_shared_tempdir()))
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            os.chown(root, user.pw_uid, user.pw_gid)
        server = cls(
            root=root,
            port=free_port(),
            bindir=bindir,
            run_as=run_as,
            settings=settings or {},
            passwords=passwords,
            tls=tls,
            networks=networks,
        )
        try:
            server._initdb()
            server.start()
        except BaseException:
            server.remove()
            raise
        return server

    def dsn(self, database: str = "postgres", port: int | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    def _tool(self, tool: str, *args: str, timeout: float = SERVICE_TIMEOUT) -> str:
        command = [str(self.bindir / tool), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                f"\n{self.tail()}"
            )
        return done.stdout

    def _initdb(self) -> None:
        self._tool(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        interfaces = [ipaddress.ip_interface(network) for network in self.networks]
        listen = ",".join(["127.0.0.1", *(str(interface.ip) for interface in interfaces)])
        settings = {
            "listen_addresses": f"'{listen}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "300",
            "shared_buffers": "128MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "log_min_error_statement": "panic",
            **self._tls_settings(),
            **self.settings,
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# a private test server\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        # With TLS, a TCP login without it is refused (`hostssl` lines only).
        host = "hostssl" if self.tls else "host"
        if self.passwords:
            (self.data / "pg_hba.conf").write_text(
                "local all all trust\n"
                f"{host} all postgres 127.0.0.1/32 trust\n"
                f"{host} all all 127.0.0.1/32 scram-sha-256\n"
            )
        elif self.tls:
            (self.data / "pg_hba.conf").write_text(
                f"local all all trust\n{host} all all 127.0.0.1/32 trust\n"
            )
        with (self.data / "pg_hba.conf").open("a") as hba:
            for interface in interfaces:
                trust = "scram-sha-256" if self.passwords else "trust"
                hba.write(f"{host} all all {interface.network} {trust}\n")

    def _tls_settings(self) -> dict[str, str]:
        """Copies the certificate and key into the cluster: Postgres refuses a key file that
        is not its own user's with mode 0600."""
        if self.tls is None:
            return {}
        cert, key = self.root / "server.pem", self.root / "server.key"
        shutil.copyfile(self.tls.cert, cert)
        shutil.copyfile(self.tls.key, key)
        key.chmod(0o600)
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            for path in (cert, key):
                os.chown(path, user.pw_uid, user.pw_gid)
        return {"ssl": "on", "ssl_cert_file": f"'{cert}'", "ssl_key_file": f"'{key}'"}

    def start(self) -> None:
        self._tool("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._tool("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """`pg_ctl restart -m <mode>`: with `immediate`, a crash and crash recovery."""
        self._tool(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-m",
            mode,
            "-w",
            "-t",
            "60",
            "restart",
        )

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return int(first) if first.strip().isdigit() else None

    def running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _pid_alive(pid)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def remove(self) -> None:
        """Stop the server (immediate; by pid if pg_ctl cannot) and delete its directory."""
        pid = self.postmaster_pid()
        if pid is not None and _pid_alive(pid):
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError, OSError):
                self.stop("immediate")
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class PrivateRedis:
    """One redis-server without persistence: a restart comes back empty."""

    root: Path
    port: int
    binary: str
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    password: str = ""
    """When set, every client must AUTH with it (`--requirepass`)."""
    replica_of: int | None = None
    """The port of a master on 127.0.0.1 to replicate (`--replicaof`)."""
    tls: TlsFiles | None = None
    """Serve TLS only (`--tls-port`, no plain port) with this certificate."""
    also_bind: tuple[str, ...] = ()
    """Addresses to listen on besides 127.0.0.1."""

    @classmethod
    def create(
        cls,
        *,
        password: str = "",
        replica_of: int | None = None,
        tls: TlsFiles | None = None,
        also_bind: tuple[str, ...] = (),
    ) -> PrivateRedis:
        binary = redis_server_binary()  # before the folder: a missing binary leaves none
        server = cls(
            root=Path(tempfile.mkdtemp(prefix="taskforge-redis-")),
            port=free_port(),
            binary=binary,
            password=password,
            replica_of=replica_of,
            tls=tls,
            also_bind=also_bind,
        )
        try:
            server.start()
        except BaseException:
            server.remove()
            raise
        return server

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def _arguments(self) -> list[str]:
        arguments = [
            "--bind",
            "127.0.0.1",
            *self.also_bind,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--protected-mode",
            "no",
            "--maxclients",
            "1000",
            *(["--requirepass", self.password] if self.password else []),
            *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []),
        ]
        if self.tls is None:
            return ["--port", str(self.port), *arguments]
        return [
            *("--port", "0", "--tls-port", str(self.port)),
            *("--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)),
            *("--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"),
            *arguments,
        ]

    def start(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            raise RuntimeError("redis-server is already running")
        self.starts += 1
        log = (self.root / f"redis-{self.starts}.log").open("wb")
        self.popen = subprocess.Popen(
            [self.binary, *self._arguments()],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        log.close()
        _wait_answering(self.popen, self.port, "redis-server", self.tls)

    def _answers(self) -> bool:
        return _redis_answers(self.port, self.tls)

    def wait_exit(self, timeout: float = SERVICE_TIMEOUT) -> None:
        if self.popen is not None:
            self.popen.wait(timeout)

    def tail(self, lines: int = 20) -> str:
        log = self.root / f"redis-{self.starts}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def remove(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(SERVICE_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


def _redis_answers(port: int, tls: TlsFiles | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
            sock = raw
            if tls is not None:
                context = ssl.create_default_context(cafile=str(tls.ca))
                sock = context.wrap_socket(raw, server_hostname="localhost")
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            # With a password, an unauthenticated PING is refused: the server is up.
            return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
    except OSError:
        return False


def _wait_answering(
    popen: subprocess.Popen[bytes], port: int, what: str, tls: TlsFiles | None = None
) -> None:
    deadline = time.monotonic() + SERVICE_TIMEOUT
    while not _redis_answers(port, tls):
        if popen.poll() is not None:
            raise RuntimeError(f"{what} exited with {popen.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer PING")
        time.sleep(0.02)


@dataclass
class PrivateSentinel:
    """One Redis Sentinel (`redis-server --sentinel`) on a free port, watching the master on
    127.0.0.1:`master_port` under the name `master`. Its configuration file is writable (a
    Sentinel records what it learns there). It counts the master down after
    `down_after_ms` without an answer and fails over when `quorum` Sentinels agree."""

    root: Path
    port: int
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(
        cls,
        *,
        master: str,
        master_port: int,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> PrivateSentinel:
        binary = redis_server_binary()
        sentinel = cls(root=Path(tempfile.mkdtemp(prefix="taskforge-sentinel-")), port=free_port())
        config = sentinel.root / "sentinel.conf"
        config.write_text(
            f"port {sentinel.port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f"dir {sentinel.root}\n"
            f"sentinel monitor {master} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {master} {down_after_ms}\n"
            f"sentinel failover-timeout {master} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {master} 1\n"
        )
        try:
            with (sentinel.root / "sentinel.log").open("wb") as log:
                sentinel.popen = subprocess.Popen(
                    [binary, str(config), "--sentinel"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=sentinel.root,
                )
            _wait_answering(sentinel.popen, sentinel.port, "redis-server --sentinel")
        except BaseException:
            sentinel.remove()
            raise
        return sentinel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tail(self, lines: int = 20) -> str:
        log = self.root / "sentinel.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def remove(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(SERVICE_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


PGBOUNCER = "/usr/sbin/pgbouncer"


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (PGBOUNCER if Path(PGBOUNCER).is_file() else None)
    if found is None:
        raise ServicesUnavailable("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    return found


@dataclass
class PrivatePgBouncer:
    """A PgBouncer in transaction pooling mode on a free 127.0.0.1 port, in front of the
    Postgres at `server` (host, port): every database name is passed through. It refuses to
    run as root, so it runs as the cluster owner then (see `_cluster_owner`). Clients log in
    as any role listed in `users` (role -> password; empty: no password checked, and
    PgBouncer logs in to Postgres without one)."""

    root: Path
    port: int
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, server: tuple[str, int], users: dict[str, str]) -> PrivatePgBouncer:
        binary = pgbouncer_binary()
        run_as = _cluster_owner()
        root = Path(tempfile.mkdtemp(prefix="taskforge-pgbouncer-", dir=_shared_tempdir()))
        bouncer = cls(root=root, port=free_port())
        needs_password = any(users.values())
        (root / "userlist.txt").write_text(
            "".join(f'"{user}" "{password}"\n' for user, password in users.items())
        )
        (root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server[0]} port={server[1]}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {bouncer.port}\n"
            "unix_socket_dir =\n"
            f"auth_type = {'scram-sha-256' if needs_password else 'trust'}\n"
            f"auth_file = {root / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 1000\n"
            "default_pool_size = 20\n"
            f"pidfile = {root / 'pgbouncer.pid'}\n"
            f"logfile = {root / 'pgbouncer.log'}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            for path in (root, *root.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            (root / "userlist.txt").chmod(0o600)
        command = [binary, str(root / "pgbouncer.ini")]
        if run_as is not None:
            command = ["runuser", "-u", run_as, "--", *command]
        try:
            bouncer.popen = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root
            )
            bouncer._wait_listening()
        except BaseException:
            bouncer.remove()
            raise
        return bouncer

    def dsn(self, database: str, user: str = "postgres", password: str = "") -> str:
        auth = f"{user}:{quote(password, safe='')}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def route(self, dsn: str) -> str:
        """`dsn` (its role, password and database) by way of this PgBouncer."""
        parts = urlsplit(dsn)
        return self.dsn(parts.path.lstrip("/"), parts.username or "postgres", parts.password or "")

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + SERVICE_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            assert self.popen is not None
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, lines: int = 20) -> str:
        log = self.root / "pgbouncer.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.root / "pgbouncer.pid").read_text().strip())
        return None

    def remove(self) -> None:
        """Stop PgBouncer by its pid (then the `runuser` wrapper) and delete its directory."""
        pid = self.pid()
        if pid is not None and _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # SIGINT: close at once, not after clients leave
            _wait_gone(pid)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.popen is not None:
            if self.popen.poll() is None:
                self.popen.kill()
            self.popen.wait(SERVICE_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass(frozen=True)
class Found:
    """A server the tests use, and how it was found (printed in the run's summary)."""

    url: str
    where: str


POSTGRES_INSTALL_HINT = (
    "install the PostgreSQL server (Debian: apt-get install postgresql) "
    "or set TASKFORGE_TEST_POSTGRES_DSN"
)
REDIS_INSTALL_HINT = (
    "install Redis (Debian: apt-get install redis-server) or set TASKFORGE_TEST_REDIS_URL"
)
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
PROBE_TIMEOUT = 3.0
"""How long a default-port server may take to answer before the next option is tried."""

# A private server holds only this run's throwaway data: durability buys nothing here.
_TEST_POSTGRES_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def find_postgres(stack: contextlib.ExitStack) -> Found:
    """A Postgres DSN whose role may create databases; private servers are stopped by `stack`."""
    named = os.environ.get("TASKFORGE_TEST_POSTGRES_DSN")
    if named:
        problem = _postgres_problem(named)
        if problem is not None:
            raise ServicesUnavailable(f"TASKFORGE_TEST_POSTGRES_DSN does not work: {problem}")
        return Found(named, "TASKFORGE_TEST_POSTGRES_DSN")
    for dsn in _local_postgres_dsns():
        if _postgres_problem(dsn) is None:
            return Found(dsn, f"the local server ({urlsplit(dsn).username}@127.0.0.1:5432)")
    try:
        server = PrivatePostgres.create(_TEST_POSTGRES_SETTINGS)
    except ServicesUnavailable as missing:
        if _docker_answers():
            return _postgres_container(stack)
        raise ServicesUnavailable(
            f"no Postgres answered on 127.0.0.1:5432 and {missing}: {POSTGRES_INSTALL_HINT}"
        ) from None
    stack.callback(server.remove)
    return Found(server.dsn(), f"a private server started for this run (port {server.port})")


def find_redis(stack: contextlib.ExitStack) -> Found:
    """A Redis URL; a private server is stopped by `stack`."""
    named = os.environ.get("TASKFORGE_TEST_REDIS_URL")
    if named:
        problem = _redis_problem(named)
        if problem is not None:
            raise ServicesUnavailable(f"TASKFORGE_TEST_REDIS_URL does not work: {problem}")
        return Found(named, "TASKFORGE_TEST_REDIS_URL")
    if _redis_problem(LOCAL_REDIS_URL) is None:
        return Found(LOCAL_REDIS_URL, "the local server (127.0.0.1:6379)")
    try:
        server = PrivateRedis.create()
    except ServicesUnavailable as missing:
        if _docker_answers():
            return _redis_container(stack)
        raise ServicesUnavailable(
            f"no Redis answered on 127.0.0.1:6379 and {missing}: {REDIS_INSTALL_HINT}"
        ) from None
    stack.callback(server.remove)
    return Found(server.url, f"a private server started for this run (port {server.port})")


def _local_postgres_dsns() -> list[str]:
    users = ["postgres"]
    with contextlib.suppress(KeyError):
        me = pwd.getpwuid(os.geteuid()).pw_name
        if me not in users:
            users.append(me)
    return [f"postgresql://{user}@127.0.0.1:5432/postgres" for user in users]


def _postgres_problem(dsn: str) -> str | None:
    """None when `dsn` answers and its role may create databases, else why not."""
    import asyncio

    import asyncpg

    async def probe() -> bool:
        conn = await asyncpg.connect(dsn, timeout=PROBE_TIMEOUT)
        try:
            may_create = await conn.fetchval(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            )
            return bool(may_create)
        finally:
            await conn.close()

    try:
        if not asyncio.run(asyncio.wait_for(probe(), PROBE_TIMEOUT * 2)):
            return "its role may not create databases"
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _redis_problem(url: str) -> str | None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _postgres_container(stack: contextlib.ExitStack) -> Found:
    from testcontainers.postgres import PostgresContainer

    container = stack.enter_context(PostgresContainer("postgres:15-alpine"))
    return Found(str(container.get_connection_url(driver=None)), "a Docker container")


def _redis_container(stack: contextlib.ExitStack) -> Found:
    from testcontainers.redis import RedisContainer

    container = stack.enter_context(RedisContainer("redis:7-alpine"))
    host = container.get_container_host_ip()
    return Found(f"redis://{host}:{container.get_exposed_port(6379)}/0", "a Docker container")
