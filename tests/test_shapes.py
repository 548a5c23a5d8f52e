import re

import numpy as np
import pytest
import torch

from mediadiff.video.shapes import (
    COLOUR_RGB,
    COLOURS,
    DIRECTION_PHRASES,
    DIRECTIONS,
    HELDOUT_TEMPLATES,
    SHAPE_SYNONYMS,
    SHAPES,
    TRAIN_TEMPLATES,
    Shapes,
    caption,
)

# --------------------------------------------------------------------------- an independent detector


def detect(video: torch.Tensor) -> dict:
    """Read colour, shape and direction back from the pixels of a [3 f h w] clip in [-1, 1]."""
    img = (video + 1) / 2  # [3 f h w] in [0, 1]
    intensity = img.max(dim=0).values  # [f h w] per-pixel coverage (pure colours)
    mask = intensity >= 0.5  # [f h w]

    solid = intensity > 0.99  # [f h w] fully covered pixels carry the exact colour
    rgb = (img[:, solid].mean(dim=1) * 255).numpy()  # [3]
    colour = min(COLOURS, key=lambda c: np.abs(rgb - np.asarray(COLOUR_RGB[c])).sum())

    # fill ratio of the bounding box, with sub-pixel extents: the object's width is the sum over columns
    # of the largest coverage in the column (partial edge columns count their fraction), same for height
    width = intensity.amax(dim=1).sum(dim=1)  # [f]
    height = intensity.amax(dim=2).sum(dim=1)  # [f]
    fill = float(
        (intensity.sum(dim=(1, 2)) / (width * height)).median()
    )  # square ~1, circle ~pi/4, triangle ~1/2
    shape = min(
        {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}.items(), key=lambda kv: abs(kv[1] - fill)
    )[0]

    h, w = intensity.shape[1:]
    ys = torch.arange(h, dtype=torch.float64)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float64)[None, :] + 0.5
    cov = intensity.double()  # [f h w]
    area = cov.sum(dim=(1, 2))  # [f]
    cx = (cov * xs).sum(dim=(1, 2)) / area  # [f]
    cy = (cov * ys).sum(dim=(1, 2)) / area  # [f]
    dx, dy = (cx[-1] - cx[0]).item(), (cy[-1] - cy[0]).item()
    if abs(dx) > abs(dy):
        direction = "right" if dx > 0 else "left"
    else:
        direction = "down" if dy > 0 else "up"  # image y grows downwards
    return {
        "colour": colour,
        "shape": shape,
        "direction": direction,
        "fill": fill,
        "cx": cx,
        "cy": cy,
        "area": area,
        "mask": mask,
    }


# --------------------------------------------------------------------------- tests


def test_constants():
    assert COLOURS == ("red", "green", "blue", "yellow", "magenta", "cyan")
    assert SHAPES == ("square", "circle", "triangle")
    assert DIRECTIONS == ("left", "right", "up", "down")
    assert len(TRAIN_TEMPLATES) >= 8
    assert len(HELDOUT_TEMPLATES) >= 3
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)


def test_deterministic_in_index_and_seed():
    a = Shapes(num_frames=5, size=32, seed=3)
    b = Shapes(num_frames=5, size=32, seed=3)
    for i in (0, 7, 10**6):
        x, y = a[i], b[i]
        assert torch.equal(x["video"], y["video"])
        assert x["text"] == y["text"] and x["colour"] == y["colour"] and x["direction"] == y["direction"]
    assert not torch.equal(a[1]["video"], a[2]["video"])
    assert not torch.equal(a[1]["video"], Shapes(num_frames=5, size=32, seed=4)[1]["video"])


def test_item_layout_and_range():
    item = Shapes(num_frames=17, size=64)[0]
    v = item["video"]
    assert v.shape == (3, 17, 64, 64) and v.dtype == torch.float32
    assert v.min() == -1.0 and v.max() == 1.0
    assert item["colour"] == COLOURS[item["colour_id"]]
    assert item["shape"] == SHAPES[item["shape_id"]]
    assert item["direction"] == DIRECTIONS[item["direction_id"]]


@pytest.mark.parametrize("size", [32, 64])
def test_labels_match_pixels(size):
    data = Shapes(num_frames=16, size=size, seed=0)
    seen = {"colour": set(), "shape": set(), "direction": set()}
    for i in range(40):
        item = data[i]
        found = detect(item["video"])
        for key in seen:
            assert found[key] == item[key], f"index {i}: {key} drawn as {found[key]}, labelled {item[key]}"
            seen[key].add(item[key])
    assert seen["shape"] == set(SHAPES) and seen["direction"] == set(DIRECTIONS) and len(seen["colour"]) >= 5


