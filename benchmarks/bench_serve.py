"""Load, faults and numbers of the localization service (`vpr serve`) on loopback.

    python benchmarks/bench_serve.py --out benchmarks/serve/serve.json
    python benchmarks/bench_serve.py --map-images 12 --distractors 0 --requests 40 --concurrency 1 4 \\
        --offline-batches 2 --add-images 4 --out /tmp/serve.json                  # smoke settings

Builds a map of the embedded Nordland test places (the summer frames; the winter frames are the queries) with
`Map.build`, and, with --distractors N, a second map of N rows: those descriptors plus synthetic distractors drawn as
the map-scale benchmark draws them. For each map and each --max-batch setting (16: dynamic batching on, 1: off) it
starts `python -m registry.cli serve` in a subprocess on 127.0.0.1 and sends --level-requests one-image
`POST /v1/localize` requests at each concurrency (threads, one keep-alive connection each): requests/s, p50 / p95 /
p99 latency, 4xx, 5xx and connection errors counted apart. On the batching server it then sends --requests more at
concurrency 16 and reads the server's RSS before and after. The offline images/s of the same runtime (`Map.encode`
of 16 and of 1 decoded images, no server running) gives the ">= 80% at concurrency 16" ratio. Faults: kill -9
during `vpr map add`, and kill -9 of the server during a query burst; each time the map is re-opened and the
restarted server must serve the last committed version and answer as `Map.query` does.

Loopback only; every phase is bounded in requests and seconds, and the whole run stops by itself. Writes the JSON,
a Markdown table beside it (.md) and a plot (.png).
"""
from __future__ import annotations

import argparse
import http.client
import importlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from _outputs import save_figure, write_outputs
from tqdm import tqdm

from registry.datasets import load_dataset
from registry.datasets.images import open_rgb

HOST = "127.0.0.1"
READY_S = 300.0
BOUNDARY = "vprbenchboundary7d3f"


# --- the service in a subprocess ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Server:
    """`python -m registry.cli serve MAP` on a free loopback port; its log goes to LOG."""

    def __init__(self, folder: Path, log: Path, args: argparse.Namespace, max_batch: int) -> None:
        self.folder, self.log, self.port = folder, log, free_port()
        self.cmd = [sys.executable, "-m", "registry.cli", "serve", str(folder), "--host", HOST, "--port",
                    str(self.port), "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms),
                    "--queue", str(args.queue), *plugin_args(args)]
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> float:
        """Start it and wait for /readyz; the seconds that took."""
        t0 = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        while time.perf_counter() - t0 < READY_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode} before it was ready; see "
                                   f"{self.log}")
            try:
                if get(self.port, "/readyz")[0] == 200:
                    return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the service was not ready within {READY_S:.0f} s; see {self.log}")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def rss_mb(self) -> float:
        """Resident memory of the server and its child processes, MB (from /proc)."""
        return sum(_rss_kb(pid) for pid in _tree(self.proc.pid)) / 1024.0


# the `vpr` command in a fresh interpreter, after importing the --plugin modules (`vpr map` takes no --plugin)
VPR_AFTER_PLUGINS = ("import importlib, sys; [importlib.import_module(m) for m in sys.argv[1].split(',') if m]; "
                     "from registry.cli import main; sys.exit(main(sys.argv[2:], prog='vpr'))")


def vpr_command(args: argparse.Namespace, *argv: str) -> List[str]:
    if not args.plugin:
        return [sys.executable, "-m", "registry.cli", *argv]
    return [sys.executable, "-c", VPR_AFTER_PLUGINS, ",".join(args.plugin), *argv]


def plugin_args(args: argparse.Namespace) -> List[str]:
    return [arg for module in args.plugin for arg in ("--plugin", module)]


