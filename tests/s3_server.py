"""A real S3-protocol server on loopback for the tests: moto's standalone server.

``moto_server`` is started as its own process on a free port; s3fs and boto3 talk
to it over HTTP as they would to a cloud store (signed requests, multipart
uploads, listings), so nothing in the engine knows it is a test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Credentials moto accepts (it checks the signature's form, not the secret).
KEY, SECRET, REGION = "maggy-test-key", "maggy-test-secret", "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    buckets: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """Environment variables under which boto3 and s3fs find this server."""
        return {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs keyword arguments for this server."""
        return {
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION},
        }

    def bucket(self) -> str:
        """A new, empty bucket."""
        import boto3

        name = f"maggy-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name=REGION,
        ).create_bucket(Bucket=name)
        self.buckets.append(name)
        return name


@contextlib.contextmanager
def s3_server(log_dir: Path | None = None) -> Iterator[S3Server]:
    """Start ``moto_server`` on a free loopback port; stop it at the end."""
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which(
        "moto_server"
    )
    if exe is None:
        raise RuntimeError("moto_server not found: install the dev extra (moto[server])")
    port = _free_port()
    log = open(log_dir / "moto.log", "wb") if log_dir else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start on port {port}")
            time.sleep(0.1)
        yield S3Server(endpoint, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log is not subprocess.DEVNULL:
            log.close()
