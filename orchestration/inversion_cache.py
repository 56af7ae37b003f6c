"""Inversions shared by the jobs of a sweep (`inversion_cache: true`, the default for `launch.py -m`).

`-m inversion=ddim editor=direct,p2p` would invert every sample once per editor. The first job to invert a sample
stores the result in `<sweep folder>/inversion_cache/<key>.pt`; a later job needing the same inversion (same model,
scheduler, device, inversion hyperparameters, seed, image bytes, and the sample as its editor prepares it:
MasaCtrl's "" source prompt is another inversion) loads it instead. With it go the inversion's cost, so that each
row still reports what its method costs, and the state of every random generator after the inversion, so that the
edit draws what it would have drawn: a reused inversion gives the outputs of a computed one. Rows say which it was
(`inversion_reused`). Writes are atomic (a temporary file, then a rename), so jobs on several nodes may fill the
cache at once; an unreadable entry is computed again. Editors that observe the inversion while it runs (RF-Edit)
neither read nor fill it.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from invbench.digests import SPACED, json_digest
from invbench.paths import PARTIAL_SUFFIX, remove_quietly, temporary_sibling, writing

log = logging.getLogger(__name__)

CACHE_FOLDER = "inversion_cache"
COST_KEYS = ("inversion_seconds", "inversion_unet_evals", "inversion_unet_calls", "inversion_unet_backward_evals")


def cache_key(defining: Mapping[str, Any], image_sha256: str, sample: Any) -> str:
    """What makes two jobs' inversions of a sample the same computation."""
    prepared = {
        "entry": sample.entry_sha256,
        "source_prompt": sample.source_prompt,
        "target_prompt": sample.target_prompt,
        "blended_words": sample.blended_words,
        "edit_class": sample.edit_class,
    }
    return json_digest({"defining": defining, "image": image_sha256, "sample": prepared}, separators=SPACED)[:32]


class InversionCache:
    def __init__(self, folder: Path, device: torch.device):
        self.folder, self.device = folder, device

    def load(self, key: str) -> dict[str, Any] | None:
        """The entry stored under `key`, or None: absent, unreadable or not the entry of that key (each recomputed,
        never fatal)."""
        path = self.folder / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as error:
            log.warning("inversion cache entry %s is unreadable (%s); computing the inversion again", path, error)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            found = entry.get("key") if isinstance(entry, dict) else type(entry).__name__
            log.warning("inversion cache entry %s holds the entry of key %s, not its own; computing the inversion "
                        "again", path, found)  # fmt: skip
            return None
        return entry

    def store(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store an entry with its own key in it (checked on load). Serialised in memory first, so that a failed
        write (a full disk: OutputFault) leaves no partial entry behind."""
        path = self.folder / f"{key}.pt"
        buffer = io.BytesIO()
        torch.save({**entry, "key": key}, buffer)
        temporary = temporary_sibling(path)
        with writing("store an inversion in the sweep's cache", path):
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                temporary.write_bytes(buffer.getbuffer())
                os.replace(temporary, path)
            finally:
                remove_quietly(temporary)

    def remove_stale_partials(self, older_than_s: float = 3600) -> list[Path]:
        """Half-written entries of writers that were killed (an entry takes well under a second to write, so one
        older than `older_than_s` has no live writer, on this node or another)."""
        import time

        if not self.folder.is_dir():
            return []
        stale = [
            path
            for path in self.folder.glob(f".*{PARTIAL_SUFFIX}")
            if time.time() - path.stat().st_mtime > older_than_s
        ]
        for path in stale:
            remove_quietly(path)
        return stale
