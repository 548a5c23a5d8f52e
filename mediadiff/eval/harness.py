"""The generate -> score -> report harness, for any modality that supplies an :class:`EvalTask`.

For each prompt split, :func:`evaluate` asks the model for ``num`` clips (clip ``i`` of every split from
noise seed ``i``, in batches), has the task's detector read the prompt's attributes back and its
feature function describe each clip, and reports per split: accuracies with Wilson intervals
(:func:`~.accuracy.accuracy_report`), the Frechet distance (Heusel et al. 2017, Eq. 6) to a reference
set of real clips in the task's standardised feature space (:func:`~.frechet.feature_fd`), that FD over
the *floor* (the FD of the real clips the prompts describe, which share the generated sets' label mix:
a perfect model scores ``fd / floor`` about 1), the per-feature 1-D FDs and every clip's reading. Two
independent real sets give the chance FD (``real_vs_real_fd``); an autoencoder round trip of the
prompts' real clips, when given, shows what a latent model can reach at best. With ``num`` clips the
FD carries an upward bias of order ``d^2 / num`` (``d`` features) that the floor shares: compare FDs at
the same ``num`` only.

A modality writes its task (attributes and classes, features, detector, prompts, real clips) and its
command's few lines (:mod:`~.command`); it copies nothing of this loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .accuracy import accuracy_report
from .frechet import Feature, feature_fd, marginal_fd

__all__ = [
    "GRID_CLIPS",
    "ROW_NAMES",
    "TEMPLATE_ROW_NAMES",
    "EvalTask",
    "Generate",
    "RealSets",
    "Reconstruct",
    "check_grid",
    "evaluate",
    "format_steps_table",
    "format_table",
    "pipeline_generator",
    "publish",
    "publish_steps",
    "read_real_sets",
    "run_settings",
    "write_report",
]

GRID_CLIPS = 32  # clips per split in the optional sample grid

Generate = Callable[[list[str], list[int]], np.ndarray]
"""A model under evaluation: ``generate(prompts, seeds) -> [b *clip_shape]``, clip ``i`` from ``seeds[i]``."""
Reconstruct = Callable[[np.ndarray], np.ndarray]
"""An autoencoder round trip: clips ``[b *clip_shape]`` -> clips of the same shape and dtype."""


class EvalTask(Protocol):
    """What a modality supplies to :func:`evaluate` (video: ``ShapesTask``; audio: a Tones task).

    The items of every split share their labels (clip ``i`` of each split describes the same real
    clip ``i`` of seed :attr:`prompt_seed`); only the wording differs.
    """

    name: str  # the modality's word, as in ``mediadiff eval NAME``: progress bar and messages
    real_name: str  # the synthetic set the real clips come from ("Shapes"), for the report's words
    classes: Mapping[str, Sequence[str]]  # attribute -> class names the detector reads back
    feature_table: Sequence[Feature]  # the FD feature space, in the order of features()' columns
    splits: Sequence[str]  # prompt sets, reported separately; the first also labels the real rows
    row_names: Mapping[str, str]  # table row name of each split
    prompt_seed: int  # seed of the real clips the prompts describe (the floor set); never trained on
    real_seeds: tuple[int, int]  # seeds of the reference and of a second independent real set
    clip_shape: tuple[int, ...]  # one clip's shape: clips are [b *clip_shape]
    clip_dtype: Any  # their dtype (np.uint8 for frames)
    info: Mapping[str, Any]  # the clip format, written into the report after "num" (e.g. num_frames, size)
    grid_suffix: str | None  # file suffix of a sample grid (".gif"); None when the task writes none

    def features(self, clips: np.ndarray) -> np.ndarray:
        """Clips ``[b *clip_shape]`` -> float features ``[b len(feature_table)]``."""
        ...

    def read(self, clips: np.ndarray) -> list[dict[str, str]]:
        """What the detector reads from each clip: ``[{attribute: class}]``, one per clip."""
        ...

    def items(self, num: int, split: str) -> list[dict[str, Any]]:
        """The first ``num`` prompts of ``split``: each ``{"text": caption, attribute: class, ...}``."""
        ...

    def real(self, num: int, seed: int, start: int = 0) -> np.ndarray:
        """Real clips ``start .. start+num-1`` of ``seed``: ``[num *clip_shape]``, quantised as a model's."""
        ...

    def save_grid(self, clips: np.ndarray, path: Path) -> None:
        """Write clips ``[k *clip_shape]`` as one sample grid file (only when :attr:`grid_suffix` is set)."""
        ...


