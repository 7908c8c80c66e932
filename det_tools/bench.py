"""MTBench runner: every case x prompt of a benchmark folder through a DeT workflow on one or more ComfyUI servers,
then the paper's table.

    python -m det_tools.bench BENCH_DIR --workflow det_mtbench.json --server http://127.0.0.1:8188 \
        [--server http://gpu2:8188] --out results/ [--prompts-per-case 5] [--protocol pack|det|both] [--dry-run]

Benchmark folder: MTBench as the DeT authors publish it (per case `videos.txt`, `masks.txt`, `trajectories.txt`
pointing to `videos/<case>.mp4`, `masks/<case>/00000.png ...`, `trajectories/<case>.pth`, plus `prompts.txt` and
`eval_prompts.txt`), or the pack's flat layout (`source.mp4`, `mask_first_frame.png`, `tracks.npy`,
`caption.txt`, `eval_prompts.txt`); see `det_tools.mtbench`. The runner says which layout each case has; a case
with a missing or unreadable file is reported (file and reason) and skipped, the others run.

Protocols (`--protocol`, recorded side by side in `results.csv` and `table.md`):
- `pack` (default): the pack's scores: the generated video tracked from the reference's query points, the true
  discrete Frechet distance for the global part.
- `det`: the public evaluation step by step (`det_core.public_eval`): both videos tracked from a 50 x 50 grid in
  the first-frame mask's box, the public global formula on 50 paired random tracks (`--pairing-seed`, recorded),
  CLIP logits, the public temporal-consistency formula. Only this protocol's row stands beside the published rows.
- `both`.
The workflow's Motion Fidelity (DeT) node computes them (its `protocol` input is bound); for `det` it needs the
reference frames (`source`) and the first-frame mask (`source_mask`) connected.

The workflow (API or UI format) is queued once per case x prompt, with its inputs bound by node title:

    role          default binding (--bind ROLE=TITLE.input, repeatable)  value
    video         Reference video.video                                  the case's video (uploaded)
    tracks        Reference tracks.path                                  its track file (uploaded)
    mask          Reference mask.image                                   its first-frame mask (uploaded)
    caption       Reference caption.text                                 its caption
    prompt        New prompt.text, Motion Fidelity (DeT).prompt          the eval prompt
    seed          Apply DeT Motion.seed                                  --seed
    protocol      Motion Fidelity (DeT).protocol                         --protocol
    pairing_seed  Motion Fidelity (DeT).pairing_seed                     --pairing-seed

Bindings to titles the workflow does not have are skipped (a workflow with no node for `video` or `prompt`, or
for `protocol` when it is not `pack`, is an error). The scores come from the workflow's Motion Fidelity (DeT)
node (its JSON report); files the output nodes save are downloaded next to them. All prompts of a case go to the
same server one after another, so ComfyUI's cache trains the case's adapter once.

Resumable: each finished case x prompt leaves `<out>/<case>/<k>/result.json`; finished ones are skipped, so a
crash loses at most the case in flight. `results.csv` (with each case's motion difficulty: clusters, silhouette,
level) and `table.md` (All / Hard / Medium / Easy x edit fidelity, temporal consistency, motion fidelity, as in the
paper) are rewritten at the end. `--dry-run` queues nothing and needs no model: it reads the folder and scores each
case's shipped tracks against themselves under both protocols (what a sound folder gives is printed).
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

import numpy as np

from .client import ComfyClient, ComfyError

from .mtbench import BenchCase
from .mtbench import scan as scan_folder

DEFAULT_BINDINGS = {
    "video": ["Reference video.video"],
    "tracks": ["Reference tracks.path"],
    "mask": ["Reference mask.image"],
    "caption": ["Reference caption.text"],
    "prompt": ["New prompt.text", "Motion Fidelity (DeT).prompt"],
    "seed": ["Apply DeT Motion.seed"],
    "protocol": ["Motion Fidelity (DeT).protocol"],
    "pairing_seed": ["Motion Fidelity (DeT).pairing_seed"],
}
REQUIRED_ROLES = ("video", "prompt")
PROTOCOLS = ("pack", "det")
SCORE_COLUMNS = ("edit_fidelity", "temporal_consistency", "motion_fidelity")
PROTOCOL_LABELS = {
    "pack": "pack protocol (true Frechet distance, tracks from the reference's query points)",
    "det": "det protocol (the public evaluation: 50 x 50 grid in the mask's box, 50 paired tracks)",
}


def scan(bench_dir: str, prompts_per_case: int, log=print) -> list[BenchCase]:
    """The runnable cases of a benchmark folder, with their motion difficulty; problems are reported, those cases
    skipped."""
    from det_core.metrics import motion_difficulty

    cases, problems = scan_folder(bench_dir)
    for p in problems:
        log(f"[bench] skipping case {p.case}: {p.file}: {p.reason}")
    runnable = []
    for case in cases:
        try:
            d = motion_difficulty(case.tracks[..., :2].transpose(1, 0, 2) * np.array(case.size))
        except ValueError as e:
            log(f"[bench] skipping case {case.name}: {os.path.relpath(case.tracks_file, case.folder)}: {e}")
            continue
        case.level, case.clusters, case.silhouette = d["level"], d["clusters"], d["silhouette"]
        case.prompts = case.prompts[:prompts_per_case]
        runnable.append(case)
    layouts = sorted({c.layout for c in runnable})
    if runnable:
        log(f"[bench] {len(runnable)} case(s) in the {' and '.join(layouts)} layout"
            f"{'s' if len(layouts) > 1 else ''}: " + ", ".join(f"{c.name} ({c.layout})" for c in runnable))
    return runnable


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
    """An API prompt from a workflow file in either format (a UI workflow is converted with the server's node list,
    as the headless client does)."""
    from .client import to_api_prompt

    try:
        with open(path, encoding="utf-8") as f:
            wf = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read the workflow {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    try:
        return to_api_prompt(wf, client.object_info())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def bind(workflow: dict, bindings: dict[str, list[str]], values: dict[str, object],
         required: tuple[str, ...] = REQUIRED_ROLES) -> dict:
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
        if not hit and role in required:
            raise ValueError(f"the workflow has no node for '{role}' ({', '.join(bindings.get(role, []))}); "
                             f"title a node so or pass --bind {role}=TITLE.input")
    return prompt


def scores_from(result, protocols: tuple[str, ...]) -> dict:
    """{protocol: scores} from the workflow's Motion Fidelity (DeT) report, for each protocol asked for."""
    for node_output in result.outputs.values():
        for text in node_output.get("text", []) if isinstance(node_output.get("text"), list) else []:
            try:
                doc = json.loads(text)
            except (TypeError, ValueError):
                continue
            if isinstance(doc, dict) and "motion_fidelity" in doc:
                found = doc.get("protocols") or {doc.get("protocol", "pack"): doc}
                missing = [p for p in protocols if p not in found]
                if missing:
                    raise ValueError(f"the workflow's Motion Fidelity (DeT) node did not compute the "
                                     f"{', '.join(missing)} protocol; title it 'Motion Fidelity (DeT)' or pass "
                                     f"--bind protocol=TITLE.protocol")
                return {p: found[p] for p in protocols}
    raise ValueError("the workflow reported no scores: it needs a Motion Fidelity (DeT) node")


