"""``mediadiff serve``: a local web page (Gradio) with one tab per modality, Video and Audio.

Each tab takes a prompt, a negative prompt, a model (a shipped one from the dropdown, or any pipeline
folder), steps, sampler, CFG scale, seed (or a random one), the size (frames and pixels, or seconds)
and, for editing, an input clip with a mode: ``init`` (SDEdit at a strength), ``extend``
(continuation) or ``inpaint`` (a range of frames or seconds). It shows a progress bar over the
sampling steps, the result in a player with a download link, the seed used and, for audio, the
spectrogram picture::

    mediadiff serve                        # http://127.0.0.1:7860
    mediadiff serve --port 8000 --video-model runs/my_run/pipeline

Generation is what ``mediadiff generate`` does with the pipelines (:class:`~mediadiff.pipelines.video.
VideoPipeline`, :class:`~mediadiff.pipelines.audio.AudioPipeline`: ``prepare_edit`` then ``generate``);
each model is loaded once and kept
(:class:`ModelCache`), and requests are queued, one generation at a time. A bad setting comes back
as one message on the page (:class:`ServeError`, shown as ``gr.Error``), not a traceback.

Gradio is an optional extra (``pip install -e ".[serve]"``): this module imports it only inside
:func:`build_app` and :func:`main`, so ``mediadiff --help`` and the other commands never load it.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediadiff.pipelines import pipeline_class
from mediadiff.pipelines.base import DEFAULT_STRENGTH
from mediadiff.pipelines.base import EDIT_MODES as PIPELINE_EDIT_MODES

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EDIT_MODES",
    "INSTALL_HINT",
    "TABS",
    "Generator",
    "ModelCache",
    "Result",
    "ServeError",
    "Size",
    "TabSpec",
    "add_arguments",
    "build_app",
    "edit_options",
    "launch",
    "main",
    "model_defaults",
]

INSTALL_HINT = 'pip install -e ".[serve]"'
DEFAULT_HOST = "127.0.0.1"  # this machine only; --host 0.0.0.0 opens the page to the network
DEFAULT_PORT = 7860
EDIT_MODES = ("none", *PIPELINE_EDIT_MODES)  # none, init, extend, inpaint
EDIT_HELP = (
    "none: text only. init: start from the input clip noised to the strength (SDEdit; 0 keeps it, "
    "1 ignores it). extend: continue the input clip. inpaint: regenerate the range START..END of it."
)


class ServeError(ValueError):
    """A bad request (a setting, a model, a missing input clip): shown on the page as one message."""


@dataclass(frozen=True)
class Size:
    """One size setting of a tab: the pipeline keyword, its label, whether it is a whole number, and
    where a model's saved defaults hold it (``defaults[source]``, divided by ``defaults[per]`` if set)."""

    name: str  # keyword of the pipeline's __call__ (num_frames, height, width, seconds)
    label: str
    integer: bool = True
    source: str | None = None  # the defaults key (None: name itself)
    per: str | None = None  # a defaults key to divide by (seconds = num_samples / sample_rate)

    def default(self, defaults: dict[str, Any]) -> int | float:
        """This setting's value in a model's resolved ``defaults``."""
        value = defaults[self.source or self.name]
        return value / defaults[self.per] if self.per else value


@dataclass(frozen=True)
class TabSpec:
    """What a modality's tab has beyond the shared controls (prompt, model, steps, sampler, CFG, seed)."""

    modality: str  # key of mediadiff.pipelines.MODALITIES
    title: str
    sizes: tuple[Size, ...]
    player: str  # the Gradio component that plays the result and takes the input clip ("Video", "Audio")
    extension: str  # the file format of the result (its player and its download link)
    mask_unit: str  # what an inpainting range counts: its start and end are pipeline mask=(START, END)
    mask_integer: bool  # whole numbers (frame indices) or not (seconds)
    mask_default: tuple[float, float]  # what the inpainting range starts as on the page
    picture: bool = False  # also a picture of the result (AudioOutput.save("x.png"): its spectrogram)


TABS: tuple[TabSpec, ...] = (
    TabSpec(
        "video",
        "Video",
        (Size("num_frames", "Frames"), Size("height", "Height (px)"), Size("width", "Width (px)")),
        player="Video",
        extension=".mp4",
        mask_unit="frame",
        mask_integer=True,
        mask_default=(6, 12),
    ),
    TabSpec(
        "audio",
        "Audio",
        (Size("seconds", "Seconds", integer=False, source="num_samples", per="sample_rate"),),
        player="Audio",
        extension=".wav",
        mask_unit="second",
        mask_integer=False,
        mask_default=(0.25, 0.75),
        picture=True,
    ),
)


