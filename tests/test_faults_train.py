"""Faults during training, with real processes: SIGKILL at every point of a checkpoint save, SIGTERM and
Ctrl-C, a full disk (a file-size limit), two runs on one folder, two builders of one latent cache, two
writers of one output file. After each, what is on disk loads and ``--resume`` ends bit-identical to a
run that was never disturbed.

The children are forked from a forkserver that has imported torch and mediadiff once, so a killed run
costs a fraction of a second rather than a fresh interpreter.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import resource
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mediadiff.train import CheckpointError, Trainer
from mediadiff.train.checkpoint import RUN_LOCK, STATE_FILE, complete_checkpoints, latest_checkpoint
from mediadiff.utils import FileLock, GracefulStop, LockedError
from tests.test_train import checkpoint_tensors, make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 4
RUN = dict(max_steps=MAX_STEPS, checkpoint_every=1, keep_checkpoints=1, grad_accum=1)


def _context() -> mp.context.BaseContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "mediadiff.train.trainer", "tests.test_train"])
    return ctx


# --------------------------------------------------------------------------------- children (forked)


def _child_train(
    out: str, kill_at: tuple[str, int, str] | None, rlimit: int | None, queue=None, settings=None
) -> None:
    """Train (resuming) in ``out``; with ``kill_at = (point, n, how)`` SIGKILL itself at the ``n``-th
    ``point`` of the save of step 2; with ``rlimit`` a file-size limit (bytes) from the start."""
    torch.set_num_threads(1)
    import shutil

    import mediadiff.train.trainer as tr

    if kill_at is not None:
        point, n, how = kill_at
        armed = {"on": False, "calls": 0}

        def die() -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        def wrap(module, name):
            real = getattr(module, name)

            def fake(*args, **kwargs):
                if armed["on"] and name == point:
                    armed["calls"] += 1
                    if armed["calls"] == n:
                        if how == "before":
                            die()
                        if how == "during":  # half of the file's bytes on disk, then death
                            real(*args, **kwargs)
                            target = Path(args[1] if name in ("save_file", "save_torch") else args[0])
                            if target.is_file():
                                data = target.read_bytes()
                                target.write_bytes(data[: len(data) // 2])
                            die()
                        result = real(*args, **kwargs)
                        die()
                        return result
                return real(*args, **kwargs)

            setattr(module, name, fake)

        wrap(tr, "save_torch")
        wrap(tr, "save_file")
        wrap(tr, "publish_dir")
        wrap(os, "replace")
        wrap(os, "fsync")
        wrap(shutil, "rmtree")
        real_save = tr.Trainer.save_checkpoint

        def save(self):
            armed["on"] = self.step == 2
            try:
                return real_save(self)
            finally:
                armed["on"] = False

        tr.Trainer.save_checkpoint = save
    if rlimit is not None:  # no bytecode from now on: a .pyc cut at the limit would break later imports
        sys.dont_write_bytecode = True
        resource.setrlimit(resource.RLIMIT_FSIZE, (rlimit, resource.RLIM_INFINITY))
    trainer = make_trainer(out, resume=True, **(settings or RUN))
    try:
        result = trainer.fit()
    except CheckpointError as err:
        if queue is not None:
            queue.put(("CheckpointError", str(err), trainer.step))
        return
    if queue is not None:
        queue.put(("done", result["interrupted"], result["step"]))


def _child_sigterm_target(out: str, queue) -> None:
    """A long run that reports its progress; the parent signals it."""
    torch.set_num_threads(1)
    trainer = make_trainer(out, resume=True, max_steps=10_000, checkpoint_every=10_000, grad_accum=1)
    result = trainer.fit()
    queue.put((result["interrupted"], result["step"], str(result["checkpoint"])))


def _child_build_cache(root: str, queue) -> None:
    torch.set_num_threads(1)
    from mediadiff.train.cache import LatentCache
    from tests.test_train import parts

    p = parts(items=24)
    lines: list[str] = []
    cache = LatentCache.open_or_build(
        Path(root) / "cache",
        p["dataset"],
        autoencoder=p["autoencoder"],
        text_encoder=p["text_encoder"],
        log=lines.append,
        progress=False,
        batch_size=2,
    )
    queue.put((os.getpid(), len(cache), lines))


def _media(kind: str, value: int) -> np.ndarray:
    rng = np.random.default_rng(value)
    if kind == "wav":
        return rng.uniform(-0.5, 0.5, (1, 16000 * 4)).astype(np.float32)  # [c t]
    return rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)  # [f h w 3]


def _child_write_media(path: str, value: int, times: int) -> None:
    from mediadiff.audio.io import write_audio
    from mediadiff.video.io import write_video

    kind = Path(path).suffix[1:]
    for _ in range(times):
        if kind == "wav":
            write_audio(path, _media(kind, value), 16000)
        else:
            write_video(path, _media(kind, value), 8)


# --------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread) -> dict[str, torch.Tensor]:
    """The final weights, EMA and optimizer state of the run undisturbed."""
    out = tmp_path_factory.mktemp("reference")
    make_trainer(out, **RUN).fit()
    return checkpoint_tensors(out)[1]


def _assert_loadable(run: Path) -> int:
    """Every complete checkpoint reads whole; returns the newest step (0 if none)."""
    found = complete_checkpoints(run / "checkpoints")
    for _, ck in found:
        json.loads((ck / STATE_FILE).read_text())
        for f in ck.glob("*.safetensors"):
            load_file(f)
        for f in ck.glob("*.pt"):
            torch.load(f, weights_only=True)
    return found[-1][0] if found else 0


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _run_child(target, *args, timeout: float = 60) -> int:
    proc = _context().Process(target=target, args=args)
    proc.start()
    proc.join(timeout)
    assert not proc.is_alive(), "the child hung"
    return proc.exitcode


# the save of step 2 (step 1's checkpoint exists; keep 1, so step 1 is pruned at the end): every write,
# rename, fsync and deletion it makes, killed before it, in the middle of it or right after it
KILL_POINTS = [
    ("save_torch", 1, "before"),  # the RNG file
    ("save_torch", 1, "during"),
    ("save_file", 1, "during"),  # model.safetensors, half written
    ("save_file", 2, "after"),  # ema.safetensors written
    ("save_torch", 2, "during"),  # optimizer.pt
    ("save_torch", 3, "after"),  # scheduler.pt
    ("fsync", 3, "before"),  # scheduler.pt written, not yet fsynced
    ("fsync", 6, "before"),  # publish_dir: fsyncing the folder's files
    ("publish_dir", 1, "before"),
    ("replace", 1, "before"),  # the rename into place
    ("replace", 1, "after"),  # renamed, its folder not yet fsynced
    ("replace", 2, "after"),  # prune: step 1 renamed aside, not deleted
    ("rmtree", 1, "before"),  # prune: deleting the old checkpoint
    ("publish_dir", 1, "after"),
]


@pytest.mark.parametrize("kill_at", KILL_POINTS, ids=lambda k: f"{k[2]}-{k[0]}-{k[1]}")
def test_sigkill_during_a_save_keeps_a_loadable_checkpoint_and_resume_is_bit_exact(
    tmp_path, kill_at, reference
):
    run = tmp_path / "run"
    code = _run_child(_child_train, str(run), kill_at, None)
    assert code == -signal.SIGKILL, f"the child was not killed at {kill_at} (exit {code})"
    newest = _assert_loadable(run)
    assert newest in (1, 2)  # the previous checkpoint, or the new one if it was complete
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    # a second run on the folder: the dead run's lock is taken over, leftovers go, resume is exact
    resumed = make_trainer(run, resume=True, **RUN)
    assert resumed.step == newest
    resumed.fit()
    _assert_same(checkpoint_tensors(run)[1], reference)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], leftovers
    assert not (run / RUN_LOCK).exists()


SOAK = dict(max_steps=24, checkpoint_every=1, keep_checkpoints=2, grad_accum=1)


def _starts(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return metrics.read_text().count('"event": "start"') if metrics.is_file() else 0


@pytest.mark.slow
def test_sigkill_at_random_times_many_times(tmp_path):
    """Soak: 40 runs that save at every step, each killed three times at a random moment of its training
    loop (most land in a save, which takes most of a step's time) and resumed; each ends bit-exact."""
    ref = tmp_path / "reference"
    make_trainer(ref, **SOAK).fit()
    reference = checkpoint_tensors(ref)[1]
    rng = random.Random(0)
    ctx = _context()
    kills = in_save = 0
    for trial in range(40):
        run = tmp_path / f"run{trial}"
        for _ in range(3):
            started = _starts(run)
            proc = ctx.Process(target=_child_train, args=(str(run), None, None, None, SOAK))
            proc.start()
            while proc.is_alive() and _starts(run) == started:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.5))
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                in_save += any(p.name.startswith(".tmp-") for p in (run / "checkpoints").glob(".*"))
            proc.join(30)
            _assert_loadable(run)
        make_trainer(run, resume=True, **SOAK).fit()
        _assert_same(checkpoint_tensors(run)[1], reference)
    print(f"\n{kills} SIGKILLs in 40 runs ({in_save} left a save half-done), every run resumed bit-exactly")
    assert kills >= 100


