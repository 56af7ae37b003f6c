"""invbench never touches the network during a run: weights come from local folders and caches only.

`stay_offline()` puts the Hugging Face libraries into offline mode through their environment variables. They read
these once, when huggingface_hub is first imported, so the entry points (launch.py, score.py, through
orchestration/cli.py) call it before anything imports a model library; setting them inside a job is too late (a job then
still looked up the hub while loading a cached backbone, even with local_files_only). Whatever the shell says, a run
is offline; downloading weights is a separate step done on purpose (docs/models.md).
"""

from __future__ import annotations

import os
import sys

OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub, diffusers, transformers: local files only, no requests
    "TRANSFORMERS_OFFLINE": "1",  # older transformers read this one
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def stay_offline() -> None:
    """Set the offline variables. Where huggingface_hub is already imported (an interactive session that imported
    invbench late), also switch its module-level flag, which its own calls read; copies other libraries made at
    their import cannot be reached, which is why the entry points call this first."""
    os.environ.update(OFFLINE_ENVIRONMENT)
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