@dataclass
class Result:
    """One generation: the clip (for the player and the download link), the seed it came from, a line
    saying what was made, and its picture (audio: the spectrogram) or None."""

    media: Path
    seed: int
    summary: str
    picture: Path | None = None


# ----------------------------------------------------------------------------------------- models


class ModelCache:
    """Pipelines loaded once and kept across requests, keyed by modality and model (name or folder).

    ``get`` is thread-safe: two requests for a model not yet loaded load it once. ``compile``: each
    pipeline's backbone goes through ``torch.compile`` once loaded (:meth:`DiffusionPipeline.compile`;
    its first request compiles).
    """

    def __init__(self, device: str | None = None, compile: bool = False) -> None:
        self.device = device
        self.compile = compile
        self._pipes: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._pipes

    def __len__(self) -> int:
        return len(self._pipes)

    def key(self, modality: str, model: str) -> tuple[str, str]:
        """The cache key of ``model``: a shipped name as it is, a folder as its resolved path (a
        :class:`ServeError` for neither)."""
        cls = pipeline_class(modality)
        if model in cls.SHIPPED_MODELS:
            return modality, model
        try:
            return modality, str(cls.resolve_model(model).resolve())
        except FileNotFoundError as err:
            raise ServeError(str(err)) from None

    def get(self, modality: str, model: str) -> Any:
        """The pipeline of ``model`` (a shipped name or a pipeline folder), loaded on first use."""
        key = self.key(modality, model)
        with self._lock:
            pipe = self._pipes.get(key)
            if pipe is None:
                import torch

                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                try:
                    pipe = pipeline_class(modality).from_pretrained(model, device=device)
                    if self.compile:
                        pipe.compile()
                except (FileNotFoundError, ValueError, RuntimeError) as err:
                    raise ServeError(f"model {model!r}: {err}") from None
                self._pipes[key] = pipe
            return pipe


def model_defaults(modality: str, model: str) -> dict[str, Any]:
    """A model's saved defaults (every setting of its class, see ``default_settings``), read from its
    ``pipeline.json`` without loading it; a :class:`ServeError` for an unknown model or a bad folder."""
    cls = pipeline_class(modality)
    try:
        spec = cls.read_spec(cls.resolve_model(model))
    except (FileNotFoundError, ValueError) as err:
        raise ServeError(str(err)) from None
    return {**cls.default_settings(), **(spec.get("defaults") or {})}


# ----------------------------------------------------------------------------------------- requests


def edit_options(
    spec: TabSpec,
    mode: str | None,
    clip: str | None,
    strength: float | None = None,
    start: float | None = None,
    end: float | None = None,
) -> dict[str, Any]:
    """The editing keywords of the pipeline call for a tab's editing inputs (``{}`` for mode none).

    ``init``: ``{"init": clip, "strength": s}``; ``extend``: ``{"extend": clip}``; ``inpaint``:
    ``{"inpaint": clip, "mask": (start, end)}`` in the tab's ``mask_unit`` (frames or seconds).
    A :class:`ServeError` for an unknown mode, a missing clip or a bad number.
    """
    if mode in (None, "", "none"):
        return {}
    if mode not in EDIT_MODES:
        raise ServeError(f"unknown editing mode {mode!r}; choose from {', '.join(EDIT_MODES)}")
    if not clip:
        raise ServeError(f"editing mode {mode!r} needs an input clip: upload one under 'Input clip'")
    if mode == "init":
        if strength is None or not 0 <= strength <= 1:
            raise ServeError(f"strength must be in [0, 1], got {strength!r}")
        return {"init": clip, "strength": float(strength)}
    if mode == "extend":
        return {"extend": clip}
    unit = spec.mask_unit
    if start is None or end is None:
        raise ServeError(f"inpaint needs a start and an end ({unit}s of the input clip)")
    cast = int if spec.mask_integer else float
    if start < 0 or not start < end or (spec.mask_integer and (start != int(start) or end != int(end))):
        kind = "whole numbers " if spec.mask_integer else ""
        raise ServeError(f"inpaint range must be {kind}0 <= start < end ({unit}s), got {start:g}..{end:g}")
    return {"inpaint": clip, "mask": (cast(start), cast(end))}


def _optional(value: Any, integer: bool) -> int | float | None:
    """A number field's value for the pipeline: None (blank: the model's), else an int or a float."""
    if value is None or value == "":
        return None
    return int(value) if integer else float(value)


