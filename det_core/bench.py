"""MTBench runner: every case x prompt of a benchmark folder through a DeT workflow on one or more ComfyUI servers,
then the paper's table.

    python -m det_core.bench BENCH_DIR --workflow det_mtbench.json --server http://127.0.0.1:8188 \
        [--server http://gpu2:8188] --out results/ [--prompts-per-case 5] [--dry-run]

Benchmark folder layout (that of MTBench as shipped with DeT): one folder per case holding `source.mp4`,
`mask_first_frame.png`, `tracks.npy` ([T, N, 3]: x/W, y/H, visibility), `caption.txt` and `eval_prompts.txt`
(one prompt per line). A case with a missing file is reported (case and file) and skipped; the others run.

The workflow (API or UI format) is queued once per case x prompt, with its inputs bound by node title:

    role      default binding (--bind ROLE=TITLE.input, repeatable)  value
    video     Reference video.video                                  the case's source.mp4 (uploaded)
    tracks    Reference tracks.path                                  its tracks.npy (uploaded)
    mask      Reference mask.image                                   its mask_first_frame.png (uploaded)
    caption   Reference caption.text                                 caption.txt
    prompt    New prompt.text, Motion Fidelity (DeT).prompt          the eval prompt
    seed      Apply DeT Motion.seed                                  --seed

Bindings to titles the workflow does not have are skipped (a workflow with no node for `video` or `prompt` is an
error). The scores come from the workflow's Motion Fidelity (DeT) node (its JSON report); files the output nodes
save are downloaded next to them. All prompts of a case go to the same server one after another, so ComfyUI's
cache trains the case's adapter once.

Resumable: each finished case x prompt leaves `<out>/<case>/<k>/result.json`; finished ones are skipped, so a
crash loses at most the case in flight. `results.csv` and `table.md` (All / Hard / Medium / Easy x edit fidelity,
temporal consistency, motion fidelity, as in the paper) are rewritten at the end. `--dry-run` queues nothing: it
checks the folder and scores each source's tracks against themselves (motion fidelity must be 100).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from .client import ComfyClient, ComfyError

CASE_FILES = ("source.mp4", "mask_first_frame.png", "tracks.npy", "caption.txt", "eval_prompts.txt")
DEFAULT_BINDINGS = {
    "video": ["Reference video.video"],
    "tracks": ["Reference tracks.path"],
    "mask": ["Reference mask.image"],
    "caption": ["Reference caption.text"],
    "prompt": ["New prompt.text", "Motion Fidelity (DeT).prompt"],
    "seed": ["Apply DeT Motion.seed"],
}
REQUIRED_ROLES = ("video", "prompt")
LEVELS = ("easy", "medium", "hard")
SCORE_COLUMNS = ("edit_fidelity", "temporal_consistency", "motion_fidelity")


@dataclass
class Case:
    name: str
    folder: str
    caption: str
    prompts: list[str]
    level: str = ""
    clusters: int = 0


def video_size(path: str) -> tuple[int, int]:
    import av

    with av.open(path) as c:
        s = c.streams.video[0].codec_context
        return s.width, s.height


def scan(bench_dir: str, prompts_per_case: int, log=print) -> list[Case]:
    """The runnable cases of a benchmark folder; problems are reported and those cases skipped."""
    from .metrics import motion_difficulty

    if not os.path.isdir(bench_dir):
        raise FileNotFoundError(f"benchmark folder not found: {bench_dir}")
    cases = []
    for name in sorted(os.listdir(bench_dir)):
        folder = os.path.join(bench_dir, name)
        if not os.path.isdir(folder):
            continue
        missing = [f for f in CASE_FILES if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            log(f"[bench] skipping case {name}: missing {', '.join(missing)}")
            continue
        try:
            prompts = [p.strip() for p in open(os.path.join(folder, "eval_prompts.txt")) if p.strip()]
            caption = open(os.path.join(folder, "caption.txt")).read().strip()
            arr = np.load(os.path.join(folder, "tracks.npy"), allow_pickle=False)
            w, h = video_size(os.path.join(folder, "source.mp4"))
            d = motion_difficulty(arr[..., :2].transpose(1, 0, 2) * np.array([w, h]))
        except Exception as e:  # a broken file in one case must not stop the others
            log(f"[bench] skipping case {name}: {type(e).__name__}: {e}")
            continue
        if not prompts:
            log(f"[bench] skipping case {name}: eval_prompts.txt has no prompt")
            continue
        cases.append(Case(name, folder, caption, prompts[:prompts_per_case], d["level"], d["clusters"]))
    return cases


def parse_bindings(specs: list[str]) -> dict[str, list[str]]:
    bindings = {k: list(v) for k, v in DEFAULT_BINDINGS.items()}
    explicit: set[str] = set()
    for spec in specs:
        role, _, target = spec.partition("=")
        if role not in DEFAULT_BINDINGS or "." not in target:
            raise ValueError(f"--bind {spec!r}: use ROLE=TITLE.input with ROLE one of {', '.join(DEFAULT_BINDINGS)}")
        if role not in explicit:
            bindings[role], explicit = [], explicit | {role}
        bindings[role].append(target)
    return bindings


def load_workflow(path: str, client: ComfyClient) -> dict:
    with open(path) as f:
        wf = json.load(f)
    if isinstance(wf, dict) and "nodes" in wf and "links" in wf:  # UI format: convert with the server's node list
        from . import client as client_module

        convert = getattr(client_module, "convert_ui_to_api", None)
        if convert is None:
            raise ValueError(f"{path} is a UI-format workflow and this client cannot convert it; export it in API format")
        wf = convert(wf, client.object_info())
    if not isinstance(wf, dict) or not all(isinstance(v, dict) and "class_type" in v for v in wf.values()):
        raise ValueError(f"{path} is neither an API-format prompt nor a UI workflow")
    return wf


def bind(workflow: dict, bindings: dict[str, list[str]], values: dict[str, object]) -> dict:
    """A copy of the workflow with each role's value written into the inputs its bindings name."""
    prompt = json.loads(json.dumps(workflow))
    by_title = {}
    for node_id, node in prompt.items():
        by_title.setdefault(node.get("_meta", {}).get("title", node["class_type"]), []).append(node_id)
        by_title.setdefault(node_id, []).append(node_id)
    for role, value in values.items():
        hit = False
        for target in bindings.get(role, []):
            title, _, name = target.rpartition(".")
            for node_id in by_title.get(title, []):
                prompt[node_id]["inputs"][name] = value
                hit = True
        if not hit and role in REQUIRED_ROLES:
            raise ValueError(f"the workflow has no node for '{role}' ({', '.join(bindings.get(role, []))}); "
                             f"title a node so or pass --bind {role}=TITLE.input")
    return prompt


