"""A server-side profile of a PostgreSQL benchmark side (issue 16, target 6), and a throwaway
server that can take one.

    python bench/_pgprofile.py [--durability durable|fast] -- \\
        python bench/import_throughput.py --records 10000 --repeats 1 --pg-statements

starts a PostgreSQL 15 (``tests/pgserver.py``'s ``PostgresServer``, as the ``postgres`` user
when run as root) with ``pg_stat_statements`` preloaded (``track=all``, so foreign-key checks
show as their own statements; ``track_planning=on``), runs the command with ``--database-url``
appended, and stops the server. ``durable`` (default) is the stock configuration
(``fsync``, ``synchronous_commit`` and ``full_page_writes`` on); ``fast`` is the test suite's
(all three off). The benchmark reports which one it met (:func:`server_settings`).

:class:`ServerProfile` is what the benchmark calls around a side: reset the statistics before,
read them after: the top statements by server execution time, the side's sums (execution and
planning time of top-level statements, WAL bytes, calls), committed transactions
(``pg_stat_database``), WAL written and synced (``pg_stat_wal``) and the server's CPU time.
Not a benchmark itself; imported as ``_pgprofile``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.pgserver import PG_BIN, PostgresServer

#: How a server that can be profiled is started (the durability settings come on top).
PROFILING = ("-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all "
             "-c pg_stat_statements.track_planning=on -c pg_stat_statements.max=10000 "
             "-c track_io_timing=on -c track_wal_io_timing=on")
DURABILITY = {
    "durable": "-c fsync=on -c synchronous_commit=on -c full_page_writes=on",
    "fast": "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
}
HOW_TO_START = (
    "start one with: python bench/_pgprofile.py [--durability durable|fast] -- python "
    "bench/import_throughput.py ... --pg-statements (it appends --database-url), or start "
    "PostgreSQL with -c shared_preload_libraries=pg_stat_statements "
    "-c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on")
#: Statements shown per side.
TOP = 8
#: Our own statements, left out of a side's figures.
_OURS = ("pg_stat_statements", "pg_stat_database", "pg_stat_wal", "pg_current_wal_lsn",
         "pg_backend_pid", "pg_wal_lsn_diff")


class ProfiledServer(PostgresServer):
    """The test suite's throwaway server with ``pg_stat_statements`` loaded."""

    def __init__(self, durability: str) -> None:
        super().__init__()
        self.durability = durability

    def start(self) -> ProfiledServer:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user,
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                f"-c max_connections=200 {DURABILITY[self.durability]} {PROFILING}")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts,
                  "-l", str(self.root / "server.log"), "-w", "start")
        return self


def _conninfo(url: str | sa.URL) -> str:
    """A libpq URL from a SQLAlchemy one (``options`` such as a search_path dropped)."""
    u = sa.make_url(url)
    return u.set(drivername="postgresql", query={}).render_as_string(hide_password=False)