class Generator:
    """The page's generate button, without Gradio: check a request, load the model (cached), sample,
    write the result under ``output_dir``.

    ``run`` raises :class:`ServeError` for bad input; everything else is a bug and propagates.
    """

    def __init__(self, cache: ModelCache | None = None, output_dir: str | Path | None = None) -> None:
        self.cache = cache or ModelCache()
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="mediadiff-serve-"))
        self._count = itertools.count()

    def run(
        self,
        spec: TabSpec,
        prompt: str,
        *,
        model: str,
        negative_prompt: str = "",
        steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        sizes: dict[str, Any] | None = None,
        edit: str | None = "none",
        clip: str | None = None,
        strength: float | None = DEFAULT_STRENGTH,
        start: float | None = None,
        end: float | None = None,
        progress: Any = None,
    ) -> Result:
        """Generate one clip for ``prompt`` with ``model`` (a shipped name or a pipeline folder).

        steps, sampler, guidance_scale and ``sizes`` (the tab's :class:`Size` names -> value): None
        takes the model's. seed: None draws one (reported in the result). edit, clip, strength, start,
        end: see :func:`edit_options`. progress: called as ``progress(fraction, desc=...)`` before the
        model loads (a ``gr.Progress``); the sampling steps reach it through the pipeline's tqdm bar.
        """
        if not prompt or not prompt.strip():
            example = pipeline_class(spec.modality).EXAMPLE_PROMPT
            raise ServeError(f"the prompt is empty: describe what to make, e.g. {example!r}")
        if not model or not str(model).strip():
            raise ServeError("choose a model, or give a pipeline folder")
        model = str(model).strip()
        if seed is not None and (seed < 0 or seed != int(seed)):
            raise ServeError(f"seed must be a whole number >= 0, got {seed:g}")
        values = {s.name: _optional((sizes or {}).get(s.name), s.integer) for s in spec.sizes}
        options = {
            "steps": _optional(steps, integer=True),
            "sampler": sampler or None,
            "guidance_scale": _optional(guidance_scale, integer=False),
        }
        edits = edit_options(spec, edit, clip, strength, start, end)
        if progress is not None and self.cache.key(spec.modality, model) not in self.cache:
            progress(0, desc=f"loading {model}")
        pipe = self.cache.get(spec.modality, model)
        try:  # what `mediadiff generate` does: resolve the settings, read and encode the input clip, sample
            prepared = settings, edited = pipe.prepare_edit(**values, **options, **edits)
            out = pipe.generate(
                prompt,
                negative_prompt or None,
                seed=None if seed is None else int(seed),
                progress=True,
                prepared=prepared,
            )
        except (ValueError, TypeError, FileNotFoundError) as err:
            raise ServeError(str(err)) from None
        used = out.seeds[0]
        stem = self.output_dir / f"{spec.modality}-{next(self._count):04d}-seed{used}"
        media = out.save(stem.with_suffix(spec.extension))[0]
        picture = out.save(stem.with_suffix(".png"))[0] if spec.picture else None
        # "..., from NAME at strength S", "..., extending NAME, 3 of 5 latent frames kept": the upload's name, not its temporary path
        summary = f"seed {used}: {pipe.summary(settings, edited)}"
        if clip:
            summary = summary.replace(str(clip), Path(clip).name)
        return Result(media, used, summary, picture)


# ----------------------------------------------------------------------------------------- page


def _model_choice(spec: TabSpec, model: str | None) -> tuple[list[str], str | None, str]:
    """``(dropdown choices, dropdown value, folder box value)`` for a tab whose model is ``model``
    (None: the modality's default; a shipped name goes in the dropdown, anything else in the box)."""
    cls = pipeline_class(spec.modality)
    choices = cls.installed_models()
    if model is None:
        model = cls.DEFAULT_MODEL if cls.DEFAULT_MODEL in choices else (choices[0] if choices else None)
    if model is None or model in choices:
        return choices, model, ""
    return choices, (choices[0] if choices else None), str(model)


def _settings(spec: TabSpec, defaults: dict[str, Any]) -> list[Any]:
    """The values of a tab's model-dependent fields (steps, sampler, CFG, sizes) for a model's defaults."""
    sizes = [round(x, 3) if isinstance(x, float) else x for x in (s.default(defaults) for s in spec.sizes)]
    return [defaults["steps"], defaults["sampler"], defaults["guidance_scale"], *sizes]