def scores_from(result) -> dict:
    for node_output in result.outputs.values():
        for text in node_output.get("text", []) if isinstance(node_output.get("text"), list) else []:
            try:
                doc = json.loads(text)
            except (TypeError, ValueError):
                continue
            if isinstance(doc, dict) and "motion_fidelity" in doc:
                return doc
    raise ValueError("the workflow reported no scores: it needs a Motion Fidelity (DeT) node")


def run_case(client: ComfyClient, workflow: dict, bindings, case: Case, out: str, seed: int, timeout: float,
             done_cb) -> None:
    uploads = {}
    for role, fname in (("video", "source.mp4"), ("tracks", "tracks.npy"), ("mask", "mask_first_frame.png")):
        uploads[role] = client.upload(os.path.join(case.folder, fname), subfolder=f"mtbench/{case.name}")
    for k, text in enumerate(case.prompts):
        folder = os.path.join(out, case.name, str(k))
        if os.path.isfile(os.path.join(folder, "result.json")):
            continue
        t0 = time.monotonic()
        prompt = bind(workflow, bindings, dict(uploads, caption=case.caption, prompt=text, seed=seed))
        result = client.run(prompt, timeout=timeout)
        scores = scores_from(result)
        tmp = folder + ".partial"
        files = client.download_outputs(result, tmp)
        record = {"case": case.name, "prompt_index": k, "prompt": text, "level": case.level,
                  "clusters": case.clusters, "seconds": round(time.monotonic() - t0, 2), "server": client.url,
                  "files": [os.path.basename(f) for f in files],
                  **{c: scores.get(c) for c in SCORE_COLUMNS}, "local": scores.get("local"),
                  "global": scores.get("global_"), "mode": scores.get("mode")}
        with open(os.path.join(tmp, "result.json"), "w") as f:
            json.dump(record, f, indent=1)
        if os.path.isdir(folder):
            import shutil
            shutil.rmtree(folder)
        os.replace(tmp, folder)  # the result appears whole or not at all
        done_cb(record)


def collect(out: str, cases: list[Case]) -> list[dict]:
    rows = []
    for case in cases:
        for k in range(len(case.prompts)):
            path = os.path.join(out, case.name, str(k), "result.json")
            if os.path.isfile(path):
                rows.append(json.load(open(path)))
    return rows


def mean(values) -> float | None:
    vals = [v for v in values if v is not None and v == v]
    return sum(vals) / len(vals) if vals else None


