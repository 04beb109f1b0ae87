"""Helpers shared by the benchmark scripts in this directory (not a benchmark itself).

Every script runs as ``python bench/NAME.py``; Python puts ``bench/`` on ``sys.path``, so the
scripts import this module as ``_common``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fiduciary.access import SYSTEM
from fiduciary.api.bench import PLAINTEXT_PREFIX
from fiduciary.config import Settings
from fiduciary.datamap.values import index_form
from fiduciary.demo import DemoGenerator
from fiduciary.errors import FieldProblem
from fiduciary.ids import new_id
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.bulk import Batch, insert_batch
from fiduciary.storage.schema import records
from fiduciary.vault.importer import Importer, ImportReport, ParsedRow
from fiduciary.vault.records import _dumps
from fiduciary.vault.service import VaultService

COLLECTION = "persons"
#: The purpose the persons rows are imported under (as ``fiduciary demo`` does).
IMPORT_PURPOSE = "policy_administration"
BATCH_SIZE = 1000

#: Benchmarks act as the built-in ``system`` principal: service role, every collection and
#: purpose, clear masking, so no masking or denial muddies the figures.
PRINCIPAL = SYSTEM


# The keyring warns (rightly) about a generated master.key beside the database; for throwaway
# benchmark directories that is noise.
logging.getLogger("fiduciary.keyring").setLevel(logging.ERROR)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """The one JSON object a benchmark prints, as the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


def common_args(description: str, default_records: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--records", type=int, default=default_records,
                   help=f"persons to load (default {default_records:,})")
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL; default a fresh SQLite file in a temporary data "
                        "directory. postgresql+psycopg://... uses a fresh schema per database "
                        "(dropped at the end); sqlite:///PATH uses fresh files beside PATH")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic data")
    p.add_argument("--quiet-wait", type=float, default=300.0,
                   help="before timing, wait at most this many seconds for other processes "
                        "to go quiet (default 300; 0 disables)")
    return p