def _cpu_s(pid: int) -> tuple[int, float, float]:
    """(parent pid, own CPU s, CPU s of its ended and reaped children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick,
            (int(fields[13]) + int(fields[14])) / tick)


def _server_cpu_s(postmaster: int) -> float:
    """CPU of the whole server so far: the postmaster, every live child (backends, WAL writer,
    checkpointer, autovacuum) and the children it has reaped (closed connections)."""
    _, own, reaped = _cpu_s(postmaster)
    total = own + reaped
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent, child, _ = _cpu_s(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        if parent == postmaster:
            total += child
    return total


def server_settings(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    names = ("server_version", "fsync", "synchronous_commit", "full_page_writes",
             "shared_buffers", "shared_preload_libraries", "pg_stat_statements.track",
             "pg_stat_statements.track_planning")
    got = {n: conn.execute("SELECT current_setting(%s, true)", (n,)).fetchone()[0]  # type: ignore[index]
           for n in names}
    durable = got["fsync"] == "on" and got["synchronous_commit"] == "on"
    got["durability"] = ("durable (fsync, synchronous_commit on)" if durable
                         else "fast (the test suite's: fsync and/or synchronous_commit off)")
    return got


class ServerProfile:
    """``pg_stat_statements`` and friends around one benchmark side, on a server the
    benchmark can reach on this machine (for the server's CPU)."""

    def __init__(self, url: str) -> None:
        self.url = _conninfo(url)
        with self._connect() as conn:
            loaded = conn.execute("SELECT current_setting('shared_preload_libraries')"
                                  ).fetchone()[0]  # type: ignore[index]
            if "pg_stat_statements" not in loaded:
                raise SystemExit(
                    f"--pg-statements: the server at {describe(url)} was not started with "
                    f"shared_preload_libraries=pg_stat_statements (it has {loaded!r}); "
                    + HOW_TO_START)
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.settings = server_settings(conn)
            if self.settings["pg_stat_statements.track_planning"] != "on":
                print("warning: pg_stat_statements.track_planning is off: planning time "
                      "reads 0; " + HOW_TO_START, file=sys.stderr)
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        try:
            self.postmaster: int | None = _cpu_s(backend)[0]
        except OSError:
            self.postmaster = None  # not on this machine: no server CPU figure
        self._start: dict[str, Any] = {}

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)

    def _counters(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        row = conn.execute(
            "SELECT d.xact_commit, d.xact_rollback, pg_current_wal_lsn(), w.wal_records, "
            "w.wal_fpi, w.wal_bytes, w.wal_write, w.wal_sync, w.wal_sync_time "
            "FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()"
        ).fetchone()
        assert row is not None
        keys = ("xact_commit", "xact_rollback", "lsn", "wal_records", "wal_fpi",
                "wal_bytes_stat", "wal_write", "wal_sync", "wal_sync_time_ms")
        out = dict(zip(keys, row, strict=True))
        out["server_cpu_s"] = (_server_cpu_s(self.postmaster) if self.postmaster is not None
                               else None)
        return out

    def reset(self) -> None:
        """Before a side: statements forgotten, counters noted."""
        with self._connect() as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
            self._start = self._counters(conn)
        self._t0 = time.perf_counter()

    def read(self, wall_s: float, client_cpu_s: float) -> dict[str, Any]:
        """After a side whose connections are closed (a backend hands its transaction counts
        to the shared statistics when it ends; an idle one may hold them up to 10 s)."""
        time.sleep(0.5)
        with self._connect() as conn:
            end = self._counters(conn)
            wal = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)",
                               (end["lsn"], self._start["lsn"])).fetchone()[0]  # type: ignore[index]
            rows = conn.execute(
                "SELECT s.query, s.toplevel, s.calls, s.rows, s.total_exec_time, "
                "s.total_plan_time, s.mean_exec_time, s.shared_blks_hit, s.shared_blks_read, "
                "s.shared_blks_dirtied, s.shared_blks_written, s.wal_bytes, s.wal_fpi "
                "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                "WHERE d.datname = current_database()").fetchall()
        statements = [r for r in rows if not any(t in r[0] for t in _OURS)]
        top = [r for r in statements if r[1]]
        nested = [r for r in statements if not r[1]]
        delta = {k: end[k] - self._start[k] for k in end
                 if k not in ("lsn",) and end[k] is not None and self._start[k] is not None}
        exec_ms = sum(r[4] for r in top)
        return {
            # Top-level statements only: a nested one's time is inside its caller's.
            "server_exec_ms": round(exec_ms, 1),
            "server_plan_ms": round(sum(r[5] for r in top), 1),
            "nested_exec_ms": round(sum(r[4] for r in nested), 1),
            "statement_wal_bytes": int(sum(r[11] for r in statements)),
            "calls": int(sum(r[2] for r in top)),
            "nested_calls": int(sum(r[2] for r in nested)),
            "commit_statements": int(sum(r[2] for r in top if r[0].strip().upper() == "COMMIT")),
            "xact_commit": delta.get("xact_commit"),
            "xact_rollback": delta.get("xact_rollback"),
            "wal_bytes": int(wal),
            "wal_records": delta.get("wal_records"),
            "wal_full_page_images": delta.get("wal_fpi"),
            "wal_syncs": delta.get("wal_sync"),
            "wal_sync_ms": (round(delta["wal_sync_time_ms"], 1)
                            if "wal_sync_time_ms" in delta else None),
            "server_cpu_s": (round(delta["server_cpu_s"], 2) if "server_cpu_s" in delta
                             else None),
            "wall_s": round(wall_s, 3),
            "client_cpu_s": round(client_cpu_s, 3),
            "server_exec_share_of_wall": round(exec_ms / 1000 / wall_s, 3),
            "top": [_statement(r) for r in
                    sorted(statements, key=lambda r: r[4], reverse=True)[:TOP]],
        }


def _statement(r: tuple[Any, ...]) -> dict[str, Any]:
    text = " ".join(r[0].split())
    return {"query": text if len(text) <= 120 else text[:117] + "...",
            "toplevel": bool(r[1]), "calls": int(r[2]), "rows": int(r[3]),
            "total_ms": round(r[4], 1), "plan_ms": round(r[5], 1),
            "mean_us": round(r[6] * 1000, 1), "shared_blks_hit": int(r[7]),
            "shared_blks_read": int(r[8]), "shared_blks_dirtied": int(r[9]),
            "shared_blks_written": int(r[10]), "wal_bytes": int(r[11]),
            "wal_fpi": int(r[12])}


def describe(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def format_profile(label: str, p: dict[str, Any]) -> str:
    """The log's view of one side's profile."""
    lines = [
        f"{label}: server exec {p['server_exec_ms']:,.0f} ms (+ planning "
        f"{p['server_plan_ms']:,.0f} ms; nested FK checks etc. {p['nested_exec_ms']:,.0f} ms "
        f"inside), server CPU {p['server_cpu_s']} s, client CPU {p['client_cpu_s']} s, wall "
        f"{p['wall_s']} s; {p['calls']:,} calls, {p['xact_commit']} commits "
        f"({p['commit_statements']} COMMIT statements), WAL {p['wal_bytes'] / 1e6:,.1f} MB "
        f"({p['wal_full_page_images']} full pages), {p['wal_syncs']} WAL syncs "
        f"({p['wal_sync_ms']} ms)",
        f"  {'total ms':>9} {'calls':>7} {'rows':>7} {'mean us':>8} {'hit':>7} {'read':>5} "
        f"{'dirtied':>7} {'written':>7} {'WAL kB':>8}  query"]
    for s in p["top"]:
        lines.append(
            f"  {s['total_ms']:>9,.1f} {s['calls']:>7,} {s['rows']:>7,} {s['mean_us']:>8,.1f} "
            f"{s['shared_blks_hit']:>7,} {s['shared_blks_read']:>5,} "
            f"{s['shared_blks_dirtied']:>7,} {s['shared_blks_written']:>7,} "
            f"{s['wal_bytes'] / 1000:>8,.0f}  {'' if s['toplevel'] else '(nested) '}"
            f"{s['query']}")
    return "\n".join(lines)


def timing_calls(obj: Any, name: str, spent: list[float],
                 context: bool = False) -> None:
    """Wrap ``obj.name`` (on the instance) so the seconds spent inside it add to
    ``spent[0]``; ``context=True`` for a context-manager factory (time from enter to exit)."""
    inner: Callable[..., Any] = getattr(obj, name)
    if context:
        @contextmanager
        def timed_context(*a: Any, **kw: Any) -> Iterator[Any]:
            t = time.perf_counter()
            try:
                with inner(*a, **kw) as value:
                    yield value
            finally:
                spent[0] += time.perf_counter() - t
        wrapped: Callable[..., Any | AbstractContextManager[Any]] = timed_context
    else:
        def timed_call(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                spent[0] += time.perf_counter() - t
        wrapped = timed_call
    setattr(obj, name, wrapped)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--durability", choices=sorted(DURABILITY), default="durable",
                   help="durable: fsync, synchronous_commit, full_page_writes on (stock); "
                        "fast: all off, as the test suite's server")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- then the benchmark command; --database-url URL is appended")
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the benchmark command after --")
    server = ProfiledServer(args.durability).start()
    print(f"[_pgprofile] PostgreSQL ({args.durability}) on port {server.port}",
          file=sys.stderr, flush=True)
    try:
        code = subprocess.run([*command, "--database-url", server.url()]).returncode
    finally:
        server.stop()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