def record_of(case: BenchCase, k: int, prompt: str, scores: dict, **extra) -> dict:
    """One row of results.csv: the case, its difficulty and each protocol's scores (prefixed pack_ / det_)."""
    row = {"case": case.name, "layout": case.layout, "prompt_index": k, "prompt": prompt, "level": case.level,
           "clusters": case.clusters, "silhouette": round(case.silhouette, 4)}
    for protocol, sc in scores.items():
        for col in (*SCORE_COLUMNS, "local"):
            row[f"{protocol}_{col}"] = sc.get(col)
        row[f"{protocol}_global"] = sc.get("global_")
    if "pack" in scores:
        row["pack_mode"] = scores["pack"].get("mode")
    if "det" in scores:
        row.update(det_seed=scores["det"].get("seed"), det_tracks=scores["det"].get("tracks"),
                   det_tc_features=scores["det"].get("tc_features"))
    return {**row, **extra}


def finished(path: str, protocols: tuple[str, ...], pairing_seed: int) -> bool:
    """A run counts as done when its result holds every asked protocol (the det one with the same pairing seed)."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    if any(record.get(f"{p}_motion_fidelity") is None for p in protocols):
        return False
    return "det" not in protocols or record.get("det_seed") == pairing_seed


def run_case(client: ComfyClient, workflow: dict, bindings, case: BenchCase, out: str, seed: int, timeout: float,
             done_cb, protocol: str = "pack", pairing_seed: int = 0) -> None:
    protocols = PROTOCOLS if protocol == "both" else (protocol,)
    required = REQUIRED_ROLES + (("protocol",) if protocol != "pack" else ())
    uploads = {role: client.upload(path, subfolder=f"mtbench/{case.name}")
               for role, path in (("video", case.video), ("tracks", case.tracks_file), ("mask", case.mask))}
    for k, text in enumerate(case.prompts):
        folder = os.path.join(out, case.name, str(k))
        if finished(os.path.join(folder, "result.json"), protocols, pairing_seed):
            continue
        t0 = time.monotonic()
        values = dict(uploads, caption=case.caption, prompt=text, seed=seed, protocol=protocol,
                      pairing_seed=pairing_seed)
        result = client.run(bind(workflow, bindings, values, required), timeout=timeout)
        scores = scores_from(result, protocols)
        tmp = folder + ".partial"
        if os.path.isdir(tmp):  # left by a crash: start clean
            import shutil
            shutil.rmtree(tmp)
        files = client.download_outputs(result, tmp)
        record = record_of(case, k, text, scores, seconds=round(time.monotonic() - t0, 2), server=client.url,
                           files=[os.path.relpath(f, tmp) for f in files])
        with open(os.path.join(tmp, "result.json"), "w") as f:
            json.dump(record, f, indent=1)
        if os.path.isdir(folder):
            import shutil
            shutil.rmtree(folder)
        os.replace(tmp, folder)  # the result appears whole or not at all
        done_cb(record)


def collect(out: str, cases: list[BenchCase]) -> list[dict]:
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


CSV_COLUMNS = ["case", "layout", "prompt_index", "prompt", "level", "clusters", "silhouette",
               *(f"{p}_{c}" for p in PROTOCOLS for c in (*SCORE_COLUMNS, "local", "global")),
               "pack_mode", "det_seed", "det_tracks", "det_tc_features", "seconds", "server"]


def write_reports(out: str, rows: list[dict], title: str) -> tuple[str, str]:
    """results.csv and table.md: both protocols, labelled, in the paper's layout (All / Hard / Medium / Easy);
    only the det protocol's row beside the published rows."""
    from det_core.evaluate import PUBLISHED

    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "results.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    def fmt(v) -> str:
        return "-" if v is None else f"{v:.1f}"

    groups = [("All", rows)] + [(lvl.capitalize(), [r for r in rows if r["level"] == lvl])
                                for lvl in ("hard", "medium", "easy")]

    def cells(protocol: str, grp: list[dict]) -> list[str]:
        return [fmt(mean(r.get(f"{protocol}_{c}") for r in grp)) for c in SCORE_COLUMNS]

    measured = [p for p in PROTOCOLS if any(r.get(f"{p}_motion_fidelity") is not None for r in rows)]
    head = "| method | protocol | " + " | ".join(f"{g} EF | {g} TC | {g} MF" for g, _ in groups) + " |"
    lines = [f"# MTBench results ({len(rows)} case x prompt runs)", "",
             "EF: edit fidelity (CLIP), TC: temporal consistency (DINO), MF: motion fidelity; all x 100.", "",
             "## This run, both protocols", "", head, "|---|---|" + "---|" * (3 * len(groups))]
    for p in PROTOCOLS:
        lines.append(f"| {title} | {PROTOCOL_LABELS[p]} | " + " | ".join(" | ".join(cells(p, grp))
                                                                         for _, grp in groups) + " |")
    lines += ["", "Runs per group: " + ", ".join(f"{g}: {len(grp)}" for g, grp in groups) + "."]
    missing = [p for p in PROTOCOLS if p not in measured]
    if missing:
        lines.append(f"Not measured in this run: {', '.join(missing)} protocol (`--protocol both`); shown as -.")
    lines += ["", "## Beside the published rows (det protocol only: the published numbers were measured with it)", "",
              "| method | All EF | All TC | All MF |", "|---|---|---|---|",
              f"| {title}, det protocol | " + " | ".join(cells("det", rows)) + " |"]
    for name, (ef, tc, mf) in PUBLISHED.items():
        lines.append(f"| {name} (published) | {ef} | {tc} | {mf} |")
    if any(r.get("det_tc_features") == "cls" for r in rows):
        lines += ["", "det TC: the DINO checkpoint has no trained pooler, so the public code's `pooler_output` number "
                      "is not reproducible; shown is the public frame formula on the CLS token."]
    md_path = os.path.join(out, "table.md")
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path, md_path