@dataclass
class _Read:
    """Features and detector readings of a set of clips, gathered chunk by chunk."""

    task: EvalTask
    feats: list[np.ndarray] = field(default_factory=list)
    found: list[dict[str, str]] = field(default_factory=list)

    def add(self, clips: np.ndarray) -> None:
        self.feats.append(self.task.features(clips))  # [c d]
        self.found += self.task.read(clips)

    @property
    def matrix(self) -> np.ndarray:
        return np.concatenate(self.feats)  # [n d]


def _check_clips(clips: Any, expected: tuple[int, ...], dtype: Any, who: str) -> np.ndarray:
    clips = np.asarray(clips)
    dtype = np.dtype(dtype)
    if clips.shape != expected or clips.dtype != dtype:
        raise ValueError(f"evaluate: {who} returned {clips.dtype} {clips.shape}, expected {dtype} {expected}")
    return clips


def _read_real(
    task: EvalTask, num: int, seed: int, reconstruct: Reconstruct | None = None, chunk: int = 50
) -> tuple[_Read, _Read | None]:
    """Read ``num`` real clips of ``seed`` (and their autoencoder round trips), in chunks to bound memory."""
    real, rebuilt = _Read(task), (_Read(task) if reconstruct is not None else None)
    for start in range(0, num, chunk):
        clips = task.real(min(chunk, num - start), seed, start)  # [c *clip_shape]
        real.add(clips)
        if reconstruct is not None:
            rebuilt.add(_check_clips(reconstruct(clips), clips.shape, clips.dtype, "reconstruct"))
    return real, rebuilt


def _row(
    task: EvalTask, read: _Read, labels: Sequence[Mapping[str, Any]], reference: np.ndarray, floor: float
) -> dict[str, Any]:
    """Accuracy report, FD to the reference, FD / floor and per-feature FDs of one set of clips."""
    resolution = [ft.resolution for ft in task.feature_table]  # [d]
    feats = read.matrix  # [n d]
    fd = feature_fd(feats, reference, reference, resolution)
    row = accuracy_report(read.found, labels, task.classes)
    row.update(
        fd=round(fd, 4),
        fd_ratio=round(fd / floor, 3) if floor > 0 else float("inf"),
        fd_marginal=marginal_fd(
            feats, reference, reference, resolution, [ft.name for ft in task.feature_table]
        ),
    )
    return row


@dataclass
class RealSets:
    """The real clips' part of a report, read once by :func:`read_real_sets` and shared by every
    :func:`evaluate` of the same task, ``num`` and seeds (a sweep over sampling settings)."""

    num: int
    real_seeds: tuple[int, int]
    reference: np.ndarray  # [num d] features of the reference real set (seed real_seeds[0])
    floor: float  # FD of the prompts' real clips to the reference
    report: dict[str, Any]  # num, the task's info, floor_fd, real_vs_real_fd, features, real (, autoencoder)
    seconds: float  # reading them, the round trips excepted
    autoencoder_s: float  # the autoencoder round trips


def _check_settings(
    task: EvalTask, num: int, splits: Sequence[str], batch_size: int, real_seeds: tuple[int, ...]
) -> None:
    if num < 2:
        raise ValueError(f"evaluate: num must be >= 2 (a covariance needs two clips), got {num}")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    if not splits or any(s not in task.splits for s in splits):
        raise ValueError(f"evaluate: splits must be among {tuple(task.splits)}, got {list(splits)}")
    if len(real_seeds) != 2 or len(set(real_seeds)) != 2 or task.prompt_seed in real_seeds:
        raise ValueError(
            f"evaluate: real_seeds must be two seeds other than {task.prompt_seed}, got {real_seeds}"
        )


