"""The trust sweep: every kind of file the zoo reads, mutated hundreds of deterministic ways, each loaded and queried
in a child process under a memory cap and a time limit, and each outcome classified.

  python benchmarks/trust_sweep.py                      # the full sweep -> benchmarks/trust_sweep/trust_sweep.json
  python benchmarks/trust_sweep.py --quick --out DIR    # a few cases per surface (the test suite runs this)
  python benchmarks/trust_sweep.py --surface serve map_add --out DIR   # the cases of these surfaces only

Outcomes: `named` (an error of the zoo's own, or a standard one it raised itself, whose message names the artefact or
the file, or for a bad value the option), `same` (loads and answers exactly as the unmutated artefact does), `limit`
(answers otherwise on a mutation the file format itself cannot detect, each such kind listed in
trust_sweep_cases.LIMITS with its reason), `silent` (answers otherwise, no error; for a bad value: accepted), `raw`
(any other exception or a crash), `unbounded` (the memory cap or the time limit hit), `insecure` (the secret file in
the cwd, which a link or a reference points at, was read and the outcome is not a named refusal, or its bytes appear in
the answer or the message) and `loss` (a file that was there before, the sentinel beside the artefact included, is
changed or gone; after a refused add or request, a file added). A request to the service (surface `serve`) is
`named` for a 4xx whose JSON error names the uploaded file, the parameter or the field, `same` or `silent` for a 2xx
as a load is, and `raw` for a 5xx.
Cases run in processes forked from a forkserver that has imported the libraries and started no thread. Writes the JSON
of every case and trust_sweep.md (the tables, rendered from that JSON) beside it.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import trust_sweep_artefacts as artefacts
import trust_sweep_cases as sweep_cases
import trust_sweep_mutations as mutations

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "trust_sweep"
OUTCOMES = ("named", "same", "limit", "silent", "raw", "unbounded", "insecure", "loss")
BAD = ("silent", "raw", "unbounded", "insecure", "loss")
PACKAGES = ("registry", "clusvpr_plugin")
MEMORY_WORDS = ("MemoryError", "bad_alloc", "memory allocation", "Cannot allocate memory", "out of memory")
ERRNO_NAMES = (ValueError, OSError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               RuntimeError, FloatingPointError, LookupError)


# ------------------------------------------------------------------------------------------------ the child
def _canonical(value: Any, case_dir: str) -> Any:
    if isinstance(value, np.ndarray):
        return ["array", str(value.dtype), list(value.shape), hashlib.sha256(value.tobytes()).hexdigest()]
    if isinstance(value, dict):
        return {str(k): _canonical(v, case_dir) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, case_dir) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return repr(value.item())
    return repr(value).replace(case_dir, "<case>")


def _values_call(case: Dict[str, Any], path: Path, facts: Dict[str, Any]) -> Dict[str, Any]:
    """A bad value given to a search call or a command line (args: call or argv, name, value)."""
    args = case["args"]
    value = float(args["value"]) if args.get("value") in ("inf", "nan") else args.get("value")
    if case["mutation"] == "cli":
        return _cli(args["argv"], path, facts)
    if args["call"] == "map_query":
        from registry.maps import Map

        return {"matches": repr(Map.open(path).query([facts["images"][1]], k=value))}
    from registry.evaluation import PlaceIndex

    index = PlaceIndex.load(path)
    queries = np.ones((1, index.dim), np.float32) / np.sqrt(index.dim)
    if args["call"] == "set_search_params":
        index.set_search_params(**{args["name"]: value})
        return {"search": index.search(queries, 3)}
    return {"search": index.search(queries, value)}


def _cli(argv: List[str], path: Path, facts: Dict[str, Any]) -> Dict[str, Any]:
    from registry.cli import main

    argv = list(argv)
    if argv[:2] == ["map", "query"]:
        argv[2:2] = [str(path), facts["images"][1]]
    elif argv[:2] == ["map", "build"]:
        argv[2:2] = [str(path.parent / "new_map")]
        argv += ["--images", str(path), "--model", "sweep_gem",
                 "--pretrained", "false", "--index", "flat"]
    else:
        argv += ["--models", "sweep_gem", "--datasets", str(path / "no_such_dataset"), "--no-progress",
                 "--output-dir", str(path.parent / "results")]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return {"exit": code, "stderr": err.getvalue()[-2000:]}


def _error_facts(err: BaseException) -> Dict[str, Any]:
    tb = traceback.extract_tb(err.__traceback__)
    raised_in = tb[-1].filename if tb else ""
    cls = type(err)
    return {"type": cls.__name__, "module": cls.__module__, "message": str(err)[:3000],
            "raised_in_package": any(f"/{p}/" in raised_in for p in PACKAGES),
            "last_frame": f"{Path(raised_in).name}:{tb[-1].lineno}" if tb else ""}


def child(case: Dict[str, Any], case_dir: str, facts: Dict[str, Any], cap: Optional[int], conn) -> None:
    """Run one case's action in this (forked) process and send what happened."""
    os.chdir(case_dir)
    artefacts.register_models()
    path = Path(case_dir) / "a" / case["artefact"]
    if case["artefact"] == "runtime":
        path = path / "model.onnx"
    if cap is not None:
        with open("/proc/self/status") as fh:
            vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + cap, resource.RLIM_INFINITY))
    try:
        if case["surface"] == "values":
            answer = _values_call(case, path, facts)
        elif case["surface"] == "serve":
            answer = artefacts.ACTIONS["serve"](path, facts, case["request"])
        else:
            answer = artefacts.ACTIONS[sweep_cases.ARTEFACTS[case["artefact"]][1]](path, facts)
        canon = _canonical(answer, case_dir)
        text = json.dumps(canon)
        report = {"ok": True, "digest": hashlib.sha256(text.encode()).hexdigest(), "answer": text[:300],
                  "raw_answer": answer if case["surface"] == "values" else None}
        if case["surface"] == "serve":  # the status and the error message (the answer itself is in the digest)
            report["raw_answer"] = {"status": answer["status"], "error": answer.get("error")}
    except BaseException as err:  # noqa: B036  (every failure is a result here)
        report = {"ok": False, **_error_facts(err)}
    try:
        conn.send(report)
    except (TypeError, ValueError):
        report.pop("raw_answer", None)
        conn.send(report)
    conn.close()


