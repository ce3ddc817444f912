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


@contextlib.contextmanager
def server(dbname: str = "accel_test"):
    """Yields ``postgresql+psycopg://user@127.0.0.1:PORT/dbname``; raises Unavailable."""
    initdb, pg_ctl = find("initdb"), find("pg_ctl")
    if not initdb or not pg_ctl:
        raise Unavailable("PostgreSQL binaries initdb/pg_ctl not found on PATH or in "
                          "/usr/lib/postgresql/*/bin (apt-get install postgresql)")
    as_user, user = [], pwd.getpwuid(os.geteuid()).pw_name
    tmp = Path(tempfile.mkdtemp(prefix="accel-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(tmp)
            raise Unavailable("running as root and there is no 'postgres' OS user to run the "
                              "server as") from None
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        runuser = shutil.which("runuser")
        as_user = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-c"]
        user = "postgres"

    def run(*cmd):
        argv = list(cmd)
        if as_user and as_user[0] == "su":
            argv = [*as_user, " ".join(f"'{a}'" for a in cmd)]
        elif as_user:
            argv = [*as_user, *cmd]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    data, port = tmp / "data", free_port()
    started = False
    try:
        r = run(initdb, "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8", "--no-sync")
        if r.returncode:
            raise Unavailable(f"initdb failed: {r.stderr.strip()[-500:]}")
        opts = (f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=50")
        r = run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(tmp / "log"), "-w", "start")
        if r.returncode:
            log = (tmp / "log").read_text()[-800:] if (tmp / "log").exists() else ""
            raise Unavailable(f"pg_ctl start failed: {r.stderr.strip()[-300:]} {log}")
        started = True
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user=user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/{dbname}"
    finally:
        if started:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)