def check_grid(task: EvalTask, grid: str | Path | None) -> None:
    """ValueError unless ``grid`` is None or a path with the task's grid suffix (what :func:`evaluate`
    checks before it starts; a sweep checks it before it reads the real sets)."""
    if grid is not None and (task.grid_suffix is None or Path(grid).suffix.lower() != task.grid_suffix):
        raise ValueError(f"evaluate: grid must be a {task.grid_suffix} path, got {str(grid)!r}")


def read_real_sets(
    task: EvalTask,
    *,
    num: int,
    real_seeds: tuple[int, int] | None = None,
    reconstruct: Reconstruct | None = None,
) -> RealSets:
    """Read the reference and second real sets (``real_seeds``, default the task's), the ``num`` real
    clips the prompts describe and, when ``reconstruct`` is given, their autoencoder round trips: the
    rows :func:`evaluate` reports beside the generated ones (``real``, ``autoencoder``, the floor)."""
    real_seeds = tuple(task.real_seeds) if real_seeds is None else tuple(real_seeds)
    _check_settings(task, num, task.splits, 1, real_seeds)
    autoencoder_s = 0.0
    if reconstruct is not None:
        inner = reconstruct

        def reconstruct(clips: np.ndarray) -> np.ndarray:
            nonlocal autoencoder_s
            t = time.perf_counter()
            out = inner(clips)
            autoencoder_s += time.perf_counter() - t
            return out

    t0 = time.perf_counter()
    reference = _read_real(task, num, real_seeds[0])[0].matrix  # [num d]
    partner = _read_real(task, num, real_seeds[1])[0].matrix  # [num d]
    prompt_real, rebuilt = _read_real(task, num, task.prompt_seed, reconstruct)
    resolution = [ft.resolution for ft in task.feature_table]  # [d]
    floor = feature_fd(prompt_real.matrix, reference, reference, resolution)
    labels = task.items(num, task.splits[0])  # the prompts' labels (the same for every split)
    report: dict[str, Any] = {
        "num": num,
        **task.info,
        "floor_fd": round(floor, 4),
        "real_vs_real_fd": round(feature_fd(partner, reference, reference, resolution), 4),
        "features": [ft.name for ft in task.feature_table],
        "real": _row(task, prompt_real, labels, reference, floor),
    }
    if rebuilt is not None:
        report["autoencoder"] = _row(task, rebuilt, labels, reference, floor)
    seconds = time.perf_counter() - t0 - autoencoder_s
    return RealSets(num, real_seeds, reference, floor, report, seconds, autoencoder_s)