# ------------------------------------------------------------------------------------------------ the parent
def _snapshot(folder: Path) -> Dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif rel != mutations.SECRET:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _prepare(case: Dict[str, Any], pristine: Path, case_dir: Path) -> None:
    """The case folder: the artefact copied to a/, the secret (the cwd) and a sentinel beside it, the mutation."""
    (case_dir / "a").mkdir(parents=True)
    secret = (mutations.SECRET_MARK + os.urandom(16).hex()).encode() * 256
    (case_dir / mutations.SECRET).write_bytes(secret)
    (case_dir / "a" / "sentinel.txt").write_text("a user's file beside the artefact\n")
    source = pristine / ("images" if case["artefact"] == "images" else case["artefact"])
    target = case_dir / "a" / case["artefact"]
    shutil.copytree(source, target, symlinks=True) if source.is_dir() else shutil.copy(source, target)
    if case["surface"] == "values" or case["mutation"] in ("none", "form"):
        return
    args = dict(case["args"])
    if "other" in args:
        args["other"] = pristine / args["other"]
    file = case["file"]
    if file.startswith("@") or "/@" in file:
        head, role = file.rsplit("@", 1)
        where = mutations.lance_file(target / head.rstrip("/"), role)
    else:
        where = target / file if file else target
    if case["mutation"].startswith("lance_"):
        getattr(mutations, case["mutation"])(target, **args)
    else:
        mutations.MUTATIONS[case["mutation"]](where, **args)
    if case["rehash"]:
        mutations.rehash(target)


