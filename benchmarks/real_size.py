"""A real-size rehearsal on CPU: every SD-family method on a real architecture with random weights, before any GPU
hour is spent on it.

    python benchmarks/real_size.py                                   # every pair on sd14_random at 512², 2 steps
    python benchmarks/real_size.py --pairs ddim+p2p nti+p2p          # a subset
    python benchmarks/real_size.py --model sdxl_random --resolution 1024 --pairs ddim+direct ddim+p2p

The embedded tiny model has 8-wide attention heads, a 2-layer text encoder and 64² latents at 512²; SD v1.4 has
heads of 40 to 160 channels, 4,096-token self-attention and 77-token prompts. Shape and memory bugs show only at
those sizes, so this runs each pair as a real job (`launch.py -m`, one sweep per set of step settings, the model
built once per sweep) on one mini-benchmark sample (the cat, change object), with the metrics on (their real code
paths at 512², tiny backbones), and writes a table: the pair, its status (or why it failed), seconds, the process's
peak resident memory, UNet evaluations forward and backward, and the largest tensor attention control materialised.

The pairs: every SD-family inversion configuration with `direct` and with `p2p`; every SD-family editor
configuration with `ddim`; and each editor with its PIE-Bench partner inversion. Methods with an own step count or an
optimisation loop get the smallest settings that run each of their code paths once (SMALLEST; the table shows
them). The random weights make the images noise and the metric values meaningless; the costs are the architecture's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

# inversion config -> overrides that run its code paths once: one optimisation iteration (early stopping is checked
# after every iteration), one regularisation round, a skip that leaves one editing step, two Anderson iterates
SMALLEST = {
    "nti": {"inner_steps": 1},
    "todinv": {"inner_steps": 1},
    "spdinv": {"inner_steps": 1},
    "spdinv_plain": {"inner_steps": 1},
    "stylediffusion": {"inner_steps": 1},
    "proxedit_nti": {"base.inner_steps": 1},
    "renoise": {"reg_steps": 1, "ac_rolls": 1},
    "pix2pix_zero": {"reg_steps": 1, "ac_rolls": 1},
    "pix2pix_zero_aligned": {"reg_steps": 1, "ac_rolls": 1},
    "aidi_plain": {"iterations": 2, "memory": 2},
    "fpi": {"iterations": 1},
    "fpi_plain": {"iterations": 1},
    "edit_friendly": {"skip": 1},
    # flow inversions keep their own step counts (their configs do not read num_steps)
    "flow": {"num_steps": 2},
    "rf_solver": {"num_steps": 2},
    "fireflow": {"num_steps": 2},
    "rf_inversion": {"num_steps": 2},
    "uniedit_flow": {"num_steps": 2},
}
# editor config -> overrides that make its own window reach a 2-step run: MasaCtrl's mutual attention starts at step
# 4 of the run (never, in 2 steps); FlowEdit runs its own step count
EDITOR_SMALLEST = {
    "masactrl": {"start_step": 1},
    "masactrl_source_prompt": {"start_step": 1},
    "flowedit": {"num_steps": 2, "n_max": 2},
    "flowedit_sd3": {"num_steps": 2, "n_max": 2},
}
BASE_INVERSION = {"sd": "ddim", "sdxl": "ddim", "sd3": "flow", "flux": "flow"}  # what each editor runs after
# each editor's PIE-Bench partner inversion (its reference script's pairing), where it is not ddim
PARTNERS = {
    "pnp": ["directinversion"],
    "pnp_aligned": ["directinversion"],
    "masactrl": ["directinversion"],
    "masactrl_source_prompt": ["directinversion"],
    "p2p_edict": ["edict"],
    "p2p_edit_friendly": ["edit_friendly"],
    "p2p_stylediffusion": ["stylediffusion"],
    "pix2pix_zero": ["pix2pix_zero"],
    "pix2pix_zero_shared": ["pix2pix_zero"],
}
SAMPLE_CATEGORY = 1  # the cat photo (change object): prompts with a blended word, as P2P's local blend needs


def method_configs(axis: str, family: str) -> list[str]:
    """conf/<axis>/*.yaml stems whose method works on `family`."""
    sys.path.insert(0, str(ROOT))
    from editors import EDITORS
    from inversions import INVERSIONS

    registry = INVERSIONS if axis == "inversion" else EDITORS
    names = []
    for path in sorted((CONF / axis).glob("*.yaml")):
        node = yaml.safe_load(path.read_text())
        while "name" not in node:  # a variant composed from its base
            base = next(item for item in node["defaults"] if item != "_self_")
            node = yaml.safe_load((CONF / axis / f"{base}.yaml").read_text())
        if family in registry.get(node["name"]).families:
            names.append(path.stem)
    return names


def all_pairs(family: str) -> list[tuple[str, str]]:
    """Every inversion configuration of the family with `direct` and `p2p` (where P2P applies); every editor
    configuration with the family's plain inversion; each editor with its partner inversions. Pairs the pair checks
    refuse (an editor made for one inversion) are left out."""
    inversions, editors = method_configs("inversion", family), method_configs("editor", family)
    base = BASE_INVERSION[family]
    pairs = [(inversion, editor) for inversion in inversions for editor in ("direct", "p2p") if editor in editors]
    pairs += [(base, editor) for editor in editors if editor not in ("direct", "p2p")]
    pairs += [(inversion, editor) for editor, partners in PARTNERS.items() if editor in editors
              for inversion in partners if inversion in inversions]  # fmt: skip
    pairs += [(inversion, editor) for editor in editors for inversion in inversions
              if inversion in pairs_with(editor)]  # fmt: skip
    return [pair for pair in dict.fromkeys(pairs) if composes(*pair)]


@cache
def composed(axis: str, name: str) -> dict:
    """conf/<axis>/<name>.yaml as launch.py composes it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return OmegaConf.to_container(compose("config", [f"{axis}={name}"])[axis], resolve=True)


def pairs_with(editor: str) -> set[str]:
    """The inversion configurations an editor is made for (its `pairs_with`), or none."""
    from editors import EDITORS

    allowed = EDITORS.get(composed("editor", editor)["name"]).pairs_with or frozenset()
    return {path.stem for path in (CONF / "inversion").glob("*.yaml") if composed("inversion", path.stem).get("name")
            in allowed}  # fmt: skip


def composes(inversion: str, editor: str) -> bool:
    from editors import EDITORS
    from inversions import INVERSIONS
    from orchestration.compatibility import incompatibilities

    built = INVERSIONS.build(composed("inversion", inversion)), EDITORS.build(composed("editor", editor))
    return not incompatibilities(*built)


def sweep(pairs: list[tuple[str, str]], args: argparse.Namespace, folder: Path) -> tuple[int, str, float]:
    """One local sweep over `pairs` (all with the same inversion settings): each pair is a job of its own."""
    inversions = sorted({inversion for inversion, _ in pairs})
    editors = sorted({editor for _, editor in pairs})
    settings = SMALLEST.get(inversions[0], {})
    editor_settings = EDITOR_SMALLEST.get(editors[0], {})
    overrides = [
        f"inversion={','.join(inversions)}", f"editor={','.join(editors)}", f"model={args.model}",
        f"model.resolution={args.resolution}", f"num_steps={args.steps}", f"dataset.categories=[{SAMPLE_CATEGORY}]",
        "metrics.backbones=tiny", f"device={args.device}", f"hydra.sweep.dir={folder}",
        *(f"++inversion.{key}={value}" for key, value in settings.items()),
        *(f"++editor.{key}={value}" for key, value in editor_settings.items()), *args.extra,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "-m", *overrides], capture_output=True, text=True, check=False,
        cwd=folder.parent,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - started


def grouped(pairs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Pairs in sweeps that share their settings and are full grids (a sweep runs every inversion × editor)."""
    by_settings: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for inversion, editor in pairs:
        key = json.dumps([SMALLEST.get(inversion, {}), EDITOR_SMALLEST.get(editor, {})], sort_keys=True)
        by_settings[key][editor].add(inversion)
    groups = []
    for editors in by_settings.values():
        by_inversions: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for editor, inversions in editors.items():
            by_inversions[tuple(sorted(inversions))].append(editor)
        for inversions, editor_list in by_inversions.items():
            groups.append([(inversion, editor) for inversion in inversions for editor in sorted(editor_list)])
    return groups


def row_of(pair: tuple[str, str], rows: dict[tuple[str, str], dict], outputs: str) -> dict:
    inversion, editor = pair
    row = rows.get(pair)
    settings = ", ".join([f"inversion.{k}={v}" for k, v in SMALLEST.get(inversion, {}).items()]
                         + [f"editor.{k}={v}" for k, v in EDITOR_SMALLEST.get(editor, {}).items()])  # fmt: skip
    if row is None:
        return {"pair": f"{inversion}+{editor}", "status": "no row", "settings": settings,
                "reason": outputs.strip().splitlines()[-1] if outputs.strip() else "no output"}  # fmt: skip
    return {
        "pair": f"{inversion}+{editor}",
        "status": row["status"],
        "reason": row.get("error") or "",
        "settings": settings,
        "seconds": row.get("total_seconds"),
        "inversion_seconds": row.get("inversion_seconds"),
        "edit_seconds": row.get("edit_seconds"),
        "peak_rss_mb": row.get("peak_memory_mb"),
        "evals": (row.get("inversion_unet_evals") or 0) + (row.get("edit_unet_evals") or 0),
        "backward_evals": (row.get("inversion_unet_backward_evals") or 0) + (row.get("edit_unet_backward_evals") or 0),
        "largest_attention_map_mb": row.get("largest_attention_map_mb"),
        "inversion_reused": row.get("inversion_reused"),
    }


def pair_rows(folder: Path) -> dict[tuple[str, str], dict]:
    found = {}
    for results in folder.glob("*/results.jsonl"):
        overrides = dict(
            item.split("=", 1) for item in yaml.safe_load((results.parent / ".hydra" / "overrides.yaml").read_text())
        )
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        if rows:
            found[(overrides["inversion"], overrides["editor"])] = rows[-1]
    return found