def evaluate(
    task: EvalTask,
    generate: Generate,
    *,
    num: int,
    splits: Sequence[str] | None = None,
    batch_size: int = 8,
    real_seeds: tuple[int, int] | None = None,
    reconstruct: Reconstruct | None = None,
    grid: str | Path | None = None,
    progress: bool = True,
    reals: RealSets | None = None,
) -> dict[str, Any]:
    """Generate ``num`` clips per split, score prompt following and FD against real clips; returns the report.

    ``generate(prompts, seeds)`` must return ``[b *task.clip_shape]`` of ``task.clip_dtype``; ``splits``
    and ``real_seeds`` default to the task's. The report holds ``num``, the task's ``info``, and:

    - ``splits[split]``: accuracies, per-class accuracies and confusions (:func:`~.accuracy.accuracy_report`),
      the FD to the reference real set (seed ``real_seeds[0]``), ``fd_ratio = fd / floor_fd``, the
      per-feature 1-D FDs (``fd_marginal``), and every clip's index, caption, labels and reading;
    - ``real``: the same for the real clips the prompts describe (seed ``task.prompt_seed``, items
      ``0..num-1``); their FD to the reference is ``floor_fd``;
    - ``real_vs_real_fd``: FD between two independent real sets (``real_seeds``), for the chance spread;
    - ``autoencoder`` (when ``reconstruct`` is given): the same for the prompts' real clips after the
      round trip, what a latent model can reach at best;
    - ``timing``: generation seconds (and per clip), the autoencoder round trips' seconds, and the
      seconds of everything else (real clips, features, detection, FD, the grid).

    ``reals``: the real sets already read (:func:`read_real_sets` with this ``num``; ``real_seeds`` and
    ``reconstruct`` are then theirs), so that several evaluations of one task (a sweep over sampling
    steps) read them once; their seconds are not in this report's ``timing``.

    ``grid``: write the first :data:`GRID_CLIPS` clips of each split with ``task.save_grid``
    (``NAME-SPLIT.SUFFIX`` when there are several splits) and their prompts beside it (``.txt``).
    """
    from tqdm.auto import tqdm

    splits = tuple(task.splits) if splits is None else tuple(splits)
    if reals is not None:
        if reals.num != num:
            raise ValueError(f"evaluate: the real sets were read for num={reals.num}, not {num}")
        real_seeds = reals.real_seeds
    real_seeds = tuple(task.real_seeds) if real_seeds is None else tuple(real_seeds)
    _check_settings(task, num, splits, batch_size, real_seeds)
    check_grid(task, grid)

    own = reals is None
    if own:
        reals = read_real_sets(task, num=num, real_seeds=real_seeds, reconstruct=reconstruct)
    reference, floor = reals.reference, reals.floor
    report: dict[str, Any] = {**reals.report, "splits": {}}
    overhead, generation = (reals.seconds if own else 0.0), 0.0

    bar = tqdm(total=num * len(splits), desc=f"eval {task.name}", unit="clip", disable=not progress)
    for split in splits:
        items = task.items(num, split)
        read, kept = _Read(task), []
        for start in range(0, num, batch_size):
            chunk = items[start : start + batch_size]
            t1 = time.perf_counter()
            clips = generate([it["text"] for it in chunk], list(range(start, start + len(chunk))))
            generation += time.perf_counter() - t1
            t1 = time.perf_counter()
            expected = (len(chunk), *task.clip_shape)
            clips = _check_clips(clips, expected, task.clip_dtype, "generate")  # [c *clip_shape]
            read.add(clips)
            kept += list(clips[: max(GRID_CLIPS - len(kept), 0)])
            overhead += time.perf_counter() - t1
            bar.update(len(chunk))
        t1 = time.perf_counter()
        row = _row(task, read, items, reference, floor)
        row["clips"] = [
            {
                "index": i,
                "text": it["text"],
                **{k: it[k] for k in task.classes},
                "read": {k: r[k] for k in task.classes},
            }
            for i, (it, r) in enumerate(zip(items, read.found))
        ]
        if grid is not None:
            path = Path(grid)
            if len(splits) > 1:
                path = path.with_name(f"{path.stem}-{split}{path.suffix}")
            task.save_grid(np.stack(kept), path)  # [k *clip_shape]
            path.with_suffix(".txt").write_text("\n".join(it["text"] for it in items[: len(kept)]) + "\n")
            row["grid"] = str(path)
        report["splits"][split] = row
        overhead += time.perf_counter() - t1
    bar.close()
    report["timing"] = {
        "generation_s": round(generation, 2),
        "seconds_per_clip": round(generation / (num * len(splits)), 4),
        "autoencoder_round_trip_s": round(reals.autoencoder_s if own else 0.0, 2),
        "eval_overhead_s": round(overhead, 2),
    }
    return report


