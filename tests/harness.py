"""Helpers shared by the end-to-end scripts: free ports and bounded waits."""
import socket
import time


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline_s=30):
    """True once something accepts connections on 127.0.0.1:port, False
    after `deadline_s` seconds."""
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


S3_KINDS = ("moto", "s3s")
S3_ACCESS_KEY = "ferrytest"
S3_SECRET_KEY = "s3cr3t-value"


def s3_server_argv(kind, host, port, workdir, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY):
    """The command that runs S3-protocol server `kind` on host:port, and the
    name of its log file in `workdir`: moto's (`python -m moto.server`, which
    takes any credentials) or s3s-fs (the `s3s-fs` binary, over the folder
    `workdir/s3s-root`, with these credentials). A missing s3s-fs is an
    error (FileNotFoundError), never a skip."""
    import os
    import shutil
    import sys
    if kind not in S3_KINDS:
        raise ValueError(f"unknown S3 server {kind!r}; one of {S3_KINDS}")
    if kind == "moto":
        return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)], "moto.log"
    exe = shutil.which("s3s-fs") or os.path.expanduser("~/.cargo/bin/s3s-fs")
    if not os.path.exists(exe):
        raise FileNotFoundError("s3s-fs is not installed "
                                "(cargo install s3s-fs@0.14.1 --locked --features binary)")
    root = os.path.join(workdir, "s3s-root")
    os.makedirs(root, exist_ok=True)
    return [exe, "--host", host, "--port", str(port),
            "--access-key", access_key, "--secret-key", secret_key, root], "s3s-fs.log"


class S3Server:
    """An S3-protocol server on a free port of 127.0.0.1, with one bucket,
    started by [`s3_server_argv`]: moto's or s3s-fs. The two behave
    differently (s3s-fs answers a suffix range longer than the object with
    a 500, for one), which is why tests run on both. A missing server is an
    error, never a skip."""

    def __init__(self, kind, workdir, bucket):
        import os
        import subprocess
        self.kind = kind
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        try:
            argv, log_name = s3_server_argv(kind, "127.0.0.1", self.port, workdir)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"FAIL: {e}")
        self._log = open(os.path.join(workdir, log_name), "ab")
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=self._log)
        if not wait_port(self.port):
            self.stop()
            raise SystemExit(f"FAIL: {kind} did not listen on {self.port} within 30 s")
        self.client().create_bucket(Bucket=bucket)

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)

    def uri(self, extra=""):
        """The bucket as Ferry's `s3://` URI, credentials included."""
        return (f"s3://{self.bucket}?region=us-east-1&endpoint={self.endpoint}&pathStyle=true"
                f"&accessKey={S3_ACCESS_KEY}&secretKey={S3_SECRET_KEY}{extra}")

    def stop(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None