def _run_child(ctx, case, case_dir: Path, facts, cap: Optional[int], limit: float) -> Dict[str, Any]:
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child, args=(case, str(case_dir), facts, cap, send))
    start = time.monotonic()
    proc.start()
    send.close()
    report = None
    if receive.poll(limit):
        try:
            report = receive.recv()
        except EOFError:
            report = None
    proc.join(max(1.0, limit - (time.monotonic() - start)) if report is None else 30)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"ok": False, "timeout": True, "seconds": round(time.monotonic() - start, 1)}
    if report is None:
        return {"ok": False, "signal": -proc.exitcode if proc.exitcode and proc.exitcode < 0 else None,
                "exitcode": proc.exitcode}
    report["seconds"] = round(time.monotonic() - start, 2)
    return report


def _message(report: Dict[str, Any]) -> str:
    if report.get("timeout"):
        return f"time limit hit after {report['seconds']} s"
    if "type" in report:
        return f"{report['type']}: {report['message']}"
    if report.get("ok"):
        return "answered: " + report.get("answer", "")[:200]
    return f"the child died (signal {report.get('signal')}, exit {report.get('exitcode')})"


def _names_it(message: str, case: Dict[str, Any], case_dir: Path) -> bool:
    names = [str(case_dir / "a" / case["artefact"])]  # the artefact's path (its files' paths begin with it)
    names += [Path(case["file"]).name] if case["file"] and not case["file"].startswith("@") else []
    return any(n in message for n in names)


def classify(case, report, baseline: Optional[str], case_dir: Path, read_secret: bool, lost: List[str]) -> str:
    """One outcome, worst first: loss, insecure, unbounded, raw, silent, then named or same."""
    message = _message(report)
    if lost:
        return "loss"
    if mutations.SECRET_MARK in message or mutations.SECRET_MARK in report.get("answer", ""):
        return "insecure"
    if report.get("timeout") or any(w in message for w in MEMORY_WORDS):
        return "unbounded"
    if case["surface"] == "values":
        return _classify_value(case, report)
    if case["surface"] == "serve":
        return _classify_http(case, report, baseline)
    if not report.get("ok") and "type" not in report:
        return "raw"  # a crash; unbounded when it completes without the cap (checked by the caller)
    named = not report["ok"] and (report["module"].startswith(PACKAGES) or (
        report["raised_in_package"] and report["type"] in {c.__name__ for c in ERRNO_NAMES}))
    if named and not _names_it(report["message"], case, case_dir):
        named = False
    if read_secret and not named:
        return "insecure"
    if report["ok"]:
        return "same" if report["digest"] == baseline else ("limit" if case.get("limit") else "silent")
    return "named" if named else "raw"


def _classify_value(case: Dict[str, Any], report: Dict[str, Any]) -> str:
    flag = case["args"].get("flag") or case["args"]["name"]
    if case["mutation"] == "cli":
        if not report.get("ok"):
            return "raw"
        got = report["raw_answer"]
        if got["exit"] == 0:
            return "silent"
        words = (flag, flag.lstrip("-").replace("-", "_"))
        if got["exit"] == 2 and any(w in got["stderr"] for w in words) and "Traceback" not in got["stderr"]:
            return "named"
        return "silent" if "Traceback" not in got["stderr"] else "raw"
    if report.get("ok"):
        return "silent"
    named = report["module"].startswith(PACKAGES) or (report["raised_in_package"] and report["type"] in
                                                     {c.__name__ for c in ERRNO_NAMES + (TypeError,)})
    return "named" if named and flag in report["message"] else "raw"


def _classify_http(case: Dict[str, Any], report: Dict[str, Any], baseline: Optional[str]) -> str:
    """A request to the service: a 2xx is same or silent as for a load; a 4xx whose JSON error holds one of the
    request's words (the uploaded file's name, the field or the parameter) is named; a 5xx, a 4xx naming none, a
    traceback or an exception out of the app is raw."""
    if not report.get("ok"):
        return "raw"
    status, error = report["raw_answer"]["status"], report["raw_answer"]["error"]
    if 200 <= status < 300:
        return "same" if report["digest"] == baseline else ("limit" if case.get("limit") else "silent")
    named = isinstance(error, str) and "Traceback" not in error and any(w in error for w in case["request"]["names"])
    return "named" if 400 <= status < 500 and named else "raw"


