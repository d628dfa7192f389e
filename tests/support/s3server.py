"""A real S3 server for the tests: SeaweedFS's ``weed mini`` (master, volume, filer and S3
gateway in one process; scripts/s3server.sh builds it from its Go module) on loopback, on free
ports, in a temporary directory. moto stays for the tests that inject S3 faults.

``s3_server()`` starts it with its own credentials (``weed`` makes an admin identity from
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, s3api/auth_credentials.go
loadEnvironmentVariableCredentials), waits until a bucket can be created (polling, no sleeps
of fixed length), and stops it. Without the binary the caller skips, saying why.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bench.errors import RunError

from . import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUCKET = "testbed"


def weed_binary() -> str | None:
    """The ``weed`` scripts/s3server.sh built (``$TESTBED_WEED`` overrides), or None."""
    path = os.environ.get("TESTBED_WEED") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "raydask-testbed", "bin", "weed")
    return path if os.access(path, os.X_OK) else None


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    log: str

    def env(self) -> dict[str, str]:
        """The environment a client (and the workers it starts) needs to reach it."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key,
                            config=Config(connect_timeout=2, read_timeout=10,
                                          retries={"max_attempts": 1}))


@contextmanager
def s3_server(binary: str, timeout: float = 60.0) -> Iterator[S3Server]:
    workdir = tempfile.mkdtemp(prefix="tb-weed-")
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc")}
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", BUCKET, "testbedadmin",
                      "testbed-secret-key", os.path.join(workdir, "weed.log"))
    args = [binary, "mini", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64",
            *(f"-{k}={v}" for k, v in ports.items())]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key,
               AWS_SECRET_ACCESS_KEY=server.secret_key)
    with open(server.log, "wb") as log:
        proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_ready(proc, server, timeout)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen[bytes], server: S3Server, timeout: float) -> None:
    """Poll (the engines' ``wait_until``) until the bucket exists and takes a write: the S3
    gateway answers, and the filer and a volume server are up."""
    import botocore.exceptions as bce

    from bench.engines.base import wait_until

    client = server.client()
    last: list[Exception] = []

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}: {_tail(server.log)}")

    def ready() -> bool:
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=server.bucket)
            client.put_object(Bucket=server.bucket, Key="ready", Body=b"1")
            client.delete_object(Bucket=server.bucket, Key="ready")
            return True
        except (bce.BotoCoreError, bce.ClientError) as e:
            last[:] = [e]
            return False

    try:
        wait_until(ready, timeout, "weed's S3 gateway", poll=0.1, check=alive)
    except RunError as e:
        raise RuntimeError(f"{e} ({last[0] if last else 'no answer'}): {_tail(server.log)}"
                           ) from None


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-1500:].decode(errors="replace")
    except OSError:
        return "(no log)"
