"""A throw-away PostgreSQL server for the tests: ``initdb`` into a temporary folder, started
on a free loopback port with its socket in that folder, one database, stopped and removed at
the end. Run as root, the server runs as the ``postgres`` OS user (initdb refuses root)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here (the message says why)."""


def find(name: str) -> str | None:
    """``name`` on PATH, else in the newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0)
    for d in reversed(dirs):
        if os.access(Path(d) / name, os.X_OK):
            return str(Path(d) / name)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A PostgreSQL data folder in a temporary folder, run by the ``postgres`` OS user when
    this process is root (else by this user): ``initdb``, ``start``, ``stop``, ``run`` (a
    command as that user, e.g. ``psql``), ``remove``. Raises Unavailable."""

    def __init__(self):
        self.bin = {n: find(n) for n in ("initdb", "pg_ctl", "psql", "createdb")}
        if not self.bin["initdb"] or not self.bin["pg_ctl"]:
            raise Unavailable("PostgreSQL binaries initdb/pg_ctl not found on PATH or in "
                              "/usr/lib/postgresql/*/bin (apt-get install postgresql)")
        self.as_user, self.user = [], pwd.getpwuid(os.geteuid()).pw_name
        self.tmp = Path(tempfile.mkdtemp(prefix="accel-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.tmp)
                raise Unavailable("running as root and there is no 'postgres' OS user to run "
                                  "the server as") from None
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            runuser = shutil.which("runuser")
            self.as_user = [runuser, "-u", "postgres", "--"] if runuser else \
                ["su", "postgres", "-c"]
            self.user = "postgres"
        self.data, self.port, self.started = self.tmp / "data", free_port(), False
        # what psql and createdb need to find this server (its socket is in self.tmp)
        self.env = {"PGHOST": str(self.tmp), "PGPORT": str(self.port)}

    def run(self, *cmd, env=None, timeout=120):
        """``cmd`` as the server's OS user, with ``env`` added to its environment."""
        argv = ["env", *(f"{k}={v}" for k, v in (env or {}).items()), *cmd]
        if self.as_user and self.as_user[0] == "su":
            argv = [*self.as_user, " ".join(f"'{a}'" for a in argv)]
        elif self.as_user:
            argv = [*self.as_user, *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def initdb(self, *args):
        r = self.run(self.bin["initdb"], "-D", str(self.data), "-U", self.user, "-E", "UTF8",
                     "--no-sync", *args)
        if r.returncode:
            raise Unavailable(f"initdb failed: {r.stderr.strip()[-500:]}")

    def start(self, *settings):
        opts = " ".join([f"-p {self.port} -k {self.tmp} -c fsync=off -c max_connections=50",
                         *settings])
        r = self.run(self.bin["pg_ctl"], "-D", str(self.data), "-o", opts, "-l",
                     str(self.tmp / "log"), "-w", "start")
        if r.returncode:
            log = (self.tmp / "log").read_text()[-800:] if (self.tmp / "log").exists() else ""
            raise Unavailable(f"pg_ctl start failed: {r.stderr.strip()[-300:]} {log}")
        self.started = True

    def stop(self, mode="immediate"):
        if self.started:
            self.run(self.bin["pg_ctl"], "-D", str(self.data), "-m", mode, "-w", "stop")
            self.started = False

    def remove(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def url(self, dbname, user=None, password=None):
        who = user or self.user
        if password:
            who += f":{password}"
        return f"postgresql+psycopg://{who}@127.0.0.1:{self.port}/{dbname}"


def create_database(url: str, dbname: str) -> str:
    """A new, empty database on the server of ``url`` (a postgresql+psycopg URL); its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return u.set(database=dbname).render_as_string(hide_password=False)


@contextlib.contextmanager
def server(dbname: str = "accel_test"):
    """Yields ``postgresql+psycopg://user@127.0.0.1:PORT/dbname``; raises Unavailable."""
    cluster = Cluster()
    try:
        cluster.initdb("-A", "trust")
        cluster.start("-c listen_addresses=127.0.0.1")
        url = cluster.url("postgres")
        yield create_database(url, dbname)
    finally:
        cluster.remove()