def pipeline_generator(pipe: Any, *, output: str, **settings: Any) -> Generate:
    """Wrap a pipeline (``pipe(prompts, seed=, **settings)``) as a :data:`Generate`.

    ``output`` names the attribute of the pipeline's result that holds the clips (``"frames"`` for
    video); ``settings`` go to every call (``steps``, ``sampler``, ``guidance_scale``, sizes; None
    takes the pipeline's default). The pipeline draws clip ``i`` of a call from seed ``seed + i``;
    consecutive seeds go in one batched call, any other seeds one clip at a time. A pipeline whose
    ``micro_batch`` is ``"auto"`` runs each call's batch at once (``micro_batch=None``), as the recorded
    evaluation tables were made: on a CPU this is faster than item by item (1.9x for audio) and the
    accuracies do not depend on it, but its results depend on ``--batch-size`` to float rounding.
    """
    if getattr(pipe, "micro_batch", None) == "auto":
        pipe.micro_batch = None

    def call(prompts: list[str], seed: int) -> np.ndarray:
        clips = getattr(pipe(prompts, seed=seed, **settings), output)
        return clips.numpy() if hasattr(clips, "numpy") else np.asarray(clips)  # [b *clip_shape]

    def generate(prompts: list[str], seeds: list[int]) -> np.ndarray:
        seeds = [int(s) for s in seeds]
        if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
            return call(list(prompts), seeds[0])
        return np.concatenate([call([p], s) for p, s in zip(prompts, seeds)])  # [b *clip_shape]

    return generate


# --------------------------------------------------------------------------- report

ROW_NAMES = {"real": "real clips of the prompts (floor)", "autoencoder": "autoencoder round trip of them"}
TEMPLATE_ROW_NAMES = {"train": "train-template prompts", "heldout": "held-out-template prompts"}
"""Row names of the two caption splits every procedural task has (training and held-out templates)."""