def test_a_full_disk_is_reported_and_the_previous_checkpoint_is_kept(tmp_path, reference):
    run = tmp_path / "run"
    make_trainer(run, **RUN).fit(until=2)  # step 2 saved
    size = (latest_checkpoint(run / "checkpoints") / "model.safetensors").stat().st_size
    queue = _context().Queue()
    # a limit below the weights' size: every checkpoint fails, the small files (config, metrics) still work
    code = _run_child(_child_train, str(run), None, size // 2, queue)
    assert code == 0
    kind, message, step = queue.get(timeout=5)
    assert kind == "CheckpointError" and step == 3
    assert "File too large" in message and "step-00000002 is intact" in message
    assert [s for s, _ in complete_checkpoints(run / "checkpoints")] == [2]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # nothing half-written
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "checkpoint_failed"
    make_trainer(run, resume=True, **RUN).fit()  # room again: continues from step 2, exactly
    _assert_same(checkpoint_tensors(run)[1], reference)


def test_a_full_disk_through_the_command_line_is_one_line(tmp_path):
    out = tmp_path / "run"
    limit = 40_000  # below the tiny recipe's weights
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes/examples/tiny_latent.py"), "--max-steps", "3",
         "--output-dir", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"},  # no .pyc cut at the limit
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY)),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not write the checkpoint of step") and "File too large" in last
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").iterdir())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_write_a_final_checkpoint_and_stop(tmp_path, sig):
    run = tmp_path / "run"
    queue = _context().Queue()
    proc = _context().Process(target=_child_sigterm_target, args=(str(run), queue))
    proc.start()
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until it has made a few steps
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        if sum('"loss"' in x and '"event"' not in x for x in lines) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    proc.join(60)
    assert proc.exitcode == 0
    interrupted, step, checkpoint = queue.get(timeout=5)
    assert interrupted == sig.name and step >= 3
    assert Path(checkpoint).name == f"step-{step:08d}" and _assert_loadable(run) == step
    events = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert events[-1]["event"] == "interrupted" and events[-1]["step"] == step
    assert not (run / RUN_LOCK).exists()
    assert make_trainer(run, resume=True, max_steps=10_000).step == step


