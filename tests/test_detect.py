"""The analytic Shapes detector: real clips read back exactly, and it reports what is drawn, not what is captioned."""

import numpy as np
import pytest
import torch

from mediadiff.video.detect import box_stats, detect, detect_batch, score
from mediadiff.video.io import to_uint8 as to_frames
from mediadiff.video.shapes import COLOURS, SHAPES, Shapes, render


def uint8(video: torch.Tensor) -> np.ndarray:
    """``[3 f h w]`` in [-1, 1] -> uint8 ``[f h w 3]``, as a pipeline returns it."""
    return to_frames(video[None])[0].numpy()


def moving(size: int, frames: int, start=(0.3, 0.5), end=(0.7, 0.5)) -> np.ndarray:
    """Object centres ``[f 2]`` (x, y) in pixels from ``start`` to ``end`` (fractions of the frame)."""
    t = np.linspace(0.0, 1.0, frames)[:, None]  # [f 1]
    return size * (np.asarray(start) + t * (np.asarray(end) - np.asarray(start)))  # [f 2]


@pytest.mark.parametrize(("size", "frames", "count"), [(32, 8, 60), (64, 17, 24)])
def test_real_shapes_clips_are_read_exactly(size, frames, count):
    data = Shapes(num_frames=frames, size=size, seed=4242)
    items = [data[i] for i in range(count)]
    found = detect_batch(np.stack([uint8(it["video"]) for it in items]))  # uint8 [b f h w 3]
    assert score(found, items) == {"colour": 1.0, "shape": 1.0, "direction": 1.0, "all": 1.0}
    assert all(d.present == 1.0 and d.travel >= 0.45 for d in found)
    # the float layout [b 3 f h w] in [-1, 1] reads the same
    floats = detect_batch(torch.stack([it["video"] for it in items[:6]]))
    assert [(d.colour, d.shape, d.direction) for d in floats] == [
        (d.colour, d.shape, d.direction) for d in found[:6]
    ]
    assert {it["direction"] for it in items} == {"left", "right", "up", "down"}


def test_every_drawn_colour_and_shape_is_read_as_drawn():
    for colour in COLOURS:
        for shape in SHAPES:
            video = render(shape, colour, moving(32, 8, (0.3, 0.7), (0.3, 0.25)), side=8.5, size=32)
            d = detect(uint8(video))
            assert (d.colour, d.shape, d.direction) == (colour, shape, "up"), (colour, shape, d)


def test_the_pixels_win_over_the_caption():
    # a circle captioned "square" and a yellow object captioned "red": the detector reads what is drawn
    circle = detect(uint8(render("circle", "red", moving(32, 8), side=9.0, size=32)))
    yellow = detect(uint8(render("square", "yellow", moving(32, 8), side=9.0, size=32)))
    labels = [{"colour": "red", "shape": "square", "direction": "right"}] * 2
    assert (circle.shape, yellow.colour) == ("circle", "yellow")
    assert score([circle, yellow], labels) == {"colour": 0.5, "shape": 0.5, "direction": 1.0, "all": 0.0}


def test_blank_and_static_clips():
    blank = detect(np.zeros((8, 32, 32, 3), np.uint8))
    assert (blank.colour, blank.shape, blank.direction, blank.present) == ("none", "none", "none", 0.0)
    still = detect(uint8(render("triangle", "cyan", np.full((8, 2), 16.0), side=9.0, size=32)))
    assert (still.colour, still.shape, still.direction) == ("cyan", "triangle", "none")
    assert still.travel < 1e-9
    # a drift below min_travel (15% of the frame) is no direction either
    slow = detect(uint8(render("square", "blue", moving(32, 8, (0.45, 0.5), (0.55, 0.5)), side=8.0, size=32)))
    assert slow.direction == "none" and 0.05 < slow.travel < 0.15
    assert (
        detect(
            uint8(render("square", "blue", moving(32, 8, (0.45, 0.5), (0.55, 0.5)), 8.0, 32)), 0.05
        ).direction
        == "right"
    )


def test_box_stats_of_the_three_shapes():
    centre = np.array([[20.3, 19.6]])  # [1 2] a sub-pixel position
    expected = {"square": (1.0, 0.5), "circle": (np.pi / 4, 0.5), "triangle": (0.5, 0.75)}
    for shape, (fill, lower) in expected.items():
        coverage = (render(shape, "green", centre, side=17.0, size=40)[1, 0].numpy() + 1) / 2  # [h w]
        got_fill, got_lower, aspect = box_stats(coverage, coverage > 0.5)
        assert got_fill == pytest.approx(fill, abs=0.04), shape
        assert got_lower == pytest.approx(lower, abs=0.04), shape
        assert abs(aspect) < 0.05, shape


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        detect(np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[f h w 3\]"):
        detect(np.zeros((4, 16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"\[3 f h w\]"):
        detect(torch.zeros(4, 2, 16, 16))
    with pytest.raises(ValueError, match="2 detections for 1 labels"):
        score([detect(np.zeros((2, 16, 16, 3), np.uint8))] * 2, [{"colour": "red"}])