def _refused(case: Dict[str, Any], report: Dict[str, Any]) -> bool:
    """Whether a case that writes (an add, a request to the service) was refused, so must have written nothing."""
    if case["surface"] == "serve":
        return not report.get("ok") or not 200 <= report["raw_answer"]["status"] < 300
    return case["surface"] == "map_add" and not report.get("ok")


def run_case(ctx, case, pristine: Path, work: Path, facts, baseline, cap: int, limit: float) -> Dict[str, Any]:
    case_dir = work / f"{case['id']:04d}"
    _prepare(case, pristine, case_dir)
    before = _snapshot(case_dir)
    secret = case_dir / mutations.SECRET
    st = secret.stat()
    os.utime(secret, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
    atime = secret.stat().st_atime_ns
    report = _run_child(ctx, case, case_dir, facts, cap, limit)
    crashed_capped = not report.get("ok") and "type" not in report and not report.get("timeout")
    if crashed_capped:  # a crash under the cap that does not happen without it is the cap hit
        again = _run_child(ctx, case, case_dir, facts, None, limit)
        if again.get("ok") or "type" in again:
            report = {**report, "timeout": False, "type": "MemoryError", "module": "builtins",
                      "message": f"died under the memory cap (signal {report.get('signal')}); without it: "
                                 f"{_message(again)[:150]}", "raised_in_package": False}
    read_secret = secret.stat().st_atime_ns != atime
    after = _snapshot(case_dir)
    rewritten = () if _refused(case, report) else [f"a/{case['artefact']}/{f}" for f in sweep_cases.COMMITS]
    lost = sorted(k for k, v in before.items() if after.get(k) != v and k not in rewritten)
    if _refused(case, report):  # a refused add or request leaves the folder as it was: no file added either
        lost += sorted(f"{k} (new)" for k in after if k not in before)
    outcome = classify(case, report, baseline, case_dir, read_secret, lost)
    shutil.rmtree(case_dir, ignore_errors=True)
    return {"id": case["id"], "surface": case["surface"], "artefact": case["artefact"], "file": case["file"],
            "mutation": case["mutation"], "args": case["args"], "rehash": case["rehash"], "label": case["label"],
            "outcome": outcome, "message": _message(report)[:200].replace(str(case_dir), "<case>"),
            "read_secret": read_secret, "lost": lost[:5], "seconds": report.get("seconds")}


def baselines(ctx, pristine: Path, work: Path, facts, cap: int, limit: float) -> Dict[str, str]:
    """The answer digest of every unmutated artefact (each run as a case with no mutation)."""
    out = {}
    for case in sweep_cases.baseline_cases():
        key = sweep_cases.baseline_key(case)
        case_dir = work / f"baseline-{key.replace('/', '-')}"
        _prepare(case, pristine, case_dir)
        report = _run_child(ctx, case, case_dir, facts, cap, limit)
        if not report.get("ok") or (report.get("raw_answer") or {}).get("status", 200) != 200:
            raise RuntimeError(f"the unmutated {key} does not load: {_message(report)} {report.get('raw_answer')}")
        out[key] = report["digest"]
        shutil.rmtree(case_dir, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------ report
def summary(records: List[Dict[str, Any]]) -> Dict[str, Dict[str, int]]:
    table: Dict[str, Dict[str, int]] = {}
    for r in records:
        row = table.setdefault(r["surface"], dict.fromkeys(OUTCOMES, 0))
        row[r["outcome"]] += 1
    return table


def render(doc: Dict[str, Any]) -> str:
    """trust_sweep.md from the JSON: the surface x outcome table, then every case that is not named or same."""
    table = doc["summary"]
    lines = ["| Surface | " + " | ".join(OUTCOMES) + " | cases |", "|---|" + "---:|" * (len(OUTCOMES) + 1)]
    total = dict.fromkeys(OUTCOMES, 0)
    for surface, row in table.items():
        lines.append(f"| {surface} | " + " | ".join(str(row[o]) for o in OUTCOMES) + f" | {sum(row.values())} |")
        for o in OUTCOMES:
            total[o] += row[o]
    lines.append("| **all** | " + " | ".join(f"**{total[o]}**" for o in OUTCOMES) + f" | **{sum(total.values())}** |")
    bad = [r for r in doc["cases"] if r["outcome"] in BAD + ("limit",)]
    lines += ["", "| Case | Surface | Mutation | Outcome | Message (first 200 characters) |", "|---:|---|---|---|---|"]
    for r in bad:
        msg = r["message"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['id']} | {r['surface']} | `{r['label']}` | {r['outcome']} | {msg} |")
    if not bad:
        lines.append("| - | - | - | - | no case is limit, silent, raw, unbounded, insecure or loss |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few cases per surface")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of trust_sweep.json and trust_sweep.md")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cap-mib", type=int, default=1024, help="address space a case may add (MiB)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds a case may take")
    parser.add_argument("--only", type=int, nargs="*", help="run only these case ids")
    parser.add_argument("--surface", nargs="*", help="run only the cases of these surfaces (with --quick: their few)")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only render JSON's tables to its .md")
    args = parser.parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(render(json.loads(args.render.read_text())))
        return 0
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_ARENA_MAX="2", HF_HUB_OFFLINE="1",
                      RUST_LOG="error", TQDM_DISABLE="1", TRUST_SWEEP_WARM="1")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "registry", "registry.evaluation", "registry.maps", "registry.cli", "faiss",
                                "lance", "onnxruntime", "registry.serve.app", "trust_sweep_artefacts",
                                "trust_sweep_cases"])
    with tempfile.TemporaryDirectory(prefix="trust-sweep-") as tmp:
        pristine, work = Path(tmp) / "pristine", Path(tmp) / "cases"
        started = time.time()
        facts = _build_in_child(ctx, pristine)
        cases = sweep_cases.all_cases(pristine, args.seed)
        chosen = sweep_cases.quick(cases) if args.quick else cases
        if args.only:
            chosen = [c for c in cases if c["id"] in set(args.only)]
        if args.surface:
            chosen = [c for c in chosen if c["surface"] in set(args.surface)]
        base = baselines(ctx, pristine, work, facts, args.cap_mib << 20, args.time_limit)
        records = []
        for case in chosen:
            records.append(run_case(ctx, case, pristine, work, facts, base.get(sweep_cases.baseline_key(case)),
                                    args.cap_mib << 20, args.time_limit))
            r = records[-1]
            print(f"{r['id']:4d} {r['outcome']:9s} {r['label'][:70]:70s} {r['message'][:90]}", flush=True)
    doc = {"settings": {"quick": args.quick, "seed": args.seed, "cap_mib": args.cap_mib,
                        "time_limit_s": args.time_limit, "cases_generated": len(cases), "cases_run": len(records),
                        "seconds": round(time.time() - started, 1)},
           "summary": summary(records), "cases": records}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trust_sweep.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "trust_sweep.md").write_text(render(doc))
    print(render(doc).split("\n\n")[0])
    return 1 if any(r["outcome"] in BAD for r in records) else 0


def _build(pristine: str, conn) -> None:
    try:
        conn.send(artefacts.build(Path(pristine)))
    except BaseException as err:  # noqa: B036
        conn.send({"error": "".join(traceback.format_exception(err))[-3000:]})


def _build_in_child(ctx, pristine: Path) -> Dict[str, Any]:
    """The pristine artefacts, built in a child of the forkserver (the parent starts no library threads)."""
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_build, args=(str(pristine), send))
    proc.start()
    send.close()
    facts = receive.recv()
    proc.join()
    if "error" in facts:
        raise RuntimeError(f"building the artefacts failed:\n{facts['error']}")
    return facts


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