def _tree(pid: int) -> List[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in children:
            pids += _tree(int(child))
    return pids


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def get(port: int, path: str, timeout: float = 10.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def multipart(path: Path) -> bytes:
    """A `POST /v1/localize` body holding one image file in the field `images`."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{path.name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    return head + path.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()


def localize(conn: http.client.HTTPConnection, body: bytes, k: int = 5):
    conn.request("POST", f"/v1/localize?k={k}", body=body,
                 headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    answer = conn.getresponse()
    return answer.status, answer.read()


# --- load ----------------------------------------------------------------------------------------------------------

def send(port: int, bodies: Sequence[bytes], concurrency: int, requests: int, seconds: float,
         desc: str, answered: Optional[tuple] = None) -> Dict:
    """`requests` one-image localize requests over `concurrency` threads (one keep-alive connection each), cut at
    `seconds`; status counts and latencies. `answered` = (n, event): the event is set once n requests have an
    answer."""
    lock, counter = threading.Lock(), iter(range(requests))
    latencies: List[float] = []
    status: Dict[str, int] = {"ok": 0, "4xx": 0, "5xx": 0, "connection": 0}
    deadline = time.perf_counter() + seconds
    bar = tqdm(total=requests, desc=desc, leave=False)

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                code, _ = localize(conn, bodies[i % len(bodies)])
                kind = "ok" if code == 200 else f"{code // 100}xx"
            except (OSError, http.client.HTTPException):
                kind = "connection"
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
            with lock:
                status[kind] = status.get(kind, 0) + 1
                if kind == "ok":
                    latencies.append(time.perf_counter() - t0)
                if answered is not None and sum(status.values()) >= answered[0]:
                    answered[1].set()
                bar.update(1)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    bar.close()
    ms = 1e3 * np.asarray(latencies) if latencies else np.full(1, np.nan)
    return {"concurrency": concurrency, "sent": sum(status.values()), **status, "seconds": wall,
            "requests_per_s": status["ok"] / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
            "cut_by_time": sum(status.values()) < requests}


def offline(folder: Path, queries: Sequence[Path], batches: int) -> Dict:
    """Images/s of `Map.encode` in this process (the map's runtime, no server): batch 16 and batch 1."""
    from registry.maps import Map

    m = Map.open(folder)
    images = [open_rgb(p) for p in queries[:16]]
    images = (images * 16)[:16]
    m.encode(images)  # warm-up
    out = {"runtime": m.info()["runtime"]}
    for size in (16, 1):
        t0 = time.perf_counter()
        for _ in tqdm(range(batches * (16 // size)), desc=f"offline encode, batch {size}", leave=False):
            m.encode(images[:size])
        out[f"images_per_s_batch{size}"] = batches * 16 / (time.perf_counter() - t0)
    return out


def load_levels(args, folder: Path, label: str, bodies: Sequence[bytes], work: Path) -> List[Dict]:
    """Every concurrency against a server per --max-batch setting; the soak (--requests at concurrency 16, RSS
    before and after) on the batching one."""
    rows = []
    for max_batch in args.max_batch:
        server = Server(folder, work / f"serve-{label}-b{max_batch}.log", args, max_batch)
        ready_s = server.start()
        try:
            send(server.port, bodies, 4, min(32, max(4, args.level_requests // 4)), args.level_seconds, "warm-up")
            for c in args.concurrency:
                row = send(server.port, bodies, c, args.level_requests, args.level_seconds,
                           f"{label}, max batch {max_batch}, concurrency {c}")
                rows.append({"map": label, "max_batch": max_batch, "ready_s": ready_s, **row})
                print(json.dumps(rows[-1]))
            if max_batch == max(args.max_batch):
                before = server.rss_mb()
                soak = send(server.port, bodies, args.soak_concurrency, args.requests, args.soak_seconds,
                            f"{label}, {args.requests} requests for RSS")
                after = server.rss_mb()
                rows.append({"map": label, "max_batch": max_batch, "soak": True, "rss_before_mb": before,
                             "rss_after_mb": after, "rss_change_pct": 100.0 * (after - before) / before, **soak})
                print(json.dumps(rows[-1]))
        finally:
            server.stop()
    return rows


# --- faults --------------------------------------------------------------------------------------------------------

def answers_match(port: int, m, queries: Sequence[Path], k: int = 5) -> Dict:
    """The served top-k (rows and distances) of each query against Map.query of the re-opened map."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    worst, same = 0.0, True
    try:
        for path, want in zip(queries, m.query(list(queries), k=k)):
            code, raw = localize(conn, multipart(path), k)
            if code != 200:
                return {"match": False, "status": code, "error": raw.decode(errors="replace")[:200]}
            got = json.loads(raw)["results"][0]["matches"]
            same &= [g["row"] for g in got] == [w.row for w in want]
            worst = max([worst] + [abs(g["distance"] - w.distance) for g, w in zip(got, want)])
    finally:
        conn.close()
    return {"match": bool(same and worst < 1e-4), "max_distance_diff": worst, "queries": len(queries)}


def served_map(port: int) -> Dict:
    code, raw = get(port, "/v1/map")
    info = json.loads(raw) if code == 200 else {}
    return {"version": info.get("version"), "count": info.get("count")}


def _files(folder: Path) -> set:
    return {p for p in folder.rglob("*") if p.is_file()}


def kill_during_add(args, folder: Path, add_dir: Path, work: Path, queries: Sequence[Path]) -> Dict:
    """`vpr map add` on a copy of the map, killed with SIGKILL as soon as it has written its first new file into the
    map's store (the store then runs ahead of the committed manifest); the map re-opened, a server started on it,
    then the add run again to its end."""
    from registry.maps import Map
    from registry.maps.manifest import STORE_DIR

    copy = work / "fault-map"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy)
    before = Map.open(copy)
    frames = sorted(add_dir.iterdir())
    v0, n0, added = before.version, before.count, len(frames)
    seen = _files(copy / STORE_DIR)
    places = work / "fault-add-places.csv"  # the map's place ids are integers: each added frame gets its own
    places.write_text("image,place\n" + "".join(f"{p.name},{place_of(p)}\n" for p in frames))
    cmd = vpr_command(args, "map", "add", str(copy), "--images", str(add_dir), "--places", f"csv:{places}")
    with open(work / "fault-add.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    t0, killed_at = time.perf_counter(), None
    while proc.poll() is None and time.perf_counter() - t0 < args.fault_seconds:
        if _files(copy / STORE_DIR) - seen:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.perf_counter() - t0
            break
        time.sleep(0.005)
    if proc.poll() is None and killed_at is None:  # no file within the bound: killed at the bound
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.perf_counter() - t0
    proc.wait()
    if killed_at is None:  # the add ended by itself before its first store write: nothing was faulted
        raise SystemExit(f"bench_serve: `vpr map add` ended (exit {proc.returncode}) before it wrote to the store, so "
                         f"no kill was measured; its output is in {work / 'fault-add.log'}")
    after = Map.open(copy)
    whole = (after.version, after.count) == (v0, n0) or (after.version > v0 and after.count == n0 + added)
    stage = "before its commit" if after.version == v0 else "after its commit"
    out = {"fault": "kill -9 during vpr map add", "when": f"{killed_at:.1f} s into the add of {added} images, at its "
           f"first store write ({stage})", "added_images": added, "version_before": v0, "count_before": n0,
           "killed_after_s": killed_at, "add_exit": proc.returncode, "version_after": after.version,
           "count_after": after.count, "whole_version": bool(whole)}
    server = Server(copy, work / "serve-fault.log", args, max(args.max_batch))
    out["restart_s"] = server.start()
    try:
        out["served"] = served_map(server.port)
        out["answers"] = answers_match(server.port, after, queries[: args.check_queries])
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=args.fault_seconds)
        final = Map.open(copy)
        out.update(rerun_exit=done.returncode, version_final=final.version, count_final=final.count)
        out["served_after_rerun"] = wait_for_version(server.port, final.version, args.reload_seconds,
                                                     multipart(queries[0]))
    finally:
        server.stop()
    out["ok"] = bool(whole and out["served"] == {"version": after.version, "count": after.count}
                     and out["answers"]["match"] and final.count == n0 + added
                     and out["served_after_rerun"]["version"] == final.version)
    return out


def wait_for_version(port: int, version: int, seconds: float, body: bytes) -> Dict:
    """A query, then /v1/map, repeated until it serves `version` (a running server looks for a newer commit when
    it answers a query) or `seconds` pass."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    while True:
        localize(conn, body)
        served = served_map(port)
        if served["version"] == version or time.perf_counter() - t0 > seconds:
            conn.close()
            return {**served, "after_s": time.perf_counter() - t0}
        time.sleep(0.2)


def kill_during_burst(args, work: Path, bodies: Sequence[bytes], queries: Sequence[Path]) -> Dict:
    """A server on the fault map killed with SIGKILL in the middle of a burst of requests, then restarted: it must
    serve the last committed version and answer as Map.query does."""
    from registry.maps import Map

    copy = work / "fault-map"
    server = Server(copy, work / "serve-fault.log", args, max(args.max_batch))
    server.start()
    result: Dict = {}
    third = threading.Event()
    burst = threading.Thread(target=lambda: result.update(send(
        server.port, bodies, 8, args.burst_requests, args.fault_seconds, "burst, kill -9 a third of the way",
        answered=(max(1, args.burst_requests // 3), third))))
    burst.start()
    third.wait(args.fault_seconds)
    server.kill9()
    burst.join()
    last = Map.open(copy)
    burst_counts = {k: result.get(k) for k in ("sent", "ok", "4xx", "5xx", "connection")}
    out = {"fault": "kill -9 of the server during a query burst", "burst": burst_counts,
           "when": f"after {max(1, args.burst_requests // 3)} of {args.burst_requests} requests (8 clients): "
           f"{burst_counts['ok']} answered, {burst_counts['connection']} connection errors, {burst_counts['5xx']} 5xx",
           "version_committed": last.version}
    out["restart_s"] = server.start()
    try:
        out["served"] = served_map(server.port)
        out["answers"] = answers_match(server.port, last, queries[: args.check_queries])
    finally:
        server.stop()
    out["ok"] = bool(out["served"] == {"version": last.version, "count": last.count} and out["answers"]["match"])
    return out


# --- maps ----------------------------------------------------------------------------------------------------------

def place_of(path: Path) -> int:
    """Nordland's place number from a frame's file name (images-20010.png -> 20010)."""
    return int("".join(ch for ch in path.stem if ch.isdigit()))


def nordland_map(args, work: Path):
    """The map of the embedded Nordland test places' summer frames (the first --map-images of them), built with
    Map.build, or the one --map names; the winter frames as the queries."""
    from registry.maps import Map

    ds = load_dataset("nordland_test")
    queries = list(ds.q_images)
    if args.map is not None:
        return Path(args.map), queries
    folder = work / "nordland"
    db = list(ds.db_images)[: args.map_images]
    pretrained = {"true": True, "false": False}.get(args.pretrained, args.pretrained)
    Map.build(folder, db, model=args.model, pretrained=pretrained, runtime=args.runtime,
              places=[place_of(p) for p in db], progress=True)
    return folder, queries[: len(db)]


DISTRACTOR_CHUNK = 4096


def distractor_map(args, folder: Path, work: Path) -> Path:
    """A copy of the Nordland map grown to --distractors rows: its own descriptors, then synthetic distractors drawn
    from them as the map-scale benchmark draws them (bench_map_scale._distractors, seed 0), appended to the store as
    one Lance version (written with Lance's own API in the store's schema), the index rebuilt for the new size (the
    map's `auto` policy) and the manifest committed last, as Map.add does. Distractor rows have place ids 10^6 + i
    and no image file."""
    import hashlib

    import lance
    import pyarrow as pa
    from bench_map_scale import _distractors
    from lance.fragment import write_fragments

    from registry.evaluation.index import IndexSpec
    from registry.evaluation.store import MapStore
    from registry.maps.building import new_index
    from registry.maps.manifest import INDEX_DIR, STORE_DIR, read_manifest, store_facts, version_entry, write_manifest

    big, store_dir = work / "distractors", work / "distractors" / STORE_DIR
    shutil.rmtree(big, ignore_errors=True)
    shutil.copytree(folder, big)
    manifest = read_manifest(big)
    base = MapStore(store_dir, version=manifest["store"]["version"])
    real, n0 = np.asarray(base.descriptors), base.count
    if args.distractors <= n0:
        raise SystemExit(f"--distractors {args.distractors} must exceed the Nordland map's {n0} rows")
    names = [f"distractor-{i:07d}" for i in range(args.distractors - n0)]
    meta = {**base.meta, "count": args.distractors,
            "images_sha256": hashlib.sha256("\n".join(base.images + names).encode()).hexdigest()}
    lance.dataset(str(store_dir)).update_schema_metadata({"clusvpr_map": json.dumps(meta)}, replace=True)
    schema = lance.dataset(str(store_dir)).schema
    fragments = []
    for s in tqdm(range(0, len(names), DISTRACTOR_CHUNK), desc=f"distractors to {args.distractors:,} rows"):
        e = min(s + DISTRACTOR_CHUNK, len(names))
        rows = _distractors(real, s, e - s, 0)
        table = pa.table({"row": pa.array(np.arange(n0 + s, n0 + e), pa.int64()), "image": pa.array(names[s:e]),
                          "place": pa.array([str(1_000_000 + i) for i in range(s, e)]),
                          "descriptor": pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), base.dim),
                          "x": pa.nulls(e - s, pa.float64()), "y": pa.nulls(e - s, pa.float64())}, schema=schema)
        fragments += write_fragments(table, str(store_dir), schema=schema)
    version = lance.dataset(str(store_dir)).version
    lance.LanceDataset.commit(str(store_dir), lance.LanceOperation.Append(fragments), read_version=version)
    store = MapStore(store_dir)
    index = new_index(store, IndexSpec(**manifest["index"]["requested"]))
    name = f"{INDEX_DIR}/v{store.version}"
    index.save(big / name)
    write_manifest(big, {**manifest, "store": store_facts(store),
                         "versions": manifest["versions"] + [version_entry(store, len(names))],
                         "index": {**manifest["index"], "spec": asdict(index.spec), "folder": name}})
    return big


# --- outputs -------------------------------------------------------------------------------------------------------

def _ms(x: float) -> str:
    return "-" if x is None or x != x else f"{x:.1f}"


def markdown(result: Dict) -> str:
    lines = ["| map | map images | max batch | concurrency | requests | ok | 4xx | 5xx | connection errors | "
             "requests/s | p50 ms | p95 ms | p99 ms |", "|---|" + "---:|" * 12]
    for r in (r for r in result["load"] if not r.get("soak")):
        lines.append(f"| {r['map']} | {result['maps'][r['map']]['count']:,} | {r['max_batch']} | {r['concurrency']} | "
                     f"{r['sent']:,} | {r['ok']:,} | {r['4xx']} | {r['5xx']} | {r['connection']} | "
                     f"{r['requests_per_s']:.1f} | {_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | {_ms(r['p99_ms'])} |")
    lines += ["", "| map | runtime | offline images/s, batch 1 | offline images/s, batch 16 | served images/s at "
              "concurrency 16 (max batch 16) | served / offline batch 16 | p99 ms | soak requests | 5xx | "
              "RSS before MB | RSS after MB | RSS change |", "|---|---|" + "---:|" * 10]
    for name, t in result["targets"].items():
        lines.append(f"| {name} | {t['runtime']} | {t['offline_batch1']:.1f} | {t['offline_batch16']:.1f} | "
                     f"{_num(t['served_c16'], '.1f')} | {_num(t['ratio_pct'], '.0f', '%')} | {_ms(t['p99_ms'])} | "
                     f"{t['soak_requests']:,} | {t['soak_5xx']} | {t['rss_before_mb']:.0f} | {t['rss_after_mb']:.0f} "
                     f"| {t['rss_change_pct']:+.1f}% |")
    lines += ["", "| fault | when killed | committed version before | committed version after | served after "
              "restart | restart s | answers as Map.query | last commit served |",
              "|---|---|---:|---:|---|---:|---|---|"]
    for f in result["faults"]:
        served = f"v{f['served']['version']}, {f['served']['count']:,} images"
        lines.append(f"| {f['fault']} | {f['when']} | {f.get('version_before', f.get('version_committed'))} | "
                     f"{f.get('version_after', f.get('version_committed'))} | {served} | {f['restart_s']:.1f} | "
                     f"{'yes' if f['answers']['match'] else 'no'} | {'yes' if f['ok'] else 'no'} |")
    return "\n".join(lines) + "\n"


def _num(x, fmt: str, unit: str = "") -> str:
    return "-" if x is None or x != x else format(x, fmt) + unit


def plot(result: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = [r for r in result["load"] if not r.get("soak")]
    for name in result["maps"]:
        for b in sorted({r["max_batch"] for r in rows}, reverse=True):
            sel = [r for r in rows if r["map"] == name and r["max_batch"] == b]
            label = f"{name}, max batch {b}"
            axes[0].plot([r["concurrency"] for r in sel], [r["requests_per_s"] for r in sel], marker="o", label=label)
            axes[1].plot([r["concurrency"] for r in sel], [r["p99_ms"] for r in sel], marker="o", label=label)
        offline16 = result["targets"][name]["offline_batch16"]
        axes[0].axhline(0.8 * offline16, ls=":", color="grey", label=f"{name}: 80% of offline batch 16")
    axes[0].set(xscale="log", xlabel="concurrent clients", ylabel="requests/s (1 image each)")
    axes[1].set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p99 latency (ms)")
    save_figure(fig, axes, path)


def targets(load: List[Dict], offline_rows: Dict[str, Dict]) -> Dict[str, Dict]:
    out = {}
    for name, off in offline_rows.items():
        top = max(r["max_batch"] for r in load if r["map"] == name)
        c16 = next((r for r in load if r["map"] == name and r["max_batch"] == top and r["concurrency"] == 16
                    and not r.get("soak")), None)
        soak = next(r for r in load if r["map"] == name and r.get("soak"))
        served = c16["requests_per_s"] if c16 else None
        out[name] = {"runtime": off["runtime"], "offline_batch1": off["images_per_s_batch1"],
                     "offline_batch16": off["images_per_s_batch16"], "served_c16": served,
                     "ratio_pct": None if served is None else 100.0 * served / off["images_per_s_batch16"],
                     "p99_ms": c16["p99_ms"] if c16 else None, "soak_requests": soak["sent"],
                     "soak_5xx": soak["5xx"], "rss_before_mb": soak["rss_before_mb"],
                     "rss_after_mb": soak["rss_after_mb"], "rss_change_pct": soak["rss_change_pct"]}
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/serve/serve.json"))
    p.add_argument("--work", type=Path, default=None, help="folder for the maps and logs (default: a temporary one)")
    p.add_argument("--map", type=Path, default=None, help="serve this map instead of building the Nordland one")
    p.add_argument("--model", default="clusvpr_vgg16")
    p.add_argument("--pretrained", default="true", help="true (the release), false (random weights: smoke runs) or "
                   "a Hub folder / repository")
    p.add_argument("--plugin", action="append", default=[], help="import MODULE first (a plugin registering "
                   "--model), here and in the service and `vpr map` subprocesses; repeatable")
    p.add_argument("--runtime", default="torch", choices=("torch", "onnx", "onnx-int8"))
    p.add_argument("--map-images", type=int, default=400, help="summer frames in the Nordland map (at most 400)")
    p.add_argument("--distractors", type=int, default=100_000, help="rows of the second map (0: no second map)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--max-batch", type=int, nargs="+", default=[16, 1], help="one server per value (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--queue", type=int, default=64)
    p.add_argument("--requests", type=int, default=10_000, help="requests of the RSS soak")
    p.add_argument("--level-requests", type=int, default=None, help="requests per concurrency (default: "
                   "min(--requests, 2000))")
    p.add_argument("--level-seconds", type=float, default=300.0, help="time bound of one concurrency level")
    p.add_argument("--soak-concurrency", type=int, default=16)
    p.add_argument("--soak-seconds", type=float, default=1800.0)
    p.add_argument("--offline-batches", type=int, default=20, help="batches of 16 timed offline")
    p.add_argument("--add-images", type=int, default=64, help="winter frames `vpr map add` appends in the fault run")
    p.add_argument("--burst-requests", type=int, default=400)
    p.add_argument("--fault-seconds", type=float, default=600.0)
    p.add_argument("--reload-seconds", type=float, default=30.0)
    p.add_argument("--check-queries", type=int, default=8, help="queries compared with Map.query after a restart")
    p.add_argument("--no-faults", action="store_true")
    a = p.parse_args(argv)
    a.level_requests = a.level_requests or min(a.requests, 2000)
    if not 1 <= a.map_images <= 400:
        p.error(f"--map-images must be 1..400 (the Nordland test places), got {a.map_images}")
    return a


def run(args, work: Path) -> Dict:
    from registry.maps import Map

    for module in args.plugin:
        importlib.import_module(module)
    folder, queries = nordland_map(args, work)
    maps = {"nordland": folder}
    if args.distractors:
        maps[f"{args.distractors:,} rows"] = distractor_map(args, folder, work)
    bodies = [multipart(p) for p in queries]
    info = {name: {k: v for k, v in Map.open(f).info().items() if k in ("count", "dim", "version", "runtime", "index",
                                                                         "model")} for name, f in maps.items()}
    offline_rows = {name: offline(f, queries, args.offline_batches) for name, f in maps.items()}
    load = [row for name, f in maps.items() for row in load_levels(args, f, name, bodies, work)]
    faults = []
    if not args.no_faults:
        add_dir = work / "add"
        add_dir.mkdir(exist_ok=True)
        for p in queries[-args.add_images:]:
            shutil.copy(p, add_dir / p.name)
        faults.append(kill_during_add(args, folder, add_dir, work, queries))
        faults.append(kill_during_burst(args, work, bodies, queries))
    return {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
            "maps": info, "offline": offline_rows, "load": load, "targets": targets(load, offline_rows),
            "faults": faults}


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    write_outputs(result, args.out, markdown, plot)
    return result


if __name__ == "__main__":
    main()
