"""API read throughput: the vault's record GET (decrypting) against a plaintext GET of the same
rows on the real server, and against a bare FastAPI route reading the same row, in subprocesses.

    python bench/api_reads.py --records 10000 --concurrency 4 [--seconds 10] [--database-url URL]

Loads N persons through the Importer and the same rows as plaintext (``bench_plain_persons``),
creates an API key with ``fiduciary apikeys create``, starts ``fiduciary serve`` on a free
127.0.0.1 port with ``FIDUCIARY_BENCH_ENDPOINTS=true``, waits for ``/healthz``, and then runs C
client threads (one ``httpx.Client`` each, keep-alive) doing authenticated GETs of random record
ids. The baseline a team would build instead is ``bench/_bare_app.py``: a bare FastAPI sync route
reading the same plaintext row from the same database through SQLAlchemy (no authentication,
policy or audit), served by uvicorn with the settings ``fiduciary serve`` uses, in its own
process; the same process serves the issue's ceiling, a bare Starlette route doing one SELECT
on a driver connection. The four endpoints run in phases A B C D D C B A (each ``--seconds / 2``
long; the mirror order cancels a linear drift such as a warming page cache), after a short
untimed warm-up of each. Issue 16's target: the vault GET's server CPU per request <= 2x the
bare route's.
The client runs on the same 2-core machine as the server and competes with it for CPU; the
JSON therefore also reports the server's CPU time per request (from /proc), which does not
depend on how fast the client is. The last stdout line is one JSON object.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import (
    COLLECTION,
    CpuWatch,
    as_rows,
    common_args,
    describe_url,
    emit,
    fresh_database_url,
    generate_persons,
    import_claims,
    import_encrypted,
    insert_plaintext,
    log,
    machine,
    progress_logger,
    record_ids,
    temp_root,
    wait_for_quiet,
)
from _staff import ROLE_PURPOSE, create_staff, login

from fiduciary.config import Settings
from fiduciary.runtime import open_runtime

HOST = "127.0.0.1"
VAULT = "vault"
PLAIN = "plaintext"
BARE = "bare_fastapi"
#: The issue's ceiling: a bare Starlette route, one SELECT (served by the bare app's process).
CEILING = "starlette_ceiling"
PATHS = {VAULT: f"/v1/collections/{COLLECTION}/records/{{id}}?purpose=customer_service",
         PLAIN: f"/v1/_bench/plain/{COLLECTION}/records/{{id}}",
         BARE: f"/bare/bench_plain_{COLLECTION}/records/{{id}}",
         CEILING: f"/ceiling/bench_plain_{COLLECTION}/records/{{id}}"}
#: Server CPU per audited vault GET against the bare route's (issue 16).
TARGET_CPU_RATIO = 2.0


@dataclass
class Phase:
    endpoint: str
    seconds: float = 0.0
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    foreign_cpu_s: float = 0.0


def fiduciary_cmd() -> list[str]:
    script = Path(sys.executable).with_name("fiduciary")
    if script.exists():
        return [str(script)]
    found = shutil.which("fiduciary")
    if found:
        return [found]
    return [sys.executable, "-c", "from fiduciary.cli.main import app; app()"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before /healthz")
        try:
            if httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {timeout:.0f} s")


def run_phase(base: str, token: str, endpoint: str, ids: list[str], concurrency: int,
              seconds: float, server_pid: int, seed: int) -> Phase:
    phase = Phase(endpoint)
    lock = threading.Lock()
    template = PATHS[endpoint]
    start_gate = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        ok = errors = 0
        kinds: dict[str, int] = {}
        lat: list[int] = []
        clock = time.perf_counter_ns
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                          timeout=30.0) as http:
            start_gate.wait()
            while time.perf_counter() < deadline[0]:
                url = template.format(id=rng.choice(ids))
                t0 = clock()
                try:
                    r = http.get(url)
                    r.read()
                    good = r.status_code == 200
                    kind = str(r.status_code)
                except httpx.HTTPError as exc:
                    good, kind = False, type(exc).__name__
                lat.append(clock() - t0)
                if good:
                    ok += 1
                else:
                    errors += 1
                    kinds[kind] = kinds.get(kind, 0) + 1
        with lock:
            phase.ok += ok
            phase.errors += errors
            for k, v in kinds.items():
                phase.error_kinds[k] = phase.error_kinds.get(k, 0) + v
            phase.latencies_ns += lat

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    server0, client0, watch = cpu_seconds(server_pid), time.process_time(), CpuWatch()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start_gate.wait()
    for t in threads:
        t.join(timeout=seconds + 60)
    phase.seconds = time.perf_counter() - t0
    phase.server_cpu_s = cpu_seconds(server_pid) - server0
    phase.client_cpu_s = time.process_time() - client0
    phase.foreign_cpu_s = watch.foreign_s(also_ours=phase.server_cpu_s)
    return phase


def stop_all(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """Terminates the servers, killing any still running after ``grace`` seconds."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def summarise(phases: list[Phase]) -> dict[str, Any]:
    ok = sum(p.ok for p in phases)
    secs = sum(p.seconds for p in phases)
    lat = sorted(ns for p in phases for ns in p.latencies_ns)
    done = ok + sum(p.errors for p in phases)

    def pct(q: float) -> float:
        return round(lat[max(0, min(len(lat) - 1, int(q / 100 * len(lat))))] / 1e6, 2) if lat \
            else 0.0

    return {
        "rps": round(ok / secs, 1) if secs else 0.0,
        "requests": done,
        "errors": sum(p.errors for p in phases),
        "p50_ms": pct(50), "p99_ms": pct(99),
        "mean_ms": round(statistics.fmean(lat) / 1e6, 2) if lat else 0.0,
        "server_cpu_ms_per_req": round(1000 * sum(p.server_cpu_s for p in phases) / done, 3)
        if done else 0.0,
        "client_cpu_ms_per_req": round(1000 * sum(p.client_cpu_s for p in phases) / done, 3)
        if done else 0.0,
        "server_cpu_util": round(sum(p.server_cpu_s for p in phases) / secs, 2) if secs else 0.0,
        "phase_rps": [round(p.ok / p.seconds, 1) for p in phases],
        "other_processes_cpu_s": round(sum(p.foreign_cpu_s for p in phases), 2),
    }