def _build_tab(gr: Any, spec: TabSpec, generator: Generator, model: str | None) -> None:
    """One modality's tab: its inputs, the generate button, and the result.

    Steps, sampler, CFG and the sizes start at the chosen model's saved defaults and follow the model
    when another is chosen; a field left blank takes the model's value too.
    """
    from mediadiff.diffusion import SAMPLERS

    cls = pipeline_class(spec.modality)
    ids = spec.modality  # every component's elem_id starts with the modality (the browser test finds them)
    choices, chosen, folder_value = _model_choice(spec, model)
    model_name = folder_value or chosen
    start = (
        _settings(spec, model_defaults(spec.modality, model_name))
        if model_name
        else [None] * (3 + len(spec.sizes))
    )
    inputs: dict[str, Any] = {}
    with gr.Tab(spec.title, id=spec.modality, elem_id=f"{ids}-tab"):
        with gr.Row():
            with gr.Column(scale=3):
                inputs["prompt"] = gr.Textbox(
                    label="Prompt", placeholder=cls.EXAMPLE_PROMPT, lines=2, elem_id=f"{ids}-prompt"
                )
                inputs["negative"] = gr.Textbox(
                    label="Negative prompt", placeholder="(none)", elem_id=f"{ids}-negative"
                )
                with gr.Row():
                    inputs["model"] = gr.Dropdown(
                        choices, value=chosen, label="Model", elem_id=f"{ids}-model"
                    )
                    inputs["folder"] = gr.Textbox(
                        value=folder_value,
                        label="or a pipeline folder (used when given)",
                        placeholder="path/to/pipeline_folder",
                        elem_id=f"{ids}-folder",
                    )
                with gr.Row():
                    settings = [
                        gr.Number(start[0], label="Steps", precision=0, minimum=1, elem_id=f"{ids}-steps"),
                        gr.Dropdown(
                            list(SAMPLERS), value=start[1], label="Sampler", elem_id=f"{ids}-sampler"
                        ),
                        gr.Number(start[2], label="CFG scale", minimum=0, elem_id=f"{ids}-cfg"),
                    ]
                with gr.Row():
                    inputs["seed"] = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id=f"{ids}-seed")
                    inputs["random"] = gr.Checkbox(True, label="random seed", elem_id=f"{ids}-random-seed")
                with gr.Row():
                    for size, value in zip(spec.sizes, start[3:]):
                        settings.append(
                            gr.Number(
                                value,
                                label=size.label,
                                precision=0 if size.integer else None,
                                elem_id=f"{ids}-{size.name}",
                            )
                        )
                inputs.update(zip(("steps", "sampler", "cfg", *(s.name for s in spec.sizes)), settings))
                with gr.Accordion("Editing: start from an input clip", open=False):
                    player = getattr(gr, spec.player)
                    clip_args = {"type": "filepath"} if spec.player == "Audio" else {}
                    inputs["clip"] = player(
                        label="Input clip", sources=["upload"], elem_id=f"{ids}-clip", **clip_args
                    )
                    inputs["edit"] = gr.Radio(
                        list(EDIT_MODES), value="none", label="Mode", info=EDIT_HELP, elem_id=f"{ids}-edit"
                    )
                    inputs["strength"] = gr.Slider(
                        0,
                        1,
                        value=DEFAULT_STRENGTH,
                        step=0.05,
                        label="Strength (init)",
                        elem_id=f"{ids}-strength",
                    )
                    with gr.Row():
                        for end, value in zip(("start", "end"), spec.mask_default):
                            inputs[end] = gr.Number(
                                value,
                                label=f"Inpaint {end} ({spec.mask_unit})",
                                precision=0 if spec.mask_integer else None,
                                elem_id=f"{ids}-{end}",
                            )
                button = gr.Button("Generate", variant="primary", elem_id=f"{ids}-generate")
            with gr.Column(scale=2):
                result = player(label="Result", interactive=False, elem_id=f"{ids}-result")
                download = gr.File(label="Download", interactive=False, elem_id=f"{ids}-download")
                seed_used = gr.Number(
                    label="Seed used", interactive=False, precision=0, elem_id=f"{ids}-seed-used"
                )
                summary = gr.Textbox(label="Settings used", interactive=False, elem_id=f"{ids}-summary")
                outputs = [result, download, seed_used, summary]
                if spec.picture:
                    outputs.append(gr.Image(label="Spectrogram", interactive=False, elem_id=f"{ids}-picture"))

    def follow_model(model: str | None, folder: str | None) -> list[Any]:
        """The chosen model's defaults into the settings fields (unchanged while the folder is not one)."""
        try:
            return _settings(spec, model_defaults(spec.modality, (folder or "").strip() or model))
        except ServeError:
            return [gr.update() for _ in settings]

    inputs["model"].change(follow_model, [inputs["model"], inputs["folder"]], settings, queue=False)
    inputs["folder"].blur(follow_model, [inputs["model"], inputs["folder"]], settings, queue=False)

    def generate(data: dict, progress: Any = gr.Progress(track_tqdm=True)) -> list[Any]:  # noqa: B008
        v = {name: data[component] for name, component in inputs.items()}
        try:
            out = generator.run(
                spec,
                v["prompt"],
                model=(v["folder"] or "").strip() or v["model"],
                negative_prompt=v["negative"],
                steps=v["steps"],
                sampler=v["sampler"],
                guidance_scale=v["cfg"],
                seed=None if v["random"] else v["seed"],
                sizes={s.name: v[s.name] for s in spec.sizes},
                edit=v["edit"],
                clip=v["clip"],
                strength=v["strength"],
                start=v["start"],
                end=v["end"],
                progress=progress,
            )
        except ServeError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # a bug: the console gets the traceback, the page one line
            traceback.print_exc()
            raise gr.Error(f"generation failed: {type(err).__name__}: {err}", print_exception=False) from None
        media = str(out.media)
        values = [media, media, out.seed, out.summary]
        return values + ([str(out.picture)] if spec.picture else [])

    button.click(
        generate,
        inputs=set(inputs.values()),
        outputs=outputs,
        concurrency_limit=1,
        concurrency_id="generate",  # one generation at a time across the tabs; the others wait in the queue
        show_progress_on=[result],
    )


