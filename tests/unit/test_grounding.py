"""Grounding post-processing: pure functions, checked against transformers' own decoder."""

from __future__ import annotations

import math
import random

import pytest
from transformers.models.kosmos2.processing_kosmos2 import (
    clean_text_and_extract_entities_with_bboxes,
    coordinate_to_patch_index,
    patch_index_to_coordinate,
)

from kosmos2_engine import (
    box_to_patch_indices,
    box_to_pixel_xyxy,
    drop_unconfident_boxes,
    parse_grounded_pieces,
    patch_indices_to_box,
)

SP = "\u2581"
SNOWMAN = [
    SP + "An",
    SP + "image",
    SP + "of",
    "<phrase>",
    SP + "a",
    SP + "snowman",
    "</phrase>",
    "<object>",
    "<patch_index_0044>",
    "<patch_index_0863>",
    "</object>",
    SP + "warming",
    SP + "himself",
    SP + "by",
    "<phrase>",
    SP + "a",
    SP + "fire",
    "</phrase>",
    "<object>",
    "<patch_index_0005>",
    "<patch_index_0911>",
    "</object>",
    ".",
    "</s>",
]


def hf_entities(pieces):
    """transformers' reading of the same stream, decoded the way its tokenizer joins pieces."""
    text = "".join(pieces).split("</s>")[0].replace(SP, " ")
    clean, entities = clean_text_and_extract_entities_with_bboxes(text)
    return clean, [(name, span, boxes) for name, span, boxes in entities if not name.startswith("<")]


def ours(pieces, probs=None):
    grounded = parse_grounded_pieces(pieces, probs or [1.0] * len(pieces))
    return grounded.text, [(p.phrase, p.span, [b.xyxy for b in p.boxes]) for p in grounded.phrases]


def test_snowman_matches_the_documented_output():
    text, entities = ours(SNOWMAN)
    assert text == "An image of a snowman warming himself by a fire."
    assert entities == [
        ("a snowman", (12, 21), [(0.390625, 0.046875, 0.984375, 0.828125)]),
        ("a fire", (41, 47), [(0.171875, 0.015625, 0.484375, 0.890625)]),
    ]
    assert (text, entities) == hf_entities(SNOWMAN)


def test_confidence_is_geometric_mean_of_the_two_location_probabilities():
    probs = [1.0] * len(SNOWMAN)
    probs[8], probs[9] = 0.81, 0.25  # the snowman's corners
    grounded = parse_grounded_pieces(SNOWMAN, probs)
    assert grounded.phrases[0].boxes[0].score == pytest.approx(math.sqrt(0.81 * 0.25))
    assert grounded.phrases[1].boxes[0].score == pytest.approx(1.0)


def test_several_boxes_for_one_phrase():
    pieces = [
        "<phrase>",
        SP + "two",
        SP + "dogs",
        "</phrase>",
        "<object>",
        "<patch_index_0015>",
        "<patch_index_1020>",
        "</delimiter_of_multi_objects/>",
        "<patch_index_0039>",
        "<patch_index_0975>",
        "</object>",
    ]
    text, entities = ours(pieces)
    assert entities == [
        ("two dogs", (0, 8), [patch_index_to_coordinate(15, 1020, 32), patch_index_to_coordinate(39, 975, 32)])
    ]
    assert (text, entities) == hf_entities(pieces)