def source_state() -> str:
    """The git commit measured, with ``+dirty`` when src/ has uncommitted changes; or
    ``FIDUCIARY_BENCH_SOURCE`` when set (a run from an exported tree, e.g. ``git archive``)."""
    given = os.environ.get("FIDUCIARY_BENCH_SOURCE")
    if given:
        return given
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "source": source_state(),
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def describe_url(url: str | None) -> str:
    if url is None:
        return "sqlite (temporary data directory)"
    return sa.make_url(url).render_as_string(hide_password=True)


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used since boot (Linux /proc/stat)."""
    try:
        ticks = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    busy = sum(int(t) for i, t in enumerate(ticks[:8]) if i not in (3, 4))
    return busy / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """How much CPU *other* processes took while we measured: with 2 cores, a test run or a
    build next to a benchmark skews it, and this makes that visible in the JSON."""

    def __init__(self) -> None:
        self.busy0 = machine_busy_s()
        self.own0 = time.process_time()

    def foreign_s(self, also_ours: float = 0.0) -> float:
        """Machine CPU minus ours (this process, plus ``also_ours``, e.g. a server's)."""
        busy = machine_busy_s() - self.busy0
        own = time.process_time() - self.own0 + also_ours
        return round(max(busy - own, 0.0), 2)


def wait_for_quiet(max_wait_s: float, window_s: float = 1.0, busy_max: float = 0.15) -> float:
    """Wait (at most ``max_wait_s``) until other processes use under ``busy_max`` of one core
    over a ``window_s`` window; returns the seconds waited. On a 2-core machine a test run
    next to a benchmark halves its figures, so timed phases start only on a quiet machine."""
    start = time.monotonic()
    warned = False
    while max_wait_s > 0:
        watch = CpuWatch()
        time.sleep(window_s)
        if watch.foreign_s() / window_s < busy_max:
            break
        if time.monotonic() - start > max_wait_s:
            log(f"machine still busy after {max_wait_s:.0f} s; measuring anyway")
            break
        if not warned:
            log("other processes are using the CPU; waiting for a quiet machine")
            warned = True
    return round(time.monotonic() - start, 1)


# -- data -------------------------------------------------------------------------------------

def generate_persons(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` realistic, valid persons rows (Faker); slow (~4,000 rows/s), so done up front."""
    gen = DemoGenerator(seed)
    out: list[dict[str, Any]] = []
    step = max(n // 10, 50_000) if n >= 100_000 else n + 1
    for i in range(n):
        out.append(gen.person())
        if (i + 1) % step == 0:
            log(f"generated {i + 1:,}/{n:,} rows")
    return out


def make_row(line: int, values: dict[str, Any]) -> ParsedRow:
    """Importer input: (line number, values, problems found while parsing: none)."""
    return line, values, []


def as_rows(people: Sequence[dict[str, Any]]) -> list[ParsedRow]:
    """Importer input, built before timing. The importer does not change valid rows' dicts."""
    return [make_row(i, p) for i, p in enumerate(people, start=1)]


# -- fresh databases --------------------------------------------------------------------------

@contextmanager
def fresh_runtime(database_url: str | None, root: Path, label: str) -> Iterator[Runtime]:
    """A runtime on an empty database and a new data directory ``root/label``.

    SQLite (default): a new ``fiduciary.db`` in the data directory. PostgreSQL: a new schema
    (``search_path`` set through the URL), dropped afterwards. ``sqlite:///PATH``: a new file
    beside PATH, removed afterwards.
    """
    with fresh_database_url(database_url, label) as url:
        data_dir = root / label
        rt = open_runtime(Settings(data_dir=data_dir, database_url=url), create=True)
        try:
            yield rt
        finally:
            rt.close()


@contextmanager
def fresh_database_url(database_url: str | None, label: str) -> Iterator[str | None]:
    if database_url is None:
        yield None
        return
    url = sa.make_url(database_url)
    tag = f"{label}_{secrets.token_hex(4)}"
    if url.get_backend_name() == "postgresql":
        schema = f"fdy_bench_{tag}"
        admin = sa.create_engine(url)
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False)
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            admin.dispose()
    elif url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        base = Path(url.database)
        path = base.with_name(f"{base.stem}-{tag}.db")
        try:
            yield url.set(database=str(path)).render_as_string(hide_password=False)
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
    else:
        raise SystemExit("unsupported --database-url for a benchmark: "
                         f"{describe_url(database_url)}")


@contextmanager
def temp_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fiduciary-bench-") as tmp:
        yield Path(tmp)


# -- loading ----------------------------------------------------------------------------------

def import_encrypted(vault: VaultService, rows: Iterable[ParsedRow], batch_size: int = BATCH_SIZE,
                     progress: Callable[[int], None] | None = None,
                     pipeline: bool = False) -> ImportReport:
    """The real bulk import: validation, a DEK per subject, every sensitive field sealed,
    every searchable field blind-indexed, policy-checked, audited; one transaction per batch."""
    problems: list[tuple[int, list[FieldProblem]]] = []
    report = Importer(vault, batch_size=batch_size, pipeline=pipeline).run(
        PRINCIPAL, COLLECTION, rows, IMPORT_PURPOSE, lambda line, p: problems.append((line, p)),
        progress)
    if problems:
        line, first = problems[0]
        raise SystemExit(f"{len(problems)} generated rows were rejected; first: line {line}: "
                         f"{[p.as_dict() for p in first]}")
    return report


def import_claims(vault: VaultService, subject_ids: Sequence[str], adjuster: str,
                  batch_size: int = BATCH_SIZE,
                  progress: Callable[[int], None] | None = None) -> ImportReport:
    """One open, unrestricted claim per subject, assigned to ``adjuster``, through the real
    importer (purpose ``claims_handling``): what an adjuster's relationship condition
    (``subject.has(claims where assigned_adjuster == principal.username and restricted !=
    true)``) finds when it reads the subject's persons record."""
    rows = [make_row(i, {
        "subject_id": subject_id, "claim_number": f"CLM-{i:08d}",
        "policy_number": f"POL-{i:08d}", "status": "open", "loss_date": "2025-11-03",
        "reported_at": "2025-11-05T09:30:00Z", "assigned_adjuster": adjuster,
        "restricted": False, "description": "Rear-ended at a junction; bumper and tail light.",
        "amount_claimed": "2400.00"}) for i, subject_id in enumerate(subject_ids, start=1)]
    problems: list[tuple[int, list[FieldProblem]]] = []
    report = Importer(vault, batch_size=batch_size).run(
        PRINCIPAL, "claims", rows, "claims_handling",
        lambda line, p: problems.append((line, p)), progress)
    if problems:
        line, first = problems[0]
        raise SystemExit(f"{len(problems)} claims were rejected; first: line {line}: "
                         f"{[p.as_dict() for p in first]}")
    return report


def insert_plaintext(vault: VaultService, rows: Iterable[ParsedRow], batch_size: int = BATCH_SIZE,
                     progress: Callable[[int], None] | None = None) -> list[str]:
    """The plaintext baseline through the same storage layer (``insert_batch``).

    Same validation and canonical values as the importer, same batch size and one transaction
    per batch; but every value goes into ``clear`` (``sealed`` is ``{}``), the collection is
    ``bench_plain_persons``, there are no subject keys, no policy decision and no audit event,
    and the index rows (same number, same fields) hold the normalised plaintext instead of an
    HMAC. Returns the record ids.
    """
    spec = vault.collection(COLLECTION)
    purpose = vault.check_purpose(spec, IMPORT_PURPOSE)
    name = PLAINTEXT_PREFIX + COLLECTION
    searchable = [f.name for f in spec.searchable_fields]
    # Subject attributes (clear fields copied onto the subject for access conditions): the
    # importer writes them too, and they are not encryption.
    attributes = spec.subject_attributes
    ids: list[str] = []
    pending: list[dict[str, Any]] = []
    done = 0

    def flush() -> None:
        now = vault.clock.now()
        batch = Batch()
        for values in pending:
            subject_id, record_id = new_id(), new_id()
            batch.subjects.append({
                "id": subject_id, "status": "active", "created_at": now,
                "attributes": _dumps({n: values[n] for n in attributes if n in values})})
            batch.records.append({"id": record_id, "subject_id": subject_id, "collection": name,
                                  "clear": _dumps(values), "sealed": "{}",
                                  "created_at": now, "updated_at": now})
            batch.index += [{"record_id": record_id, "field": f, "collection": name,
                             "subject_id": subject_id,
                             "digest": index_form(spec.fields[f], values[f])}
                            for f in searchable if f in values]
            ids.append(record_id)
        with vault.db.write() as conn:
            insert_batch(conn, batch)

    for row in rows:
        values, _ = vault.validate_write(spec, row[1], purpose, partial=False)
        pending.append(values)
        if len(pending) >= batch_size:
            flush()
            done += len(pending)
            pending = []
            if progress:
                progress(done)
    if pending:
        flush()
        done += len(pending)
    if progress:
        progress(done)
    return ids


def progress_logger(total: int, what: str, every: int = 100_000) -> Callable[[int], None]:
    start = time.perf_counter()
    last = [0]

    def report(done: int) -> None:
        if done - last[0] >= every or (done == total and last[0] != total):
            last[0] = done
            rate = done / max(time.perf_counter() - start, 1e-9)
            log(f"{what}: {done:,}/{total:,} ({rate:,.0f} rows/s)")

    return report


def record_ids(vault: VaultService, collection: str) -> list[str]:
    with vault.db.read() as conn:
        return list(conn.execute(sa.select(records.c.id).where(
            records.c.collection == collection)).scalars())