def write_reports(out: str, rows: list[dict], title: str) -> tuple[str, str]:
    """results.csv and table.md in the paper's layout (All / Hard / Medium / Easy)."""
    from .evaluate import PUBLISHED

    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "results.csv")
    cols = ["case", "prompt_index", "prompt", "level", "clusters", *SCORE_COLUMNS, "local", "global", "mode",
            "seconds", "server"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    fmt = lambda v: "-" if v is None else f"{v:.1f}"
    groups = [("All", rows)] + [(lvl.capitalize(), [r for r in rows if r["level"] == lvl]) for lvl in ("hard", "medium", "easy")]
    head = "| method | " + " | ".join(f"{g} EF | {g} TC | {g} MF" for g, _ in groups) + " |"
    sep = "|---|" + "---|" * (3 * len(groups))
    ours = "| " + title + " | " + " | ".join(" | ".join(fmt(mean(r[c] for r in grp)) for c in SCORE_COLUMNS)
                                             for _, grp in groups) + " |"
    lines = [f"# MTBench results ({len(rows)} case x prompt runs)", "",
             "EF: edit fidelity (CLIP x 100), TC: temporal consistency (DINO x 100), MF: motion fidelity (x 100).", "",
             head, sep, ours]
    for name, (ef, tc, mf) in PUBLISHED.items():
        lines.append(f"| {name} (published) | {ef} | {tc} | {mf} | " + " | ".join(["-"] * (3 * (len(groups) - 1))) + " |")
    counts = ", ".join(f"{g}: {len(grp)}" for g, grp in groups)
    lines += ["", f"Runs per group: {counts}."]
    md_path = os.path.join(out, "table.md")
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path, md_path


def dry_run(cases: list[Case], out: str, mode: str) -> list[dict]:
    """Scores each source's tracks against themselves (motion fidelity 100 when the folder is sound)."""
    from .metrics import motion_fidelity

    rows = []
    for case in cases:
        arr = np.load(os.path.join(case.folder, "tracks.npy"))[..., :2].transpose(1, 0, 2)
        mf = motion_fidelity(arr, arr, mode=mode)
        rows.append({"case": case.name, "prompt_index": 0, "prompt": case.caption, "level": case.level,
                     "clusters": case.clusters, "edit_fidelity": None, "temporal_consistency": None,
                     "motion_fidelity": 100.0 * mf["hybrid"], "local": mf["local"], "global": mf["global"],
                     "mode": mode, "seconds": 0.0, "server": "dry-run"})
    return rows


class Progress:
    def __init__(self, total: int, done: int):
        self.total, self.done, self.start, self.start_done = total, done, time.monotonic(), done
        self.lock = threading.Lock()

    def tick(self, record: dict) -> None:
        with self.lock:
            self.done += 1
            rate = (time.monotonic() - self.start) / max(1, self.done - self.start_done)
            eta = rate * (self.total - self.done)
            bar = "#" * int(30 * self.done / max(1, self.total))
            print(f"[bench] [{bar:<30}] {self.done}/{self.total} {record['case']} #{record['prompt_index']}: "
                  f"MF {record['motion_fidelity']:.1f}  ETA {eta:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m det_core.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dir")
    p.add_argument("--workflow", help="API- or UI-format workflow to run per case x prompt")
    p.add_argument("--server", action="append", default=[], help="ComfyUI URL; repeat to share the work")
    p.add_argument("--out", default="mtbench_results")
    p.add_argument("--prompts-per-case", type=int, default=5)
    p.add_argument("--bind", action="append", default=[], help="ROLE=TITLE.input (see the module doc)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("frechet", "official"), default="frechet", help="dry-run scoring mode")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds per case x prompt")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--title", default="DeT (this run)")
    ns = p.parse_args(argv)
    try:
        cases = scan(ns.bench_dir, ns.prompts_per_case)
        if not cases:
            print("[bench] no runnable case", file=sys.stderr)
            return 2
        if ns.dry_run:
            rows = dry_run(cases, ns.out, ns.mode)
            paths = write_reports(ns.out, rows, "sources vs themselves (dry run)")
            print(f"[bench] dry run of {len(cases)} cases: " + ", ".join(f"{r['case']} {r['level']} ({r['clusters']} "
                  f"clusters) MF {r['motion_fidelity']:.1f}" for r in rows))
            print(f"[bench] wrote {paths[0]} and {paths[1]}")
            return 0
        if not ns.workflow or not ns.server:
            print("[bench] give --workflow and at least one --server (or --dry-run)", file=sys.stderr)
            return 2
        bindings = parse_bindings(ns.bind)
        clients = [ComfyClient(url) for url in ns.server]
        workflow = load_workflow(ns.workflow, clients[0])
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        print(f"[bench] {e}", file=sys.stderr)
        return 2
    total = sum(len(c.prompts) for c in cases)
    progress = Progress(total, len(collect(ns.out, cases)))
    print(f"[bench] {len(cases)} cases, {total} runs ({progress.done} already done), {len(clients)} server(s)")
    jobs: queue.Queue = queue.Queue()
    for case in cases:
        jobs.put(case)
    failures: list[str] = []

    def worker(client: ComfyClient):
        while True:
            try:
                case = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                run_case(client, workflow, bindings, case, ns.out, ns.seed, ns.timeout, progress.tick)
            except (ComfyError, ValueError, TimeoutError, ConnectionError, OSError) as e:
                failures.append(f"{case.name} on {client.url}: {e}")
                print(f"[bench] case {case.name} failed on {client.url}: {e}", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = collect(ns.out, cases)
    paths = write_reports(ns.out, rows, ns.title)
    print(f"[bench] {len(rows)}/{total} runs done; wrote {paths[0]} and {paths[1]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