def markdown(table: list[dict], header: str) -> str:
    def number(value, digits=1):
        return "" if value is None else f"{value:.{digits}f}"

    columns = (
        "| pair | status | seconds | peak RSS (MB) | evals fwd | evals bwd | largest attention map (MB) | settings |"
    )
    lines = [header, "", columns, "|---|---|---|---|---|---|---|---|"]
    for row in table:
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row['reason']}"
        lines.append(
            f"| {row['pair']} | {status.replace('|', '/')} | {number(row.get('seconds'))} | "
            f"{number(row.get('peak_rss_mb'), 0)} | {number(row.get('evals'), 0)} | "
            f"{number(row.get('backward_evals'), 0)} | {number(row.get('largest_attention_map_mb'), 0)} | "
            f"{row['settings']} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)  # fmt: skip
    return f"{cpu}, {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sd14_random")
    parser.add_argument("--family", default="sd", help="which methods to pair (default: %(default)s)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", nargs="*", help="inversion+editor pairs (default: all, see the docstring)")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every job")
    parser.add_argument("--work", type=Path, default=Path("real_size_runs"), help="where the sweeps run")
    parser.add_argument("--out", type=Path, help="write the table here (.md) and beside it as .json")
    parser.add_argument(
        "--update", action="store_true", help="rerun only --pairs and replace their rows in --out's table"
    )
    args = parser.parse_args(argv)
    if args.update and not (args.out and args.pairs and args.out.with_suffix(".json").is_file()):
        parser.error("--update reruns --pairs into an existing table: give --pairs and the --out of that table")
    pairs = [tuple(pair.split("+")) for pair in args.pairs] if args.pairs else all_pairs(args.family)
    args.work.mkdir(parents=True, exist_ok=True)
    table, started = [], time.perf_counter()
    for number, group in enumerate(grouped(pairs)):
        folder = (args.work / f"sweep{number}").resolve()
        code, outputs, seconds = sweep(group, args, folder)
        rows = pair_rows(folder)
        print(f"sweep {number}: {len(group)} pairs, exit {code}, {seconds:.0f} s", flush=True)
        if code < 0:  # the process was killed: its last log line is not the reason
            outputs += f"\nthe sweep was killed by signal {-code}" + (
                " (the kernel's out-of-memory killer)" if code == -9 else ""
            )
        table += [row_of(pair, rows, outputs) for pair in group]
    header = (
        f"{args.model} at {args.resolution}², {args.steps} steps{''.join(f', {extra}' for extra in args.extra)}, "
        "one sample, metrics on (tiny backbones); "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, {machine()}, {args.device}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    if args.update:  # the other rows as the table has them
        kept = json.loads(args.out.with_suffix(".json").read_text())
        rerun = {row["pair"] for row in table}
        table += [row for row in kept["rows"] if row["pair"] not in rerun]
        header = (
            f"{kept['header']}; rerun {datetime.now(timezone.utc):%Y-%m-%d}: {', '.join(sorted(rerun))} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    table.sort(key=lambda row: row["pair"])
    text = markdown(table, header)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": table}, indent=1) + "\n")
    return 0 if all(row["status"] == "ok" for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
