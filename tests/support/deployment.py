"""The multi-process set-up of the README, for tests and benches: two app processes on one PostgreSQL
database with a shared secret key, behind Debian's nginx configured by deploy/nginx/alignlab.conf.template."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from tests.support.browser_harness import ROOT, AppServer
from tests.support.network import free_port
from tests.support.pg_temp import TemporaryPostgres

TEMPLATE = ROOT / "deploy" / "nginx" / "alignlab.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SHARED_KEY = "shared-test-key-" + "0" * 48
MAIN_CONF = """
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
$user
events { worker_connections 2048; }
http {
    log_format upstreams '$$request_method $$uri $$status $$upstream_addr';
    access_log $dir/access.log upstreams;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $dir/alignlab.conf;
}
"""


class NginxUnavailable(RuntimeError):
    pass


def render_site_config(listen_port: int, backend_ports: list[int]) -> str:
    """The repository's nginx template with the listen port and the app processes filled in."""
    servers = " ".join(f"server 127.0.0.1:{port} max_fails=1 fail_timeout=3s;" for port in backend_ports)
    values = {"LISTEN": f"127.0.0.1:{listen_port}", "PAGE_SERVERS": servers, "API_SERVERS": servers}
    text = TEMPLATE.read_text()
    for name, value in values.items():  # like `envsubst '${LISTEN} ...'`: nginx's own $variables stay
        text = text.replace("${" + name + "}", value)
    return text


@dataclass
class Nginx:
    """Debian's nginx in the foreground on loopback, logging which upstream served each request."""

    backend_ports: list[int]
    port: int = field(default_factory=free_port)
    root: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        if not Path(NGINX).exists():
            raise NginxUnavailable("nginx not found; install Debian's nginx (the test command does this)")
        self.root = Path(tempfile.mkdtemp(prefix="alignlab-nginx-"))
        self.root.chmod(0o755)
        (self.root / "alignlab.conf").write_text(render_site_config(self.port, self.backend_ports))
        user = "user root;" if os.geteuid() == 0 else ""
        (self.root / "nginx.conf").write_text(Template(MAIN_CONF).substitute(dir=self.root, user=user))
        command = [NGINX, "-p", str(self.root), "-c", str(self.root / "nginx.conf")]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"nginx refused the configuration:\n{check.stderr}")
        self.process = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for(f"{self.url}/_stcore/health", what="nginx in front of the app")
        return self

    def upstreams_used(self, path_prefix: str) -> dict[str, int]:
        """How many requests under `path_prefix` each upstream address answered (from the access log)."""
        counts: dict[str, int] = {}
        for line in (self.root / "access.log").read_text().splitlines():
            _, uri, _, upstream = line.split(" ", 3)
            if uri.startswith(path_prefix):
                for address in upstream.split(", "):
                    counts[address] = counts.get(address, 0) + 1
        return counts

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


def _wait_for(url: str, *, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} not answering at {url} within {timeout} s")


def migrate(database_url: str, home: Path) -> None:
    """`alignlab db upgrade` against the given database, as an operator would run it once."""
    env = dict(os.environ, DATABASE_URL=database_url, ALIGNLAB_HOME=str(home), PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], cwd=ROOT, env=env, check=True)


@dataclass
class TwoProcessDeployment:
    """Two app processes (shared key, one PostgreSQL database, one data directory) behind nginx."""

    home: Path
    postgres: TemporaryPostgres
    apps: list[AppServer] = field(default_factory=list)
    nginx: Nginx | None = None

    def start(self) -> TwoProcessDeployment:
        env = {"DATABASE_URL": self.postgres.url, "ALIGNLAB_SECRET_KEY": SHARED_KEY}
        self.apps = [AppServer(self.home, extra_env=dict(env)).start() for _ in range(2)]
        self.nginx = Nginx([app.port for app in self.apps]).start()
        return self

    @property
    def url(self) -> str:
        return self.nginx.url

    def stop(self) -> None:
        if self.nginx:
            self.nginx.stop()
        for app in self.apps:
            app.stop()