def main() -> None:
    p = common_args(__doc__.splitlines()[0], default_records=10_000)
    p.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="timed seconds per endpoint, split into two alternating phases")
    p.add_argument("--warmup-seconds", type=float, default=2.0,
                   help="untimed load on each endpoint before timing (default 2)")
    p.add_argument("--as-role", default=None,
                   help="read as a logged-in staff user of this role (enrolled with its "
                        "one-time code, password + TOTP session), e.g. claims_adjuster, who "
                        "then has one claim assigned per person; default: a service API key")
    p.add_argument("--server-log-level", default="warning",
                   help="server log level; 'info' adds an access-log line per request")
    args = p.parse_args()
    n, conc = args.records, args.concurrency

    log(f"generating {n:,} persons")
    rows = as_rows(generate_persons(n, args.seed))
    with temp_root() as root, fresh_database_url(args.database_url, "api") as url:
        data_dir = root / "server"
        rt = open_runtime(Settings(data_dir=data_dir, database_url=url), create=True)
        try:
            report = import_encrypted(rt.vault, rows,
                                      progress=progress_logger(n, "imported (vault)"))
            plain_ids = insert_plaintext(rt.vault, rows,
                                         progress=progress_logger(n, "inserted (plaintext)"))
            vault_ids = record_ids(rt.vault, COLLECTION)
            db_url = rt.db.engine.url.render_as_string(hide_password=False)
            staff = create_staff(rt, args.as_role) if args.as_role else None
            if staff is not None and args.as_role == "claims_adjuster":
                # An adjuster reaches a customer only through a claim assigned to them: every
                # person gets one (vault side only), so each read decides the relationship.
                import_claims(rt.vault, report.created_subject_ids, staff.username,
                              progress=progress_logger(n, "imported claims (vault)"))
        finally:
            rt.close()
        if args.as_role:
            PATHS[VAULT] = PATHS[VAULT].replace("purpose=customer_service",
                                                f"purpose={ROLE_PURPOSE[args.as_role]}")
        assert len(vault_ids) == len(plain_ids) == n, (len(vault_ids), len(plain_ids))
        ids = {VAULT: vault_ids, PLAIN: plain_ids, BARE: plain_ids, CEILING: plain_ids}

        env = {**os.environ, "FIDUCIARY_BENCH_ENDPOINTS": "true",
               "FIDUCIARY_LOG_LEVEL": args.server_log_level}
        env.pop("FIDUCIARY_DATA_DIR", None)
        if url:
            env["FIDUCIARY_DATABASE_URL"] = url
        else:
            env.pop("FIDUCIARY_DATABASE_URL", None)
        cmd = fiduciary_cmd()
        created = subprocess.run([*cmd, "apikeys", "create", "--data-dir", str(data_dir),
                                  "--json"], env=env, capture_output=True, text=True)
        if created.returncode != 0:
            raise SystemExit(f"fiduciary apikeys create failed ({created.returncode}):\n"
                             f"{created.stdout}{created.stderr}")
        token = json.loads(created.stdout.strip().splitlines()[-1])["api_key"]

        port, bare_port = free_port(), free_port()
        base = f"http://{HOST}:{port}"
        bases = {VAULT: base, PLAIN: base, BARE: f"http://{HOST}:{bare_port}",
                 CEILING: f"http://{HOST}:{bare_port}"}
        server_log = root / "server.log"
        with server_log.open("wb") as out:
            proc = subprocess.Popen(
                [*cmd, "serve", "--data-dir", str(data_dir), "--host", HOST, "--port",
                 str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
            bare = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("_bare_app.py")), db_url,
                 str(bare_port)], env=env, stdout=out, stderr=subprocess.STDOUT)
        pids = {VAULT: proc.pid, PLAIN: proc.pid, BARE: bare.pid, CEILING: bare.pid}
        try:
            wait_healthy(base, proc)
            wait_healthy(bases[BARE], bare)
            if staff is not None:
                token = login(base, staff)  # both endpoints are read with this session
            log(f"server pid {proc.pid} on {base}, bare pid {bare.pid}; warming up "
                f"{args.warmup_seconds:g} s each")
            for endpoint in (VAULT, PLAIN, BARE, CEILING):
                run_phase(bases[endpoint], token, endpoint, ids[endpoint], conc,
                          args.warmup_seconds, pids[endpoint], seed=args.seed)
            waited = wait_for_quiet(args.quiet_wait)
            half = args.seconds / 2
            phases: dict[str, list[Phase]] = {VAULT: [], PLAIN: [], BARE: [], CEILING: []}
            for i, endpoint in enumerate((VAULT, PLAIN, BARE, CEILING, CEILING, BARE, PLAIN,
                                          VAULT)):
                ph = run_phase(bases[endpoint], token, endpoint, ids[endpoint], conc, half,
                               pids[endpoint], seed=args.seed + 1 + i)
                phases[endpoint].append(ph)
                log(f"{endpoint}: {ph.ok / ph.seconds:,.0f} req/s ({ph.ok} ok, "
                    f"{ph.errors} errors, server cpu {ph.server_cpu_s / ph.seconds:.0%})")
                for who in (proc, bare):
                    if who.poll() is not None:
                        raise RuntimeError(f"server exited with code {who.returncode}")
        except BaseException:
            log("server log tail:\n" + server_log.read_text(errors="replace")[-3000:])
            raise
        finally:
            stop_all([proc, bare])

    vault, plain, bare_, ceiling = (summarise(phases[e]) for e in (VAULT, PLAIN, BARE, CEILING))
    kinds: dict[str, int] = {}
    for ph in phases[VAULT] + phases[PLAIN] + phases[BARE] + phases[CEILING]:
        for k, v in ph.error_kinds.items():
            kinds[k] = kinds.get(k, 0) + v
    emit({
        "benchmark": "api_reads",
        "records": n,
        "concurrency": conc,
        "vault_rps": vault["rps"],
        "plaintext_rps": plain["rps"],
        "ratio": round(vault["rps"] / plain["rps"], 3) if plain["rps"] else None,
        "bare_fastapi_rps": bare_["rps"],
        "errors": vault["errors"] + plain["errors"] + bare_["errors"] + ceiling["errors"],
        "error_kinds": kinds,
        "server_cpu_ratio": round(plain["server_cpu_ms_per_req"]
                                  / vault["server_cpu_ms_per_req"], 3)
        if vault["server_cpu_ms_per_req"] else None,
        # Issue 16: the vault GET's server CPU per request over the bare FastAPI route's.
        "vault_to_bare_server_cpu": round(vault["server_cpu_ms_per_req"]
                                          / bare_["server_cpu_ms_per_req"], 3)
        if bare_["server_cpu_ms_per_req"] else None,
        "target_vault_to_bare_server_cpu": TARGET_CPU_RATIO,
        "met": bool(bare_["server_cpu_ms_per_req"]) and vault["server_cpu_ms_per_req"]
        <= TARGET_CPU_RATIO * bare_["server_cpu_ms_per_req"],
        "vault": vault,
        "plaintext": plain,
        "bare_fastapi": bare_,
        "starlette_ceiling": ceiling,
        "vault_to_ceiling_server_cpu": round(vault["server_cpu_ms_per_req"]
                                             / ceiling["server_cpu_ms_per_req"], 3)
        if ceiling["server_cpu_ms_per_req"] else None,
        "seconds_per_endpoint": args.seconds,
        "waited_for_quiet_s": waited,
        "phase_order": "warm-up vault, plaintext, bare, ceiling; then vault, plaintext, bare, "
                       "ceiling, ceiling, bare, plaintext, vault",
        "server_log_level": args.server_log_level,
        "principal": f"staff session ({args.as_role})" if args.as_role else "service API key",
        "relationship": "one claim per person, assigned to the bench user (vault side)"
        if args.as_role == "claims_adjuster" else None,
        "database": describe_url(args.database_url),
        **machine(),
    })


if __name__ == "__main__":
    main()