def _random_well_formed_stream(rng: random.Random) -> list[str]:
    words = [SP + w for w in ["a", "the", "red", "dog", "cat", "on", "left", "of", "image", "an"]] + [".", ","]
    pieces: list[str] = []
    for _ in range(rng.randint(1, 5)):
        pieces += rng.choices(words, k=rng.randint(0, 3))
        if rng.random() < 0.7:
            pieces += ["<phrase>"] + rng.choices(words[:-2], k=rng.randint(1, 3)) + ["</phrase>"]
            pairs = []
            for _ in range(rng.randint(1, 3)):
                ul = rng.randrange(1024)
                lr = rng.randrange((ul // 32) * 32 + ul % 32, 1024)  # lower row or same row
                lr = (lr // 32) * 32 + max(lr % 32, ul % 32)
                pairs.append([f"<patch_index_{ul:04d}>", f"<patch_index_{lr:04d}>"])
            body = pairs[0]
            for pair in pairs[1:]:
                body += ["</delimiter_of_multi_objects/>"] + pair
            pieces += ["<object>"] + body + ["</object>"]
    return pieces


@pytest.mark.parametrize("seed", range(200))
def test_agrees_with_transformers_on_well_formed_streams(seed):
    pieces = _random_well_formed_stream(random.Random(seed))
    assert ours(pieces) == hf_entities(pieces)


@pytest.mark.parametrize("seed", range(200))
def test_malformed_streams_never_raise_nor_invert(seed):
    rng = random.Random(seed)
    vocab = [
        "<phrase>",
        "</phrase>",
        "<object>",
        "</object>",
        "</delimiter_of_multi_objects/>",
        "<grounding>",
        SP + "a",
        SP + "dog",
        ".",
    ] + [f"<patch_index_{rng.randrange(1024):04d}>" for _ in range(6)]
    pieces = rng.choices(vocab, k=rng.randint(0, 40))
    grounded = parse_grounded_pieces(pieces, [rng.random() for _ in pieces])
    for phrase in grounded.phrases:
        assert phrase.phrase and grounded.text[slice(*phrase.span)] == phrase.phrase
        for box in phrase.boxes:
            x1, y1, x2, y2 = box.xyxy
            assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1 and 0 <= box.score <= 1


def test_reversed_corners_are_swapped_not_inverted():
    assert patch_indices_to_box(863, 44) == patch_indices_to_box(44, 863)


def test_parsing_stops_at_end_of_text_and_drops_phrase_without_object():
    pieces = [
        "<phrase>",
        SP + "a",
        SP + "cat",
        "</phrase>",
        SP + "sits",
        "</s>",
        "<object>",
        "<patch_index_0000>",
        "<patch_index_0001>",
        "</object>",
    ]
    grounded = parse_grounded_pieces(pieces, [1.0] * len(pieces))
    assert grounded.text == "a cat sits" and grounded.phrases == ()


@pytest.mark.parametrize("ul,lr", [(0, 0), (0, 1023), (44, 863), (5, 911), (33, 33 + 32 * 5), (70, 90)])
def test_patch_decoding_matches_transformers(ul, lr):
    assert patch_indices_to_box(ul, lr) == pytest.approx(patch_index_to_coordinate(ul, lr, 32))


@pytest.mark.parametrize("box", [(0.39, 0.05, 0.98, 0.83), (0.0, 0.0, 1.0, 1.0), (0.1, 0.2, 0.3, 0.9)])
def test_patch_encoding_matches_transformers(box):
    assert box_to_patch_indices(box) == coordinate_to_patch_index(box, 32)


def test_pixel_boxes_are_clipped_and_never_inverted():
    assert box_to_pixel_xyxy((0.25, 0.5, 0.75, 1.0), width=200, height=100) == (50, 50, 149, 99)
    assert box_to_pixel_xyxy((-0.5, -1.0, 2.0, 3.0), width=30, height=10) == (0, 0, 29, 9)
    assert box_to_pixel_xyxy((0.5, 0.5, 0.5, 0.5), width=1, height=1) == (0, 0, 0, 0)


def test_drop_unconfident_boxes_keeps_text_and_strong_boxes():
    probs = [1.0] * len(SNOWMAN)
    probs[8] = probs[9] = 0.1  # the snowman box scores 0.1
    grounded = drop_unconfident_boxes(parse_grounded_pieces(SNOWMAN, probs), 0.5)
    assert grounded.text.startswith("An image of a snowman")
    assert [p.phrase for p in grounded.phrases] == ["a fire"]


SKIPPED = ("<s>", "<pad>", "<unk>", "<mask>")


def hf_entities_skipping_special_tokens(pieces):
    """transformers' reading of a stream decoded with ``skip_special_tokens=True``, as its
    Kosmos-2 examples decode before ``post_process_generation``."""
    return hf_entities([piece for piece in pieces if piece not in SKIPPED])


@pytest.mark.parametrize("token", SKIPPED)
def test_a_special_token_inside_a_phrase_is_dropped_from_the_text_and_the_phrase_keeps_its_box(token):
    pieces = [SP + "a", "<phrase>", SP + "a", SP + "red", SP, "c", "a", "f", token, SP + "square", "</phrase>",
              "<object>", "<patch_index_0044>", "<patch_index_0863>", "</object>", "</s>"]  # fmt: skip
    text, entities = ours(pieces)
    assert text == "a a red caf square" and entities == [("a red caf square", (2, 18), [patch_indices_to_box(44, 863)])]
    assert (text, entities) == hf_entities_skipping_special_tokens(pieces)


def test_a_phrase_that_interrupts_a_broken_object_starts_a_phrase():
    broken = ["<phrase>", SP + "a", SP + "cat", "</phrase>", "<object>", "<patch_index_0001>"]
    second = ["<phrase>", SP + "a", SP + "dog", "</phrase>", "<object>", "<patch_index_0034>", "<patch_index_0100>",
              "</object>"]  # fmt: skip
    pieces = [SP + "An", SP + "image", SP + "of", *broken, *second, "</s>"]
    text, entities = ours(pieces)
    assert text == "An image of a cat a dog"
    assert entities == [("a dog", (18, 23), [patch_indices_to_box(34, 100)])]
    assert (text, entities) == hf_entities(pieces)


@pytest.mark.parametrize("breaker", ["<object>", "</phrase>", SP + "word", "<patch_index_0005>", "<grounding>"])
def test_whatever_breaks_an_object_is_read_as_transformers_reads_it(breaker):
    pieces = [SP + "x", "<phrase>", SP + "a", "</phrase>", "<object>", "<patch_index_0001>", "<patch_index_0002>",
              breaker, "<phrase>", SP + "b", "</phrase>", "<object>", "<patch_index_0003>", "<patch_index_0099>",
              "</object>", "</s>"]  # fmt: skip
    assert ours(pieces) == hf_entities(pieces)


def test_an_rgba_image_is_composited_onto_white_as_transformers_does():
    import numpy as np
    from PIL import Image
    from transformers.image_transforms import convert_to_rgb

    from kosmos2_engine.imaging import to_rgb

    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.linspace(0, 255, 10).astype(np.uint8)  # red, transparent to opaque
    expected = convert_to_rgb(Image.fromarray(rgba, "RGBA"), return_numpy=True)
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(rgba, "RGBA"))), expected)
    assert np.array_equal(np.asarray(to_rgb(rgba)), convert_to_rgb(rgba, return_numpy=True))
    assert expected[0, 0].tolist() == [255, 255, 255] and expected[0, -1].tolist() == [200, 0, 0]
    palette = Image.fromarray(rgba, "RGBA").convert("P")  # a palette image with a transparent entry
    palette.info["transparency"] = palette.getpixel((0, 0))
    assert np.array_equal(np.asarray(to_rgb(palette)), convert_to_rgb(palette, return_numpy=True))
