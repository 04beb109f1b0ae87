"""Read throughput of ``fiduciary serve --workers 2`` against ``--workers 1`` (issue 16,
target 7), the same load generator against each.

    python bench/api_workers.py [--records 2000] [--concurrency 8] [--seconds 10]
                                [--database-url URL]

Loads N persons through the Importer, creates an API key, and starts two servers on one
data directory (and database), one with one worker and one with two, on free 127.0.0.1
ports. After an untimed warm-up of each, C client threads (one keep-alive ``httpx.Client``
each, so the kernel spreads the connections over the workers) GET random records
(``purpose=customer_service``: decryption, policy, a committed audit event) in phases
1 2 2 1 of ``--seconds / 2`` each. Both servers run throughout, so whichever holds the
background lease sequences every phase's audit events; the servers' CPU (every process of
both, from /proc) is reported per request. The client shares the 2 cores with the servers,
so 2 workers cannot reach twice 1 worker's rate here: the client and the second worker
compete for the same core. The last stdout line is one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from _common import (
    COLLECTION,
    as_rows,
    common_args,
    describe_url,
    emit,
    fresh_database_url,
    generate_persons,
    import_encrypted,
    log,
    machine,
    record_ids,
    temp_root,
    wait_for_quiet,
)
from api_reads import (
    HOST,
    PATHS,
    VAULT,
    cpu_seconds,
    fiduciary_cmd,
    free_port,
    run_phase,
    stop_all,
    summarise,
    wait_healthy,
)

from fiduciary.config import Settings
from fiduciary.runtime import open_runtime


def server_pids(parent: int) -> list[int]:
    """The server process and its uvicorn workers (children started by multiprocessing)."""
    pids = [parent]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def servers_cpu(parents: list[int]) -> float:
    total = 0.0
    for parent in parents:
        for pid in server_pids(parent):
            try:
                total += cpu_seconds(pid)
            except OSError:  # a resource tracker that came and went
                continue
    return total


def main() -> None:
    p = common_args(__doc__.splitlines()[0], default_records=2_000)
    p.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="timed seconds per server, in two phases (default 10)")
    p.add_argument("--warmup-seconds", type=float, default=2.0)
    args = p.parse_args()
    n, conc = args.records, args.concurrency
    log(f"generating {n:,} persons")
    rows = as_rows(generate_persons(n, args.seed))
    with temp_root() as root, fresh_database_url(args.database_url, "workers") as url:
        data_dir = root / "server"
        rt = open_runtime(Settings(data_dir=data_dir, database_url=url), create=True)
        try:
            import_encrypted(rt.vault, rows)
            ids = record_ids(rt.vault, COLLECTION)
        finally:
            rt.close()
        env = {**os.environ, "FIDUCIARY_LOG_LEVEL": "warning"}
        env.pop("FIDUCIARY_DATA_DIR", None)
        env.pop("FIDUCIARY_WORKERS", None)
        if url:
            env["FIDUCIARY_DATABASE_URL"] = url
        else:
            env.pop("FIDUCIARY_DATABASE_URL", None)
        cmd = fiduciary_cmd()
        created = subprocess.run([*cmd, "apikeys", "create", "--data-dir", str(data_dir),
                                  "--json"], env=env, capture_output=True, text=True,
                                 check=True)
        token = json.loads(created.stdout.strip().splitlines()[-1])["api_key"]
        servers: dict[int, subprocess.Popen[bytes]] = {}
        bases: dict[int, str] = {}
        server_log = root / "server.log"
        try:
            with server_log.open("wb") as out:
                for workers in (1, 2):
                    port = free_port()
                    bases[workers] = f"http://{HOST}:{port}"
                    servers[workers] = subprocess.Popen(
                        [*cmd, "serve", "--data-dir", str(data_dir), "--host", HOST,
                         "--port", str(port), "--workers", str(workers)],
                        env=env, stdout=out, stderr=subprocess.STDOUT)
            for workers, proc in servers.items():
                wait_healthy(bases[workers], proc)
            parents = [proc.pid for proc in servers.values()]
            for workers in (1, 2):
                run_phase(bases[workers], token, VAULT, ids, conc, args.warmup_seconds,
                          servers[workers].pid, seed=args.seed)
            waited = wait_for_quiet(args.quiet_wait)
            phases: dict[int, list[Any]] = {1: [], 2: []}
            for i, workers in enumerate((1, 2, 2, 1)):
                cpu0 = servers_cpu(parents)
                ph = run_phase(bases[workers], token, VAULT, ids, conc, args.seconds / 2,
                               servers[workers].pid, seed=args.seed + 1 + i)
                # Every server process counts: the workers, and the lease holder's sequencer.
                ph.server_cpu_s = servers_cpu(parents) - cpu0
                ph.foreign_cpu_s = round(max(ph.foreign_cpu_s - ph.server_cpu_s, 0.0), 2)
                phases[workers].append(ph)
                log(f"{workers} worker(s): {ph.ok / ph.seconds:,.0f} req/s ({ph.ok} ok, "
                    f"{ph.errors} errors)")
        except BaseException:
            log("server log tail:\n" + server_log.read_text(errors="replace")[-3000:])
            raise
        finally:
            stop_all(list(servers.values()), grace=30)
    one, two = summarise(phases[1]), summarise(phases[2])
    emit({
        "benchmark": "api_workers",
        "records": n,
        "concurrency": conc,
        "endpoint": PATHS[VAULT],
        "database": describe_url(args.database_url),
        "workers_1_rps": one["rps"],
        "workers_2_rps": two["rps"],
        "ratio": round(two["rps"] / one["rps"], 3) if one["rps"] else None,
        "errors": one["errors"] + two["errors"],
        "workers_1": one,
        "workers_2": two,
        "quiet_wait_s": waited,
        **machine(),
    })


if __name__ == "__main__":
    main()
