"""``mediadiff serve``: the page's generate handler called directly, the command's own checks, and the
page itself in a real browser (Debian's headless Chromium through playwright): type a prompt, press
Generate, download the result and read it back with the detectors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mediadiff.audio.detect import read_tone
from mediadiff.audio.io import read_audio
from mediadiff.cli import main
from mediadiff.pipelines import AudioPipeline, VideoPipeline
from mediadiff.serve import EDIT_MODES, TABS, Generator, ModelCache, ServeError, edit_options, model_defaults
from mediadiff.video.detect import detect
from mediadiff.video.io import read_video

from . import browser

VIDEO, AUDIO = TABS
VIDEO_PROMPT, AUDIO_PROMPT = "a yellow triangle moving up", "a square wave playing E4"
E4 = 64  # MIDI number

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # Gradio's queue calls pandas options that pandas 3 deprecates (gradio/queueing.py), not ours
    pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword is deprecated):Warning"),
]


def check_video(path) -> None:
    reading = detect(read_video(path))  # [f h w 3] uint8 decoded back from the mp4
    assert reading.colour == "yellow" and reading.direction == "up", reading


def check_audio(path) -> None:
    audio, rate = read_audio(path)  # [c t] float32
    reading = read_tone(audio, rate)
    assert reading.pitch == "E4" and abs(reading.midi - E4) <= 0.5, reading


# ----------------------------------------------------------------------------------------- the handler


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    return Generator(ModelCache("cpu"), tmp_path_factory.mktemp("serve"))


def test_handler_makes_the_prompted_clip_and_sound(generator):
    video = generator.run(VIDEO, VIDEO_PROMPT, model="shapes-dit", seed=0)
    assert video.seed == 0 and video.media.suffix == ".mp4" and video.picture is None
    assert video.summary.startswith("seed 0: 17 frames 64x64")
    check_video(video.media)
    audio = generator.run(AUDIO, AUDIO_PROMPT, model="tones-dit", seed=0, sizes={"seconds": None})
    assert (
        audio.media.suffix == ".wav" and audio.picture.suffix == ".png" and audio.picture.stat().st_size > 0
    )
    check_audio(audio.media)


def test_handler_loads_each_model_once(generator):
    pipe = generator.cache.get("video", "shapes-dit")
    folder = VideoPipeline.resolve_model("shapes-dit")
    assert generator.cache.get("video", str(folder)) is not pipe  # a folder is its own entry ...
    assert generator.cache.get("video", str(folder) + "/") is generator.cache.get("video", str(folder))
    size = len(generator.cache)
    out = generator.run(VIDEO, VIDEO_PROMPT, model="shapes-dit", seed=None, steps=2, sizes={"num_frames": 9})
    assert len(generator.cache) == size and generator.cache.get("video", "shapes-dit") is pipe
    assert out.seed >= 0 and "9 frames" in out.summary and "2 steps" in out.summary  # a random seed, shown


@pytest.mark.parametrize(
    ("spec", "request_", "message"),
    [
        (VIDEO, {"prompt": "  "}, "the prompt is empty"),
        (VIDEO, {"model": "/no/such/pipeline"}, "not found"),
        (AUDIO, {"model": "shapes-dit"}, "not found"),
        (VIDEO, {"steps": 0}, "steps must be a positive integer"),
        (VIDEO, {"sampler": "warp"}, "unknown sampler"),
        (VIDEO, {"guidance_scale": -1}, "guidance_scale must be"),
        (VIDEO, {"seed": -3}, "seed must be"),
        (VIDEO, {"sizes": {"height": 30}}, "height"),
        (AUDIO, {"sizes": {"seconds": -1.0}}, "seconds must be"),
        (VIDEO, {"edit": "init"}, "needs an input clip"),
        (AUDIO, {"edit": "morph", "clip": "x.wav"}, "unknown editing mode"),
    ],
)
def test_handler_says_what_is_wrong(generator, spec, request_, message):
    request_ = {"prompt": VIDEO_PROMPT, "model": pipeline_default(spec), **request_}
    with pytest.raises(ServeError, match=message):
        generator.run(spec, request_.pop("prompt"), **request_)


def pipeline_default(spec) -> str:
    return {"video": VideoPipeline, "audio": AudioPipeline}[spec.modality].DEFAULT_MODEL


def test_edit_options_map_each_mode_to_the_pipeline_keywords():
    assert edit_options(VIDEO, "none", "in.mp4") == {}
    assert edit_options(VIDEO, "init", "in.mp4", 0.3) == {"init": "in.mp4", "strength": 0.3}
    assert edit_options(AUDIO, "extend", "in.wav") == {"extend": "in.wav"}
    assert edit_options(VIDEO, "inpaint", "in.mp4", start=4, end=9) == {
        "inpaint": "in.mp4",
        "mask": (4, 9),
    }
    assert edit_options(AUDIO, "inpaint", "in.wav", start=0.25, end=0.5) == {
        "inpaint": "in.wav",
        "mask": (0.25, 0.5),
    }
    assert set(EDIT_MODES) == {"none", "init", "extend", "inpaint"}
    for args, message in [
        (("init", "in.mp4", 1.5), "strength must be in"),
        (("inpaint", "in.mp4", None, 5, 5), "start < end"),
        (("inpaint", "in.mp4", None, 1.5, 4), "whole numbers"),
        (("inpaint", "in.mp4"), "needs a start and an end"),
    ]:
        with pytest.raises(ServeError, match=message):
            edit_options(VIDEO, *args)


def test_handler_edits_through_the_pipeline(generator):
    source = generator.run(VIDEO, VIDEO_PROMPT, model="shapes-dit", seed=0)
    kept = generator.run(
        VIDEO,
        "a yellow triangle moving down",
        model="shapes-dit",
        seed=1,
        edit="init",
        clip=str(source.media),
        strength=0.2,
    )
    assert f"from {source.media.name} at strength 0.2" in kept.summary
    assert detect(read_video(kept.media)).colour == "yellow"


def test_model_defaults_fill_the_tab():
    video = model_defaults("video", "shapes-dit")
    assert [s.default(video) for s in VIDEO.sizes] == [17, 64, 64]
    audio = model_defaults("audio", "tones-dit")
    assert AUDIO.sizes[0].default(audio) == pytest.approx(16384 / 16000)
    with pytest.raises(ServeError, match="not found"):
        model_defaults("audio", "no-such-model")


# ----------------------------------------------------------------------------------------- the command


def test_other_commands_do_not_import_gradio():
    code = "import sys, mediadiff.cli as c; c.build_parser(); print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"


def test_serve_without_gradio_prints_the_install_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ModuleNotFoundError
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[serve]"' in err


def test_serve_rejects_a_bad_model_or_port_in_one_line(capsys):
    pytest.importorskip("gradio", reason='gradio is not installed (pip install -e ".[serve]")')
    assert main(["serve", "--video-model", "/no/such/pipeline"]) == 2
    assert main(["serve", "--audio-model", str(VideoPipeline.resolve_model("shapes-dit"))]) == 2
    assert main(["serve", "--port", "70000"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and "--video-model" in lines[0] and "--port" in lines[2]
    assert "--audio-model" in lines[1] and "not a AudioPipeline" in lines[1]


# ----------------------------------------------------------------------------------------- the browser


def browser_or_skip() -> None:
    reason = browser.skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def page_url(generator):
    """The page served from this process, behind the handler tests' generator (its models stay loaded)."""
    browser_or_skip()
    with browser.serve_app(generator) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for the module (playwright's sync API allows one at a time in a thread)."""
    browser_or_skip()
    with browser.open_browser() as b:
        yield b


def test_browser_generates_video_and_audio_and_downloads_them(page_url, chromium, tmp_path):
    """Two people at once: one in the Video tab, one in the Audio tab; the queue serves both in turn."""
    video_page = browser.new_page(chromium, page_url)
    audio_page = browser.new_page(chromium, page_url)
    browser.fill(video_page, "video", VIDEO_PROMPT, seed=0)
    browser.fill(audio_page, "audio", AUDIO_PROMPT, seed=0)
    before_video = browser.click_generate(video_page, "video")
    before_audio = browser.click_generate(audio_page, "audio")
    browser.wait_result(video_page, "video", before_video)
    browser.wait_result(audio_page, "audio", before_audio)

    clip = browser.download(video_page, "video", tmp_path)
    assert clip.suffix == ".mp4" and clip.read_bytes() == browser.video_source(video_page)
    check_video(clip)
    assert video_page.locator("#video-seed-used input").input_value() == "0"
    assert video_page.locator("#video-summary textarea").input_value().startswith("seed 0: 17 frames 64x64")

    sound = browser.download(audio_page, "audio", tmp_path)
    assert sound.suffix == ".wav"
    check_audio(sound)
    assert audio_page.locator("#audio-seed-used input").input_value() == "0"
    assert audio_page.locator("#audio-picture img").get_attribute("src")  # the spectrogram is shown


def test_browser_shows_a_bad_setting_as_a_message(page_url, chromium):
    page = browser.new_page(chromium, page_url)
    browser.fill(page, "video", VIDEO_PROMPT, folder="/no/such/pipeline")
    browser.click_generate(page, "video")
    assert "/no/such/pipeline" in browser.error_message(page)
    assert "Traceback" not in page.content()


@pytest.mark.slow  # two generations and an upload per modality: about 10-15 s each on 2 cores
@pytest.mark.parametrize("modality", ["video", "audio"])
def test_browser_edits_an_uploaded_clip(page_url, chromium, tmp_path, modality):
    """init at a small strength keeps the input's colour (video) or pitch (audio) under a prompt that
    asks for another direction or contour."""
    prompt = {"video": VIDEO_PROMPT, "audio": AUDIO_PROMPT}[modality]
    page = browser.new_page(chromium, page_url)
    browser.generate(page, modality, prompt, seed=0)
    source = browser.download(page, modality, tmp_path / "source")
    page.locator(f"#{modality}-tab button:has-text('Editing')").click()
    page.locator(f"#{modality}-clip input[type=file]").set_input_files(str(source))
    page.locator(f"#{modality}-edit label:has-text('init')").click()
    page.locator(f"#{modality}-strength input[type=number]").fill("0.2")
    other = {"video": "a yellow triangle moving down", "audio": "a square wave playing E4, rising"}[modality]
    browser.generate(page, modality, other, seed=1)
    assert (
        f"from {source.name} at strength 0.2" in page.locator(f"#{modality}-summary textarea").input_value()
    )
    edited = browser.download(page, modality, tmp_path / "edited")
    if modality == "video":
        assert detect(read_video(edited)).colour == "yellow"
    else:
        audio, rate = read_audio(edited)
        assert abs(read_tone(audio, rate).midi - E4) <= 1.5


@pytest.mark.slow
def test_the_serve_command_in_a_browser(chromium, tmp_path):
    """The real command (``mediadiff serve --port N`` in a subprocess, cold: imports and model load
    included): the Video tab makes the yellow triangle moving up."""
    with browser.serve_page(tmp_path) as url:
        page = browser.new_page(chromium, url)
        browser.generate(page, "video", VIDEO_PROMPT, seed=0)
        check_video(browser.download(page, "video", tmp_path))
