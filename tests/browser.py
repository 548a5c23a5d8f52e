"""Drive ``mediadiff serve`` in a real browser: Debian's headless Chromium through playwright's Python
client (no ``playwright install``: it is pointed at the system browser).

Used by ``tests/test_serve.py`` and ``docs/make_screenshots.py``::

    with serve_page(tmp_dir) as url, open_browser() as browser:    # or serve_app(): in this process
        page = new_page(browser, url)
        generate(page, "video", "a yellow triangle moving up", seed=0)
        clip = download(page, "video", tmp_dir)

Playwright's sync API runs one browser at a time in a thread: open one and share it.

Every component of a tab has an ``elem_id`` that starts with the tab's modality (``#video-prompt``,
``#audio-generate``, ...; see :func:`mediadiff.serve.build_app`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("MEDIADIFF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
START_TIMEOUT = 120.0  # seconds for the server to answer (imports, reading the models' defaults)
GENERATE_TIMEOUT = 180.0  # seconds for one generation, the first model load included
ERROR_TOAST = "[data-testid='toast-body']"  # Gradio's error message box


def skip_reason() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    for module, hint in (("gradio", 'pip install -e ".[serve]"'), ("playwright", 'pip install -e ".[dev]"')):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({hint})"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set MEDIADIFF_CHROMIUM)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_page(workdir: Path, *args: str, timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Run ``mediadiff serve --port FREE [args]`` in a subprocess until the block ends; yields its URL.

    Its temporary files (results, Gradio's cache) and its console (``serve.log``) go under ``workdir``;
    a server that exits or does not answer within ``timeout`` seconds is a RuntimeError with the log.
    """
    workdir = Path(workdir)
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    env.setdefault("OMP_NUM_THREADS", "1")
    log_path = workdir / "serve.log"
    command = [sys.executable, "-m", "mediadiff.cli", "serve", "--port", str(port), *args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mediadiff serve exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mediadiff serve did not answer on {url} in {timeout:g} s:\n{log_path.read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serve_app(generator: Any = None) -> Iterator[str]:
    """Serve :func:`mediadiff.serve.build_app` from this process (a thread) on a free port until the block
    ends; yields its URL. ``generator``: the page's :class:`~mediadiff.serve.Generator` (its model cache
    may already be warm)."""
    from mediadiff.serve import build_app, launch

    port = free_port()
    app = build_app(generator=generator)
    launch(app, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@contextmanager
def open_browser() -> Iterator[Any]:
    """Headless Chromium (the system one) under playwright; closed when the block ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, url: str, width: int = 1280, height: int = 900) -> Any:
    """A fresh page (its own context, downloads allowed) opened at ``url`` with the app drawn."""
    page = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True).new_page()
    page.goto(url)
    page.locator("#video-prompt textarea").wait_for(timeout=60_000)
    return page


def open_tab(page: Any, modality: str) -> None:
    """Switch to the tab of ``modality``."""
    page.get_by_role("tab", name=modality.capitalize()).click()
    page.locator(f"#{modality}-prompt textarea").wait_for()


def fill(page: Any, modality: str, prompt: str, seed: int | None = 0, **fields: Any) -> None:
    """Type ``prompt`` into a tab, fix its seed (None: leave "random seed" ticked) and fill other
    number or text fields by their elem_id suffix (``steps=10``, ``folder="path"``)."""
    open_tab(page, modality)
    page.locator(f"#{modality}-prompt textarea").fill(prompt)
    if seed is not None:
        page.locator(f"#{modality}-random-seed input").uncheck()
        page.locator(f"#{modality}-seed input").fill(str(seed))
    for name, value in fields.items():
        page.locator(f"#{modality}-{name} input, #{modality}-{name} textarea").first.fill(str(value))


def result_name(page: Any, modality: str) -> str | None:
    """The file name of the tab's current result (its download link), None before the first."""
    link = page.locator(f"#{modality}-download a[download]")
    return link.first.get_attribute("download") if link.count() else None


def click_generate(page: Any, modality: str) -> str | None:
    """Press the tab's Generate button; returns the result shown before (see :func:`wait_result`)."""
    before = result_name(page, modality)
    page.locator(f"#{modality}-generate").click()
    return before


def wait_result(
    page: Any, modality: str, before: str | None = None, timeout: float = GENERATE_TIMEOUT
) -> str:
    """Wait for a new result in the tab (a download link other than ``before``; the player, seed and summary
    come in the same update) and return its file name; an error message on the page fails at once."""
    deadline = time.monotonic() + timeout
    toast = page.locator(ERROR_TOAST)
    while (name := result_name(page, modality)) in (None, before):
        if toast.count():
            raise AssertionError(f"the page says: {toast.first.inner_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new {modality} result in {timeout:g} s")
        page.wait_for_timeout(200)
    return name


def generate(page: Any, modality: str, prompt: str, seed: int | None = 0, **fields: Any) -> str:
    """Fill a tab, press Generate and wait for the new result; returns its file name."""
    fill(page, modality, prompt, seed, **fields)
    return wait_result(page, modality, click_generate(page, modality))


def download(page: Any, modality: str, folder: Path) -> Path:
    """Click the tab's download link as a person would; returns where the browser's download was saved."""
    with page.expect_download() as info:
        page.locator(f"#{modality}-download a[download]").click()
    Path(folder).mkdir(parents=True, exist_ok=True)
    target = Path(folder) / info.value.suggested_filename
    info.value.save_as(target)
    return target


def video_source(page: Any) -> bytes:
    """The bytes the Video tab's player loads (its ``<video src>`` fetched over HTTP)."""
    src = page.locator("#video-result video[src]").first.get_attribute("src")
    answer = page.request.get(src)
    assert answer.ok, f"{src}: HTTP {answer.status}"
    return answer.body()


def error_message(page: Any, timeout: float = 30.0) -> str:
    """The text of the error message the page shows (a gr.Error toast)."""
    toast = page.locator(ERROR_TOAST).first
    toast.wait_for(timeout=timeout * 1000)
    return toast.inner_text()
