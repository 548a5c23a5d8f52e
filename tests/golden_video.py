"""Frame hashes of the shipped video models, recorded before the shared-pipeline refactor (issue 12).

``python tests/golden_video.py`` rewrites ``tests/data/video_hashes.json`` (run it only on a commit
whose output is known good); ``tests/test_user_visible.py`` recomputes every case and compares.
Each case is a public ``VideoPipeline`` call; the hash is SHA-256 of the uint8 frames ``[b f h w 3]``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

HASHES = Path(__file__).resolve().parent / "data" / "video_hashes.json"

CASES: dict[str, dict] = {
    # name -> (model, keyword arguments of VideoPipeline.__call__, autocast, micro_batch)
    "dit-default": {"model": "shapes-dit", "prompt": "a yellow triangle moving up", "seed": 0},
    "dit-fp32": {"model": "shapes-dit", "prompt": "a red circle moving right", "seed": 3, "autocast": False},
    "dit-batch-negative-euler": {
        "model": "shapes-dit",
        "prompt": ["a blue square moving left", "a green circle moving down"],
        "negative_prompt": "a red square",
        "sampler": "euler",
        "steps": 8,
        "guidance_scale": 3.0,
        "num_videos": 2,
        "seed": 11,
        "autocast": False,
        "micro_batch": None,  # recorded with the whole batch in one call (a CPU now runs one item at a time)
    },
    "dit-heun-long": {
        "model": "shapes-dit",
        "prompt": "a yellow square moving down",
        "sampler": "heun",
        "steps": 6,
        "num_frames": 25,
        "seed": 5,
        "autocast": False,
    },
    "unet3d-default": {"model": "shapes-unet3d", "prompt": "a yellow triangle moving up", "seed": 0},
    "unet3d-fp32-ddim": {
        "model": "shapes-unet3d",
        "prompt": "a red circle moving left",
        "sampler": "ddim",
        "steps": 10,
        "seed": 7,
        "autocast": False,
    },
}


def cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (``GenuineIntel``, ``AuthenticAMD``), or "" where there is none."""
    import re

    from mediadiff.utils import cpuinfo

    found = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo(), flags=re.M)
    return found.group(1) if found else ""


def frames_hash(case: dict) -> str:
    """SHA-256 of the frames one case generates (on one thread)."""
    from mediadiff import VideoPipeline

    kwargs = dict(case)
    model = kwargs.pop("model")
    autocast = kwargs.pop("autocast", None)
    pipe = VideoPipeline.from_pretrained(model)
    pipe.autocast = autocast
    pipe.micro_batch = kwargs.pop("micro_batch", pipe.micro_batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = pipe(**kwargs)
    finally:
        torch.set_num_threads(threads)
    return hashlib.sha256(out.frames.tobytes()).hexdigest()


def main() -> None:
    from mediadiff.utils import cpu_bf16_supported

    hashes = {name: frames_hash(case) for name, case in CASES.items()}
    record = {
        "torch": torch.__version__, "cpu_bf16": cpu_bf16_supported(), "cpu_vendor": cpu_vendor(), "hashes": hashes,
    }  # fmt: skip
    HASHES.write_text(json.dumps(record, indent=2) + "\n")
    json.dump(record, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
