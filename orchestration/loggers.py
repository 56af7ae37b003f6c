"""The logger axis: where a job reports besides its own folder (`logger=none|wandb`, conf/logger/).

`wandb` makes one Weights & Biases run per job folder: the resolved configuration, one step per sample (its
metrics and costs), and at the end a table of every sample with its edited image and reconstruction, plus the
means as the run summary. The run id is kept in the job folder, so a resumed or requeued job continues the same
wandb run. `mode=offline` (the default) writes under `<job folder>/wandb/` for a later `wandb sync`; `disabled`
writes nothing. `aggregate.py --wandb-project` pushes the tables, figures and coverage with `push_report`.
"""

from __future__ import annotations

import os
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd

from invbench.errors import ConfigError
from invbench.registry import Registry

WANDB_MODES = ("online", "offline", "disabled")
RUN_ID_FILE = "wandb_run_id"


class RunLogger(ABC):
    name: ClassVar[str]

    @abstractmethod
    def start(self, config: dict[str, Any], output_dir: Path, group: str) -> None:
        """Open the job's run; `group` names the sweep (or the single run) it belongs to."""

    @abstractmethod
    def log_sample(self, row: dict[str, Any]) -> None:
        """Report one finished sample's row."""

    @abstractmethod
    def finish(self, rows: pd.DataFrame) -> None:
        """Close the run with the job's rows (all of them, including those of earlier attempts)."""


LOGGERS: Registry[RunLogger] = Registry("logger")


@LOGGERS.register("none")
@dataclass
class NoLogger(RunLogger):
    """Rows go to the job folder only."""

    def start(self, config: dict[str, Any], output_dir: Path, group: str) -> None:
        pass

    def log_sample(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, rows: pd.DataFrame) -> None:
        pass


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"}


@LOGGERS.register("wandb")
@dataclass
class WandbLogger(RunLogger):
    project: str
    entity: str | None
    mode: Literal["online", "offline", "disabled"]
    group: str | None
    tags: list[str]
    log_images: bool
    _run: Any = field(default=None, init=False, repr=False)
    _output_dir: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"conf/logger/wandb.yaml: mode '{self.mode}' must be one of {WANDB_MODES}")

    def start(self, config: dict[str, Any], output_dir: Path, group: str) -> None:
        import wandb

        id_file = output_dir / RUN_ID_FILE
        if not id_file.exists():
            id_file.write_text(secrets.token_hex(4) + "\n", encoding="utf-8")
        os.environ.setdefault("WANDB_SILENT", "true")
        self._output_dir = output_dir
        self._run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            group=self.group or group,
            name=output_dir.name,
            job_type="job",
            tags=list(self.tags),
            config=config,
            dir=output_dir,
            id=id_file.read_text(encoding="utf-8").strip(),
            resume="allow",
        )

    def log_sample(self, row: dict[str, Any]) -> None:
        self._run.log({"status_ok": int(row["status"] == "ok"), **_numbers(row)})

    def finish(self, rows: pd.DataFrame) -> None:
        import wandb

        columns = ["sample_id", "category", "status", "error", "target_prompt"]
        metrics = sorted({key for row in rows.to_dict("records") for key in _numbers(row)})
        images = ["edited", "reconstruction"] if self.log_images else []
        table = wandb.Table(columns=columns + images + metrics)
        for row in rows.to_dict("records"):
            pictures = [
                wandb.Image(str(self._output_dir / row[f"{kind}_image"]))
                if row["status"] == "ok" and isinstance(row.get(f"{kind}_image"), str)
                else None
                for kind in images
            ]
            table.add_data(*[row.get(c) for c in columns], *pictures, *[row.get(m) for m in metrics])
        ok = rows[rows["status"] == "ok"]
        summary = {f"mean/{key}": float(ok[key].mean()) for key in metrics if key in ok and ok[key].notna().any()}
        self._run.log({"samples": table})
        self._run.summary.update(summary | {"samples_ok": len(ok), "samples_failed": len(rows) - len(ok)})
        self._run.finish()


def push_report(report, jobs: pd.DataFrame, out: Path, project: str, mode: str) -> str:
    """Log aggregate.py's tables (as wandb tables), figures and coverage in one run of job_type 'aggregate'."""
    import wandb

    if mode not in WANDB_MODES:
        raise ConfigError(f"--wandb-mode {mode}: must be one of {WANDB_MODES}")
    run = wandb.init(project=project, mode=mode, job_type="aggregate", dir=out, name=f"aggregate {out.name}")
    logged = {f"table/{stem}": wandb.Table(dataframe=table.cells) for stem, table in report.tables.items()}
    logged["coverage"] = wandb.Table(dataframe=jobs.astype(str))
    logged |= {f"figure/{p.stem}": wandb.Image(str(p)) for p in report.files if p.suffix == ".png"}
    run.log(logged)
    where = run.dir
    run.finish()
    return f"wandb ({mode}): logged {len(logged)} tables and figures to project '{project}' ({where})"
