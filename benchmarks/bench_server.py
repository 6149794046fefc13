"""Load test for `captioner serve`: N concurrent clients against a server on loopback, one JSON line per N.

    python benchmarks/bench_server.py runs/NAME path/to/images --clients 1,4,16 --seconds 10

Starts the server in a subprocess on 127.0.0.1 (never another interface), waits for /api/health,
then for each N drives POST /api/caption with N clients for a bounded time and prints
requests/s, p50/p99 latency of successful requests, errors (503s counted apart too), the mean
micro-batch size the server reported, and the server's peak resident memory during that phase.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from captioner.data.images import list_images

SERVER_CODE = ("import json, sys; from captioner.web.app import serve; "
               "serve(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), **json.loads(sys.argv[3]))")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def resident_mb(pid: int, field: str = "VmRSS") -> float | None:
    """A process's resident memory from /proc (Linux); VmHWM is the peak since it started."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"server exited with code {process.returncode} before it was ready")
            try:
                if (await client.get(f"{url}/api/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"server not ready after {timeout:g} s")


async def drive(url: str, images: list[tuple[str, bytes]], *, clients: int, seconds: float, form: dict[str, str],
                pid: int, request_timeout: float) -> dict:
    """N clients send requests back to back until the time is up; returns the phase's figures."""
    latencies: list[float] = []
    batch_sizes: list[int] = []
    status_counts: dict[str, int] = {}
    peak = [resident_mb(pid) or 0.0]
    stop_at = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient, seed: int) -> None:
        chooser = random.Random(seed)
        while time.monotonic() < stop_at:
            name, data = chooser.choice(images)
            began = time.perf_counter()
            try:
                response = await client.post(f"{url}/api/caption", files={"file": (name, data)}, data=form)
                key = str(response.status_code)
                if response.status_code == 200:
                    latencies.append((time.perf_counter() - began) * 1000)
                    batch_sizes.append(response.json()["batch_size"])
            except httpx.HTTPError as error:
                key = type(error).__name__
            status_counts[key] = status_counts.get(key, 0) + 1

    async def sample_memory() -> None:
        while True:
            peak[0] = max(peak[0], resident_mb(pid) or 0.0)
            await asyncio.sleep(0.1)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=request_timeout, limits=limits) as client:
        sampler = asyncio.create_task(sample_memory())
        began = time.monotonic()
        await asyncio.gather(*(client_loop(client, seed) for seed in range(clients)))
        elapsed = time.monotonic() - began  # includes the requests still in flight at the deadline
        sampler.cancel()
    successes = len(latencies)
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": sum(status_counts.values()),
        "requests_per_s": round(successes / elapsed, 2),
        "p50_ms": round(percentile(latencies, 0.50), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        "errors": sum(count for key, count in status_counts.items() if key != "200"),
        "rejected_503": status_counts.get("503", 0),
        "status_counts": status_counts,
        "mean_batch_size": round(statistics.fmean(batch_sizes), 2) if batch_sizes else None,
        "peak_server_rss_mb": round(peak[0], 1),
    }


async def main_async(args: argparse.Namespace) -> int:
    paths = list_images(args.images)
    if not paths:
        raise SystemExit(f"no images (jpg, png, ...) in {args.images}")
    images = [(path.name, path.read_bytes()) for path in paths[: args.max_images]]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_options = {"max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms, "queue_size": args.queue_size}
    process = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(args.run), str(port), json.dumps(server_options)],
                               stdout=subprocess.DEVNULL)  # its warnings and errors go to our stderr
    form = {"n_best": str(args.n_best)} | ({"beam_size": str(args.beam_size)} if args.beam_size else {})
    try:
        await wait_until_healthy(url, process, args.startup_timeout)
        for clients in args.clients:
            # a short warm-up so the first phase does not pay for lazy initialisation
            await drive(url, images, clients=clients, seconds=min(2.0, args.seconds), form=form, pid=process.pid,
                        request_timeout=args.request_timeout)
            figures = await drive(url, images, clients=clients, seconds=args.seconds, form=form, pid=process.pid,
                                  request_timeout=args.request_timeout)
            high_water = resident_mb(process.pid, "VmHWM")
            figures |= {"server_peak_rss_since_start_mb": round(high_water, 1) if high_water else None, "images": len(images),
                        "beam_size": args.beam_size, "n_best": args.n_best, **server_options}
            print(json.dumps(figures), flush=True)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    return 0


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory to serve")
    parser.add_argument("images", type=Path, help="folder of images to send")
    parser.add_argument("--clients", type=lambda text: [int(part) for part in text.split(",")], default=[1, 4, 16],
                        help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=10, help="duration of each phase (default 10)")
    parser.add_argument("--beam-size", type=int, default=None, help="default: the run's")
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=10)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--max-images", type=int, default=64, help="images loaded into memory and sent at random")
    parser.add_argument("--request-timeout", type=float, default=60, help="client-side limit per request")
    parser.add_argument("--startup-timeout", type=float, default=180)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or any(count < 1 for count in args.clients):
        parser.error("--seconds and every --clients value must be positive")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main_async(parse_arguments())))