def build_app(
    video_model: str | None = None,
    audio_model: str | None = None,
    *,
    device: str | None = None,
    generator: Generator | None = None,
    compile: bool = False,
) -> Any:
    """The page as a ``gr.Blocks``: a tab per :data:`TABS` entry, queued one generation at a time.

    video_model, audio_model: what each tab's model starts as (a shipped name or a pipeline folder;
    None: the modality's default). device: where models load (None: cuda if available, else cpu).
    generator: the :class:`Generator` behind the buttons (a new one, with its own output folder, if None).
    compile: ``torch.compile`` each model's backbone when it loads (for a new ``generator`` only).
    Serve it with :func:`launch`.
    """
    import gradio as gr

    generator = generator or Generator(ModelCache(device, compile=compile))
    models = {"video": video_model, "audio": audio_model}  # keyed by TabSpec.modality
    with gr.Blocks(title="mediadiff", analytics_enabled=False) as app:
        gr.Markdown(
            "# mediadiff\nText to video and text to audio with the shipped models or any pipeline folder. "
            "A model loads on its first use and stays loaded; requests wait in a queue, one at a time."
        )
        with gr.Tabs():
            for spec in TABS:
                _build_tab(gr, spec, generator, models.get(spec.modality))
    app.queue(default_concurrency_limit=1)
    return app


def launch(app: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, block: bool = True) -> None:
    """Serve ``app`` (from :func:`build_app`) on ``host:port``: no public share link, no server-side
    rendering (no Node.js), quiet. ``block`` False returns at once (the server runs in a thread until
    ``app.close()``). An ``OSError`` when the port is taken."""
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        quiet=True,
        prevent_thread_lock=not block,
    )


# ----------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``mediadiff serve`` flags."""
    parser.add_argument(
        "--video-model",
        default=None,
        metavar="NAME|FOLDER",
        help="the Video tab's model (default: shapes-dit)",
    )
    parser.add_argument(
        "--audio-model",
        default=None,
        metavar="NAME|FOLDER",
        help="the Audio tab's model (default: tones-dit)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 opens it to the network)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each model's backbone: its first request compiles, later ones run faster",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``mediadiff serve``: check the models, build the page, serve it until interrupted.

    Returns 2 (one line on stderr) when gradio is not installed, a model is unknown or the port is taken.
    """
    prog = "mediadiff serve"
    if not 0 < args.port < 65536:  # before gradio loads (seconds): a bad flag is answered at once
        print(f"{prog}: error: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        print(f"{prog}: gradio is not installed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    for spec in TABS:
        model = getattr(args, f"{spec.modality}_model", None)
        if model is not None:
            try:
                model_defaults(spec.modality, model)  # a model of this modality, without loading it
            except ServeError as err:
                print(f"{prog}: error: --{spec.modality}-model: {err}", file=sys.stderr)
                return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                f"{prog}: error: --device cuda: no CUDA device is available; use --device cpu",
                file=sys.stderr,
            )
            return 2
    app = build_app(args.video_model, args.audio_model, device=args.device, compile=args.compile)
    print(f"{prog}: http://{args.host}:{args.port}  (Ctrl+C stops it)", flush=True)
    try:
        launch(app, args.host, args.port)
    except OSError as err:
        print(f"{prog}: error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    return 0