SOUND = {
    "pack": "a sound folder gives MF 100.0 (every track matches itself)",
    "det": "a sound folder gives local 100.0 and MF below 100: the public distance of a moving track to itself is "
           "the mean distance between its points, not 0",
}


def dry_run(cases: list[BenchCase], mode: str, pairing_seed: int = 0) -> tuple[list[dict], list[str]]:
    """Each case's shipped tracks scored against themselves under both protocols (no model needed). Returns the
    rows and the cases that do not score what a sound folder gives."""
    from det_core import public_eval
    from det_core.metrics import motion_fidelity

    rows, unsound = [], []
    for case in cases:
        tracks = case.tracks[..., :2].transpose(1, 0, 2)
        pack = motion_fidelity(tracks, tracks, mode=mode)
        det = public_eval.motion_fidelity(tracks, tracks, seed=pairing_seed)
        scores = {"pack": {"motion_fidelity": 100.0 * pack["hybrid"], "local": pack["local"],
                           "global_": pack["global"], "mode": mode},
                  "det": {"motion_fidelity": 100.0 * det["hybrid"], "local": det["local"], "global_": det["global"],
                          "seed": det["seed"], "tracks": det["tracks"]}}
        if (mode == "frechet" and abs(pack["hybrid"] - 1.0) > 1e-9) or abs(det["local"] - 1.0) > 1e-9:
            unsound.append(case.name)
        rows.append(record_of(case, 0, case.caption, scores, seconds=0.0, server="dry-run"))
    return rows, unsound


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
            mf = ", ".join(f"{p} MF {record[f'{p}_motion_fidelity']:.1f}" for p in PROTOCOLS
                           if record.get(f"{p}_motion_fidelity") is not None)
            print(f"[bench] [{bar:<30}] {self.done}/{self.total} {record['case']} #{record['prompt_index']}: "
                  f"{mf}  ETA {eta:.0f} s", flush=True)