def format_table(report: Mapping[str, Any], row_names: Mapping[str, str] | None = None) -> str:
    """The report as a plain-text table: the real rows, then one row per split; accuracies in % with
    their 95% Wilson intervals (Wilson 1927), FD (Heusel et al. 2017, Eq. 6), the floor and FD / floor.

    The accuracy columns are the report's attributes in order (and "all"); ``row_names`` names the
    splits' rows (a split without a name shows its key).
    """

    def pct(rate: Mapping[str, Any]) -> str:
        lo, hi = rate["ci95"]
        return f"{100 * rate['accuracy']:.1f} ({100 * lo:.0f}-{100 * hi:.0f})"

    names = {**ROW_NAMES, **(row_names or {})}
    attributes = list(report["real"]["accuracy"])
    head = ["clips", "N", *(f"{a} %" for a in attributes), "FD", "floor FD", "FD/floor"]
    rows = [head]
    named = [(k, report[k]) for k in ("real", "autoencoder") if k in report] + list(report["splits"].items())
    for key, res in named:
        acc = res["accuracy"]
        rows.append(
            [names.get(key, key), str(report["num"])]
            + [pct(acc[k]) for k in attributes]
            + [f"{res['fd']:.2f}", f"{report['floor_fd']:.2f}", f"{res['fd_ratio']:.2f}"]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def run_settings(
    task: EvalTask,
    *,
    model: str,
    resolved: Mapping[str, Any],
    num: int,
    batch_size: int,
    splits: Sequence[str],
    autocast_bf16: bool,
) -> dict[str, Any]:
    """The ``settings`` of a command's report: the model and its resolved sampling settings (``sampler``,
    ``steps``, ``guidance_scale``), the clip format, and where prompts, noise and real clips come from."""
    return {
        "model": model,
        "sampler": resolved["sampler"],
        "steps": resolved["steps"],
        "cfg": resolved["guidance_scale"],
        "num": num,
        **task.info,
        "batch_size": batch_size,
        "splits": list(splits),
        "prompts": f"{task.real_name} seed {task.prompt_seed} items 0..{num - 1}, captions from each split's templates",
        "noise_seeds": f"clip i of every split starts from noise seed i (0..{num - 1})",
        "real_seeds": {
            "reference": task.real_seeds[0],
            "second_real_set": task.real_seeds[1],
            "floor": task.prompt_seed,
        },
        "autocast_bf16": autocast_bf16,
    }


def write_report(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write the report as indented JSON, atomically (a reader never sees half a file)."""
    from mediadiff.utils import atomic_write_bytes

    return atomic_write_bytes(path, (json.dumps(report, indent=1) + "\n").encode())


def publish(
    task: EvalTask,
    report: Mapping[str, Any],
    settings: Mapping[str, Any],
    *,
    device: Any,
    shape: str,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Print a command's summary line, the table and the real-vs-real FD; write the JSON when asked.

    Returns ``{"settings": settings, "machine": machine(device), **report}``, the JSON's content;
    ``shape`` is the clip format in words (``"17x64x64"``).
    """
    from mediadiff.utils import machine

    full = {"settings": dict(settings), "machine": machine(device), **report}
    timing, host = full["timing"], full["machine"]
    print(
        f"model {settings['model']}: {settings['sampler']} {settings['steps']} steps, cfg "
        f"{settings['cfg']:g}, {shape}; {timing['seconds_per_clip']:.3f} s per clip "
        f"on {host['device']} ({host['torch_threads']} threads); eval work {timing['eval_overhead_s']:.1f} s"
    )
    print(format_table(full, task.row_names))
    seeds = settings["real_seeds"]
    print(
        f"two independent real sets ({task.real_name} seeds {seeds['reference']}, {seeds['second_real_set']}): "
        f"FD {full['real_vs_real_fd']:.2f}"
    )
    if json_path:
        write_report(json_path, full)
        print(f"wrote {json_path}")
    return full


# --------------------------------------------------------------------------- a sweep over sampling steps


def format_steps_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The summary of a sweep as a plain-text table: one row per run (``{"steps", "nfe", **report}``)
    with its step count, its NFE (model evaluations per clip, guidance's batched pair counting once), every
    accuracy of every split in %, each split's FD, and the seconds per clip."""
    splits = list(runs[0]["splits"])
    attributes = list(runs[0]["real"]["accuracy"])
    head = ["steps", "NFE"]
    for split in splits:
        head += [*(f"{split} {a} %" for a in attributes), f"{split} FD"]
    head.append("s/clip")
    rows = [head]
    for run in runs:
        row = [str(run["steps"]), str(run["nfe"])]
        for split in splits:
            res = run["splits"][split]
            row += [f"{100 * res['accuracy'][a]['accuracy']:.1f}" for a in attributes] + [f"{res['fd']:.2f}"]
        rows.append([*row, f"{run['timing']['seconds_per_clip']:.3f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(wd) for c, wd in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def publish_steps(
    runs: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    *,
    device: Any,
    timing: Mapping[str, Any],
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Print the summary of a sweep over sampling steps (:func:`format_steps_table`); write the JSON when
    asked. Each run is ``{"steps", "nfe", **report}`` (printed already, as :func:`publish` prints one).

    Returns the JSON's content: ``{"settings", "machine", "runs", "summary", "timing"}``, where
    ``settings`` are the sweep's (``steps`` and ``nfe`` lists), ``summary`` holds each run's steps, NFE,
    accuracies and FD per split and seconds per clip, and ``timing`` the work shared by the runs (the real
    sets, read once) and the sweep's total.
    """
    from mediadiff.utils import machine

    summary = [
        {
            "steps": run["steps"],
            "nfe": run["nfe"],
            "accuracy": {
                split: {a: v["accuracy"] for a, v in res["accuracy"].items()}
                for split, res in run["splits"].items()
            },
            "fd": {split: res["fd"] for split, res in run["splits"].items()},
            "seconds_per_clip": run["timing"]["seconds_per_clip"],
        }
        for run in runs
    ]
    full = {
        "settings": {
            **settings,
            "steps": [run["steps"] for run in runs],
            "nfe": [run["nfe"] for run in runs],
        },
        "machine": machine(device),
        "runs": [dict(run) for run in runs],
        "summary": summary,
        "timing": dict(timing),
    }
    print(
        f"sampling steps against accuracy ({settings['model']}, {settings['sampler']}, N {settings['num']}):"
    )
    print(format_steps_table(runs))
    if json_path:
        write_report(json_path, full)
        print(f"wrote {json_path}")
    return full
