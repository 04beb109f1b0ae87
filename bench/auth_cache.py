"""Authentication per repeat request, with the cache and without (issue 16, target 2).

    python bench/auth_cache.py [--seconds 2] [--database-url URL]

Opens a fresh store, creates a service API key and a trained, enrolled staff user with a
password + TOTP session, then times ``ApiKeyService.authenticate`` and
``UserService.authenticate`` — what every API request does first — in one process, phases
cached, uncached, uncached, cached for each (the mirror order cancels a linear drift). The
uncached side is the same service with the cache switched off (every call reads the key, or
the session, user, training and break-glass rows, and builds the principal). Beside them it
times what a cached call must still do on every request, reading the generation counter
(``GenerationProbe``), and the same read through SQLAlchemy's pool and a transaction (why
the probe has its own connection). Target: <= 50 µs per cached authentication. The last
stdout line is one JSON object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyotp
import sqlalchemy as sa
from _common import (
    CpuWatch,
    describe_url,
    emit,
    fresh_runtime,
    log,
    machine,
    temp_root,
    wait_for_quiet,
)
from _staff import PASSWORD, create_staff

from fiduciary.access.authcache import NO_CACHE, AuthCache
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import auth_generation

TARGET_US = 50.0


def per_call_us(call: Callable[[], Any], seconds: float) -> tuple[float, int]:
    """Mean µs per call over ``seconds`` (checked every 64 calls), and the calls made."""
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(64):
            call()
        n += 64
        if time.perf_counter() >= deadline:
            break
    return (time.perf_counter() - t0) / n * 1e6, n


def session_token(rt: Runtime) -> str:
    account = create_staff(rt, "claims_adjuster")
    secret = rt.users.enrol(account.username, account.enrolment_code, PASSWORD).totp_secret
    return rt.users.login(account.username, PASSWORD,
                          totp=pyotp.TOTP(secret).at(rt.clock.now())).token


def timed_sides(rt: Runtime, cache: AuthCache, name: str, call: Callable[[], Any],
                seconds: float) -> dict[str, Any]:
    """Cached / uncached / uncached / cached phases of one authentication."""
    runs: dict[str, list[float]] = {"cached": [], "uncached": []}
    for side in ("cached", "uncached", "uncached", "cached"):
        rt.users.auth_cache = rt.api_keys.auth_cache = cache if side == "cached" else NO_CACHE
        call()  # a first call fills the cache
        us, n = per_call_us(call, seconds / 2)
        runs[side].append(us)
        log(f"{name} {side}: {us:.1f} µs per authentication ({n:,} calls)")
    rt.users.auth_cache = rt.api_keys.auth_cache = cache
    cached = sum(runs["cached"]) / 2
    uncached = sum(runs["uncached"]) / 2
    return {f"{name}_cached_us": round(cached, 2), f"{name}_uncached_us": round(uncached, 2),
            f"{name}_speedup": round(uncached / cached, 1),
            f"{name}_runs_us": {k: [round(x, 2) for x in v] for k, v in runs.items()}}


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0,
                   help="timed seconds per side and authentication (two phases each)")
    p.add_argument("--database-url", default=None,
                   help="default a fresh SQLite store; postgresql+psycopg://… a fresh schema")
    p.add_argument("--quiet-wait", type=float, default=300.0,
                   help="wait at most this long for a quiet machine before timing")
    args = p.parse_args()
    with temp_root() as root, fresh_runtime(args.database_url, root, "auth") as rt:
        _, key = rt.api_keys.create("bench")
        session = session_token(rt)
        cache = rt.api_keys.auth_cache
        assert cache is rt.users.auth_cache and cache.probe is not None
        waited = wait_for_quiet(args.quiet_wait)
        watch = CpuWatch()
        result: dict[str, Any] = {}
        result |= timed_sides(rt, cache, "api_key", lambda: rt.api_keys.authenticate(key),
                              args.seconds)
        result |= timed_sides(rt, cache, "session", lambda: rt.users.authenticate(session),
                              args.seconds)
        probe = cache.probe
        probe_us, _ = per_call_us(probe.read, args.seconds / 2)

        def through_sqlalchemy() -> None:
            with rt.db.read() as conn:
                conn.execute(sa.select(auth_generation.c.generation)
                             .where(auth_generation.c.id == 1)).scalar()

        pooled_us, _ = per_call_us(through_sqlalchemy, args.seconds / 2)
        log(f"generation read: {probe_us:.1f} µs (probe), {pooled_us:.1f} µs (SQLAlchemy)")
        worst = max(result["api_key_cached_us"], result["session_cached_us"])
        emit({
            "benchmark": "auth_cache",
            "database": describe_url(args.database_url),
            **{k: v for k, v in result.items() if not k.endswith("_runs_us")},
            "generation_probe_us": round(probe_us, 2),
            "generation_read_sqlalchemy_us": round(pooled_us, 2),
            "target_us": TARGET_US,
            "met": worst <= TARGET_US,
            "runs_us": {k: v for k, v in result.items() if k.endswith("_runs_us")},
            "quiet_wait_s": waited,
            "other_processes_cpu_s": watch.foreign_s(),
            **machine(),
        })


if __name__ == "__main__":
    main()