def test_ctrl_c_through_the_command_line_with_workers_exits_130_with_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediadiff.cli", "train", "examples/tiny_latent", "--max-steps", "100000",
         "--output-dir", str(out), "--checkpoint-every", "100000", "--num-workers", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
    )  # fmt: skip
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count('"loss"') >= 2):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole group, DataLoader workers too
    out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "SIGINT: stopped at step" in out_text
    assert out_text.count("SIGINT: stopping after this step") == 1  # the workers stay quiet
    assert _assert_loadable(out) > 0


def test_a_second_run_on_the_same_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    run = tmp_path / "run"
    queue = _context().Queue()
    first = _context().Process(target=_child_sigterm_target, args=(str(run), queue))
    first.start()
    deadline = time.time() + 60
    while not (run / RUN_LOCK).is_file() and time.time() < deadline:
        time.sleep(0.05)
    second = make_trainer(run, max_steps=2)
    with pytest.raises(
        LockedError, match=rf"run folder {run} is in use by pid {first.pid} on .*another --output-dir"
    ):
        second.fit()
    os.kill(first.pid, signal.SIGKILL)  # killed: its lock file stays, the lock does not
    first.join(30)
    assert (run / RUN_LOCK).is_file()
    logged: list[str] = []
    second.log = logged.append
    assert second.fit()["step"] == 2
    assert any(f"took over a stale lock of pid {first.pid}" in line for line in logged)
    assert not (run / RUN_LOCK).exists()


def test_file_lock_waits_times_out_and_names_the_holder(tmp_path):
    path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mediadiff.utils import FileLock; "
         "lock = FileLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    lock = FileLock(path, "the thing")
    with pytest.raises(LockedError, match=rf"the thing is in use by pid {holder.pid}") as err:
        lock.acquire()
    assert err.value.holder["pid"] == holder.pid
    told: list[str] = []
    start = time.monotonic()
    with pytest.raises(LockedError):
        lock.acquire(blocking=True, timeout=0.3, log=told.append)
    assert time.monotonic() - start >= 0.3 and len(told) == 1 and "waiting for the thing" in told[0]
    holder.kill()
    holder.wait()
    with lock.acquire(blocking=True, timeout=5):
        assert lock.stale["pid"] == holder.pid
        with pytest.raises(LockedError):  # not re-entrant, even in the same process
            FileLock(path).acquire()
    assert not path.exists()