def test_object_stays_inside_and_crosses_half_the_frame():
    size = 32
    data = Shapes(num_frames=16, size=size, seed=1)
    for i in range(30):
        item = data[i]
        found = detect(item["video"])
        # the object keeps at least one pixel from every edge: the border is black in every frame
        video = item["video"]  # [3 f h w]
        for border in (video[..., 0, :], video[..., -1, :], video[..., :, 0], video[..., :, -1]):
            assert (border == -1).all(), f"index {i}: object touches the frame edge"
        area = found["area"]
        assert (area.max() - area.min()) / area.mean() < 0.1, f"index {i}: object area changes"
        # object side is about a quarter of the frame
        side = area.mean().sqrt().item()
        assert size / 8 < side < size / 3
        track = found["cx"] if item["direction"] in ("left", "right") else found["cy"]
        assert abs(track[-1] - track[0]) >= size / 2 - 1e-6, (
            f"index {i}: moves {abs(track[-1] - track[0]):.1f}px"
        )
        steps = track.diff()  # constant speed (up to the 1/4-pixel quantisation of 4x supersampling)
        assert torch.allclose(steps, steps.mean().expand_as(steps), atol=0.3)


def test_captions_mention_the_labels():
    data = Shapes(num_frames=2, size=16, seed=0)
    used = set()
    for i in range(200):
        item = data[i]
        text = item["text"]
        assert item["colour"] in text
        assert any(re.search(rf"\b{w}\b", text) for w in SHAPE_SYNONYMS[item["shape"]]), text
        assert any(p in text for p in DIRECTION_PHRASES[item["direction"]].values()), text
        used.add(template_of(text, item))
    assert used <= set(TRAIN_TEMPLATES) and len(used) == len(TRAIN_TEMPLATES)


def test_heldout_templates():
    data = Shapes(num_frames=2, size=16, seed=0, templates="heldout")
    used = {template_of(data[i]["text"], data[i]) for i in range(100)}
    assert used == set(HELDOUT_TEMPLATES)
    both = Shapes(num_frames=2, size=16, seed=0, templates="all")
    used = {template_of(both[i]["text"], both[i]) for i in range(300)}
    assert used == set(TRAIN_TEMPLATES) | set(HELDOUT_TEMPLATES)


def template_of(text: str, item: dict) -> str:
    """The template (from all of them) that produces ``text`` for the item's labels."""
    for template in TRAIN_TEMPLATES + HELDOUT_TEMPLATES:
        for word in SHAPE_SYNONYMS[item["shape"]]:
            if caption(item["colour"], item["shape"], item["direction"], template, word) == text:
                return template
    raise AssertionError(f"caption {text!r} comes from no template")


def test_infinite_and_nominal_length():
    data = Shapes(length=5, num_frames=2, size=16)
    assert len(data) == 5
    assert data[1000]["video"].shape == (3, 2, 16, 16)  # indices past the nominal length are valid
    with pytest.raises(IndexError, match="index must be >= 0"):
        data[-1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="templates"):
        Shapes(templates="test")
    with pytest.raises(ValueError, match="num_frames"):
        Shapes(num_frames=1)
    with pytest.raises(ValueError, match="size"):
        Shapes(size=8)
    with pytest.raises(ValueError, match="colour"):
        caption("purple", "circle", "left", TRAIN_TEMPLATES[0])
    with pytest.raises(ValueError, match="synonym"):
        caption("red", "circle", "left", TRAIN_TEMPLATES[0], "box")


def test_new_colours_are_an_option_that_leaves_the_default_stream_alone():
    from mediadiff.video.detect import detect
    from mediadiff.video.shapes import ALL_COLOURS, COLOURS, EXTRA_COLOURS

    plain, same = (
        Shapes(8, num_frames=4, size=32, seed=3),
        Shapes(8, num_frames=4, size=32, seed=3, colours=COLOURS),
    )
    for i in range(8):
        assert plain[i]["text"] == same[i]["text"] and torch.equal(plain[i]["video"], same[i]["video"])
    new = Shapes(40, num_frames=4, size=32, seed=3, colours=EXTRA_COLOURS)
    items = [new[i] for i in range(40)]
    assert {it["colour"] for it in items} == set(EXTRA_COLOURS)
    assert all(it["colour"] in it["text"] and ALL_COLOURS[it["colour_id"]] == it["colour"] for it in items)
    # the detector reads a new colour only with it in the palette (the six-colour palette cannot)
    assert all(detect(it["video"], colours=ALL_COLOURS).colour == it["colour"] for it in items)
    assert all(detect(it["video"]).colour in COLOURS for it in items)
    with pytest.raises(ValueError, match="colours must be distinct names"):
        Shapes(colours=("red", "mauve"))
    with pytest.raises(ValueError, match="colours must be names"):
        detect(items[0]["video"], colours=("mauve",))