def report_dry_run(cases: list[BenchCase], ns: argparse.Namespace) -> int:
    rows, unsound = dry_run(cases, ns.mode, ns.pairing_seed)
    paths = write_reports(ns.out, rows, "shipped tracks vs themselves (dry run)")
    shown = PROTOCOLS if ns.protocol == "both" else (ns.protocol,)
    print(f"[bench] dry run of {len(cases)} case(s), each case's shipped tracks against themselves:")
    for r in rows:
        scores = "; ".join(f"{p}: MF {r[f'{p}_motion_fidelity']:.1f} (local {100 * r[f'{p}_local']:.1f}, global "
                           f"{100 * r[f'{p}_global']:.1f})" for p in shown)
        print(f"[bench]   {r['case']} ({r['layout']} layout, {r['level']}, {r['clusters']} motion clusters): {scores}")
    for p in shown:
        print(f"[bench] {p} protocol: {SOUND[p]}" + (f" (pairing seed {ns.pairing_seed})" if p == "det" else ""))
    print(f"[bench] wrote {paths[0]} and {paths[1]}")
    if unsound:
        print(f"[bench] not what a sound folder gives: {', '.join(unsound)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m det_tools.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dir")
    p.add_argument("--workflow", help="API- or UI-format workflow to run per case x prompt")
    p.add_argument("--server", action="append", default=[], help="ComfyUI URL; repeat to share the work")
    p.add_argument("--out", default="mtbench_results")
    p.add_argument("--prompts-per-case", type=int, default=5)
    p.add_argument("--bind", action="append", default=[], help="ROLE=TITLE.input (see the module doc)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("frechet", "official"), default="frechet",
                   help="the pack protocol's global part in the dry run (a real run uses the workflow's setting)")
    p.add_argument("--protocol", choices=(*PROTOCOLS, "both"), default="pack",
                   help="pack: the pack's scores; det: the public evaluation (beside the published rows); both")
    p.add_argument("--pairing-seed", type=int, default=0, help="seed of the det protocol's 50 paired tracks")
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
            return report_dry_run(cases, ns)
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
                run_case(client, workflow, bindings, case, ns.out, ns.seed, ns.timeout, progress.tick, ns.protocol,
                         ns.pairing_seed)
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