def test_two_processes_building_one_cache_build_it_once(tmp_path):
    ctx = _context()
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child_build_cache, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert all(n == 24 for _, n, _ in results)
    waited = [lines for _, _, lines in results if any("waiting for the latent cache" in x for x in lines)]
    assert len(waited) == 1  # one built, the other waited and opened what it built
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "tmp" in p.name]
    from mediadiff.train.cache import LatentCache

    cache = LatentCache(tmp_path / "cache")
    assert len(cache) == 24 and torch.isfinite(cache[23]["latent"]).all()


@pytest.mark.parametrize("ext", ["wav", "mp4"])
def test_two_writers_of_one_output_file_leave_one_whole_file(tmp_path, ext):
    from mediadiff.audio.io import read_audio
    from mediadiff.video.io import read_video

    path = tmp_path / f"out.{ext}"
    ctx = _context()
    writers = [ctx.Process(target=_child_write_media, args=(str(path), v, 10)) for v in (1, 2)]
    for w in writers:
        w.start()
    seen = 0
    while any(w.is_alive() for w in writers):
        if path.exists():  # whatever a reader sees at any moment is a whole file
            if ext == "wav":
                assert read_audio(path)[0].shape == (1, 16000 * 4)
            else:
                assert read_video(path).shape[0] == 16
            seen += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    expected = []
    for v in (1, 2):
        one = tmp_path / f"one{v}.{ext}"
        _child_write_media(str(one), v, 1)
        expected.append(one.read_bytes())
    assert path.read_bytes() in expected and seen > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_two_generate_commands_writing_one_path(tmp_path):
    """Two real `mediadiff generate audio` runs with different seeds, one output path: one whole file."""
    out = tmp_path / "tone.wav"
    cmd = [
        sys.executable,
        "-m",
        "mediadiff.cli",
        "generate",
        "audio",
        "a sine wave playing A4",
        "-o",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*cmd, "--seed", str(s)], env=env, stderr=subprocess.PIPE) for s in (1, 2)]
    assert all(p.wait(180) == 0 for p in procs)
    alone = []
    for s in (1, 2):
        one = tmp_path / f"one{s}.wav"
        subprocess.run([*cmd[:-1], str(one), "--seed", str(s)], env=env, check=True, capture_output=True)
        alone.append(one.read_bytes())
    assert out.read_bytes() in alone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item)


def test_a_signal_landing_while_the_stop_flags_are_reduced_waits_for_the_next_check():
    """The race that hung a two-process run (rank 0 in the next step's backward, rank 1 in the checkpoint's
    barrier): SIGTERM's handler ran on rank 1 just as the all-reduce of the stop flags (all False) returned,
    and rank 1 then read its own flag instead of the reduced one. Every process must follow the reduce."""
    stop = GracefulStop()
    seen = []

    def any_process(flag: bool) -> bool:
        seen.append(flag)
        if len(seen) == 1:
            stop._handle(signal.SIGTERM, None)  # the handler runs as the reduce returns...
            return False  # ...whose sum, taken before it, had no process asking to stop
        return flag

    rank = types.SimpleNamespace(_any_process=any_process)
    assert Trainer._stop_requested(rank, stop) is False  # what the other processes decided
    assert stop.requested == "SIGTERM"  # kept for the next check, where every process sees it
    assert Trainer._stop_requested(rank, stop) is True and seen == [False, True]
    asked_elsewhere = GracefulStop()  # another process got the signal: this one stops too, at the same step
    assert Trainer._stop_requested(types.SimpleNamespace(_any_process=lambda flag: True), asked_elsewhere)
    assert asked_elsewhere.requested == "SIGTERM"


def test_sigterm_to_one_of_two_processes_stops_both_at_one_checkpoint(tmp_path):
    """Under torchrun, a signal that reaches one worker stops every worker after the same step."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "recipes/examples/tiny_latent.py"), "--max-steps", "100000", "--output-dir", str(out),
           "--checkpoint-every", "100000"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count('"loss"') >= 2):
        time.sleep(0.1)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    rank1 = next(int(c) for c in children if _environ(int(c)).get("LOCAL_RANK") == "1")
    os.kill(rank1, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    events = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert events[-1]["event"] == "interrupted", err[-3000:]
    step = events[-1]["step"]
    ck = latest_checkpoint(out / "checkpoints")
    assert ck.name == f"step-{step:08d}" and _assert_loadable(out) == step
    assert sorted(p.name for p in ck.glob("rng-*.pt")) == ["rng-00000.pt", "rng-00001.pt"]
    # torchrun reports the first worker to end with 143 as failed (and may end the other itself)
    assert "exitcode  : 143" in err
