"""Real servers on loopback for integration tests: a throwaway PostgreSQL cluster and a moto S3
server. Each starts on a free port, is bounded in time, and is stopped and removed afterwards.

On CI (`CI` set) a missing server is a failure, not a skip: `.ci/run` installs what is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(what: str) -> None:
    """Skip on a developer machine; fail on CI, which must not pass by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI installs it: .ci/run)")
    pytest.skip(what)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@dataclass(frozen=True)
class Postgres:
    url: str  # postgresql+psycopg://user:password@127.0.0.1:port/postgres
    password: str
    log: Path


@contextlib.contextmanager
def postgres_server(timeout: int = 60) -> Iterator[Postgres]:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only, with a random
    password (scram-sha-256). initdb refuses to run as root, so root runs it as `postgres`."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        missing("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_root = os.geteuid() == 0
    if as_root and not shutil.which("runuser"):
        missing("running as root without runuser: cannot start PostgreSQL as another user")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="deltalab-pg-"))
    root.chmod(0o755)
    data, log, pwfile = root / "data", root / "server.log", root / "pw"
    password = secrets.token_hex(16)
    pwfile.write_text(password + "\n")
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=timeout)

    try:
        run(initdb, "-D", str(data), "-U", "deltalab", f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync")  # fmt: skip
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
        run(pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", str(timeout),
            "start")  # fmt: skip
        yield Postgres(f"postgresql+psycopg://deltalab:{password}@127.0.0.1:{port}/postgres",
                       password, log)  # fmt: skip
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=timeout)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class S3:
    endpoint: str  # http://127.0.0.1:port
    env: dict[str, str]  # credentials and region for clients of this server


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[S3]:
    """A moto S3 server on loopback (as dvc-s3's own tests use) holding an empty `bucket`."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        missing("moto[server] and boto3 are not installed (the lock's test extra has them)")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws = Path(tempfile.mkdtemp(prefix="deltalab-aws-"))  # no ~/.aws profile leaks in
    for name in ("config", "credentials"):
        (aws / name).write_text("")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
    }
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=bucket)
        yield S3(endpoint, env)
    finally:
        server.stop()
        shutil.rmtree(aws, ignore_errors=True)
