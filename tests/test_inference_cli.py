"""The Python API (Captioner) and the `captioner caption` command: good images, bad images, odd images."""
from __future__ import annotations

import copy
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.cli import main
from captioner.data.images import load_image
from captioner.encoders import mirror_pixels
from captioner.errors import CaptionerError, ImageError
from captioner.inference import Caption, Captioner

from conftest import COLOURS, SHAPES, draw_shape, write_bad_images

EXIF_ORIENTATION = 0x0112
GOOD = ["red_square_0.jpg", "green_circle_0.jpg", "blue_square_1.jpg"]


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


@pytest.fixture
def photo_folder(tiny_flickr, tmp_path):
    """Three good photos and one file of every bad kind, plus a text file the folder listing ignores."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(tiny_flickr / "images" / name, folder / name)
    bad = write_bad_images(folder)
    (folder / "readme.txt").write_text("not a picture")
    return folder, bad


def assert_well_formed(caption: Caption, captioner: Captioner) -> None:
    assert caption.tokens and caption.text == " ".join(caption.tokens)
    assert set(caption.tokens) <= set(captioner.vocabulary.words[4:])  # words only, no special tokens
    assert caption.log_probability <= 0
    steps = len(caption.tokens) + (1 if caption.finished else 0)
    assert caption.attention.shape == (steps, 7, 7)
    np.testing.assert_allclose(caption.attention.reshape(steps, -1).sum(axis=1), 1.0, rtol=1e-5)


# ---- the Python API ----

def test_caption_paths_pil_images_and_bytes_alike(tiny_captioner, tiny_flickr):
    path = tiny_flickr / "images" / "red_square_0.jpg"
    from_path, from_string = tiny_captioner.caption(path)[0], tiny_captioner.caption(str(path))[0]
    with Image.open(path) as opened:
        from_pil = tiny_captioner.caption(opened)[0]
    from_bytes = tiny_captioner.caption(path.read_bytes())[0]
    for caption in (from_path, from_string, from_pil, from_bytes):
        assert caption.text == from_path.text
        assert caption.log_probability == pytest.approx(from_path.log_probability, abs=1e-5)
    assert_well_formed(from_path, tiny_captioner)
    assert from_path.finished
    record = from_path.to_dict(attention=True)
    assert json.loads(json.dumps(record))["text"] == from_path.text
    assert np.asarray(record["attention"]).shape == from_path.attention.shape
    assert "attention" not in from_path.to_dict()


def test_flip_ensemble_decodes_both_views_and_needs_the_mirrored_grid(tiny_captioner, tiny_flickr):
    path = tiny_flickr / "images" / "red_square_0.jpg"
    assert tiny_captioner.encode([path])[1] is None  # the tiny run decodes without flips
    grid, mirrored = tiny_captioner.encode([path], flip_ensemble=True)
    pixels = tiny_captioner.encoder.preprocess(load_image(path)).unsqueeze(0)
    torch.testing.assert_close(grid, tiny_captioner.encoder.encode(pixels), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mirrored, tiny_captioner.encoder.encode(mirror_pixels(pixels)), atol=1e-4, rtol=1e-4)
    both = tiny_captioner.decode(grid, mirrored, flip_ensemble=True)[0]
    assert_well_formed(both, tiny_captioner)
    from_path = tiny_captioner.caption(path, flip_ensemble=True)[0]
    assert from_path.text == both.text
    assert from_path.log_probability == pytest.approx(both.log_probability, abs=1e-5)
    assert both.log_probability != tiny_captioner.decode(grid)[0].log_probability  # the mirrored view votes
    with pytest.raises(CaptionerError, match="needs the mirrored photos' grid"):
        tiny_captioner.decode(grid, flip_ensemble=True)


def test_cli_flip_ensemble_option(tiny_run, tiny_flickr, capsys):
    path = str(tiny_flickr / "images" / "red_square_0.jpg")
    assert main(["caption", str(tiny_run), path, "--json", "--flip-ensemble"]) == 0
    flipped = json.loads(capsys.readouterr().out)
    assert main(["caption", str(tiny_run), path, "--json", "--no-flip-ensemble"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert flipped[0]["text"] and plain[0]["text"]


def test_package_exports_the_python_api(tiny_run, tiny_flickr):
    import captioner

    loaded = captioner.Captioner.load(tiny_run)
    assert isinstance(loaded.caption(tiny_flickr / "images" / "red_square_0.jpg")[0], captioner.Caption)


def test_tiny_model_names_colour_and_shape(tiny_captioner, tiny_flickr):
    names = [f"{colour}_{shape}_0.jpg" for colour in COLOURS for shape in SHAPES]
    captions = tiny_captioner.caption([tiny_flickr / "images" / name for name in names])
    right = [name for name, caption in zip(names, captions, strict=True)
             if set(name.split("_")[:2]) <= set(caption.tokens)]
    assert len(right) >= 5, [caption.text for caption in captions]


def test_n_best_alternatives_are_sorted_and_distinct(tiny_captioner, tiny_flickr):
    [best] = tiny_captioner.caption(tiny_flickr / "images" / "green_circle_0.jpg", beam_size=4, n_best=3)
    candidates = [best, *best.alternatives]
    assert len(candidates) == 3
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
    assert len({c.text for c in candidates}) == 3
    for candidate in candidates:
        assert_well_formed(candidate, tiny_captioner)
    assert [item["text"] for item in best.to_dict()["alternatives"]] == [c.text for c in best.alternatives]


def test_caption_many_captions_the_good_and_reports_the_bad(tiny_captioner, photo_folder, tmp_path):
    folder, bad = photo_folder
    inputs = [folder / GOOD[0], bad["empty"], tmp_path / "missing.jpg", folder / GOOD[1], bad["text"], bad["garbage"],
              tmp_path, bad["truncated"], bad["huge"], folder / GOOD[2], b"", b"\x89PNG not really"]
    results = tiny_captioner.caption_many(inputs, batch_size=2)
    assert len(results) == len(inputs)
    expected_errors = {1: "empty file", 2: "file not found", 4: "not an image file", 5: "not an image file",
                       6: "not a file", 7: "corrupt or truncated image", 8: "over the 50000000-pixel limit",
                       10: "empty file", 11: "not an image file"}
    for position, result in enumerate(results):
        if position in expected_errors:
            assert isinstance(result, ImageError), (position, result)
            assert expected_errors[position] in str(result)
        else:
            assert isinstance(result, Caption)
            assert_well_formed(result, tiny_captioner)
    # the good images get the same captions as when captioned alone
    alone = tiny_captioner.caption([folder / name for name in GOOD])
    assert [results[0].text, results[3].text, results[9].text] == [caption.text for caption in alone]


def test_caption_raises_the_image_error(tiny_captioner, tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        tiny_captioner.caption(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="empty file"):
        tiny_captioner.caption([draw_shape("red", "square", 0), b""])


def odd_modes() -> dict[str, tuple[bytes, str | None]]:
    """Each image in an unusual mode, with the colour word it should still be captioned with (None: any)."""
    red_square = draw_shape("red", "square", 0)
    blue_circle = draw_shape("blue", "circle", 0)
    transparent = Image.new("RGBA", red_square.size, (0, 0, 0, 0))
    transparent.paste(red_square.crop((14, 14, 82, 82)), (14, 14))  # a red square on a see-through background
    sixteen_bit = Image.fromarray(np.asarray(blue_circle.convert("L"), dtype=np.uint16) * 257)
    cmyk = io.BytesIO()
    red_square.convert("CMYK").save(cmyk, format="JPEG", quality=95)
    return {
        "grayscale": (png_bytes(red_square.convert("L")), None),
        "cmyk": (cmyk.getvalue(), "red"),
        "palette": (png_bytes(blue_circle.convert("P", palette=Image.ADAPTIVE, colors=16)), "blue"),
        "alpha": (png_bytes(transparent), "red"),
        "sixteen-bit": (png_bytes(sixteen_bit), None),
    }


def test_odd_modes_are_converted_and_captioned(tiny_captioner):
    modes = odd_modes()
    assert Image.open(io.BytesIO(modes["sixteen-bit"][0])).mode.startswith("I")
    assert Image.open(io.BytesIO(modes["cmyk"][0])).mode == "CMYK"
    results = tiny_captioner.caption_many([data for data, _ in modes.values()])
    for (mode, (_, colour)), result in zip(modes.items(), results, strict=True):
        assert isinstance(result, Caption), f"{mode}: {result}"
        assert_well_formed(result, tiny_captioner)
        if colour:
            assert colour in result.tokens, f"{mode}: {result.text}"


def test_exif_rotated_photo_is_turned_upright_before_captioning(tiny_captioner, tmp_path):
    upright = Image.new("RGB", (120, 80), (245, 245, 245))
    upright.paste(draw_shape("green", "circle", 1).crop((8, 8, 88, 88)), (20, 0))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a camera held sideways stores it
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "sideways.png"
    path.write_bytes(png_bytes(stored, exif=exif))
    rotated, reference = tiny_captioner.caption([path, upright])
    assert rotated.text == reference.text
    assert rotated.log_probability == pytest.approx(reference.log_probability, abs=1e-6)
    np.testing.assert_allclose(rotated.attention, reference.attention, atol=1e-6)


def test_a_model_that_never_ends_still_gives_a_caption(tiny_captioner, tiny_flickr):
    endless = copy.copy(tiny_captioner)
    endless.decoder = copy.deepcopy(tiny_captioner.decoder)
    endless.decoder.output.bias.data[tiny_captioner.vocabulary.end_id] = float("-inf")
    for beam_size in (1, 3):
        [caption] = endless.caption(tiny_flickr / "images" / "red_square_0.jpg", beam_size=beam_size, max_length=6)
        assert len(caption.tokens) == 6 and len(caption.text.split()) == 6
        assert not caption.finished
        assert np.isfinite(caption.log_probability)
        assert_well_formed(caption, tiny_captioner)
    assert tiny_captioner.caption(tiny_flickr / "images" / "red_square_0.jpg")[0].finished  # the shared one is untouched


def test_captions_never_contain_unk(tiny_captioner, tiny_flickr):
    unk_loving = copy.copy(tiny_captioner)
    unk_loving.decoder = copy.deepcopy(tiny_captioner.decoder)
    unk_loving.decoder.output.bias.data[tiny_captioner.vocabulary.unk_id] += 50.0
    [caption] = unk_loving.caption(tiny_flickr / "images" / "blue_circle_0.jpg", beam_size=3, n_best=3)
    for candidate in (caption, *caption.alternatives):
        assert "<unk>" not in candidate.text
        assert_well_formed(candidate, tiny_captioner)


# ---- the command line ----

def test_cli_captions_a_folder_lists_the_bad_images_and_fails(tiny_run, photo_folder, capsys):
    folder, bad = photo_folder
    assert main(["caption", str(tiny_run), str(folder), "--batch-size", "2"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(folder / name) for name in sorted(GOOD)]
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1].strip() for line in lines)
    for path in bad.values():
        assert f"error: {path}: " in err
    assert "readme.txt" not in out + err
    assert err.rstrip().endswith(f"{len(bad)} of {len(bad) + len(GOOD)} images failed")


def test_cli_exit_code_is_zero_when_every_image_is_captioned(tiny_run, tiny_flickr, tmp_path, capsys):
    paths = [str(tiny_flickr / "images" / name) for name in GOOD]
    assert main(["caption", str(tiny_run), *paths, "--json", "--n-best", "2"]) == 0
    out, err = capsys.readouterr()
    records = json.loads(out)
    assert [record["image"] for record in records] == paths
    for record in records:
        assert record["text"] and record["log_probability"] <= 0
        assert len(record["alternatives"]) == 1
    assert "failed" not in err


def test_cli_json_lists_errors_too(tiny_run, tiny_flickr, tmp_path, capsys):
    good = tiny_flickr / "images" / GOOD[0]
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    code = main(["caption", str(tiny_run), str(good), str(tmp_path / "missing.jpg"), str(empty), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    records = json.loads(out)
    assert records[0]["image"] == str(good) and records[0]["text"]
    assert records[1] == {"image": str(tmp_path / "missing.jpg"), "error": f"{tmp_path / 'missing.jpg'}: file not found"}
    assert f"error: {empty}: no images in this folder" in err


def test_cli_empty_folder_is_a_failure_even_beside_good_images(tiny_run, tiny_flickr, tmp_path, capsys):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures")
    assert main(["caption", str(tiny_run), str(empty)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {empty}: no images in this folder", "error: nothing to caption"]
    assert main(["caption", str(tiny_run), str(empty), str(tiny_flickr / "images" / GOOD[0])]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(str(tiny_flickr / "images" / GOOD[0]) + "\t")
    assert f"error: {empty}: no images in this folder" in err


def test_cli_n_best_prints_ranked_candidates(tiny_run, tiny_flickr, capsys):
    path = tiny_flickr / "images" / GOOD[1]
    assert main(["caption", str(tiny_run), str(path), "--beam", "3", "--n-best", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{path}\t(score: what the list is ranked by")
    scores = [float(line.split()[1]) for line in lines[1:]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)


def test_cli_n_best_shows_the_reranked_score_the_list_is_sorted_by(tiny_run, tiny_flickr, capsys):
    # with a heavy consensus weight the ranking score and the log-probability disagree: the printed score must be
    # the one the order follows, the log-probability beside it
    path = tiny_flickr / "images" / GOOD[1]
    options = ["--beam", "4", "--n-best", "4", "--rerank-neighbours", "3", "--rerank-weight", "50"]
    assert main(["caption", str(tiny_run), str(path), *options]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert main(["caption", str(tiny_run), str(path), *options, "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    candidates = [record, *record["alternatives"]]
    for line, candidate in zip(lines, candidates, strict=True):
        words = line.split()
        assert words[0] == "score" and words[2:4] == ["log", "p"] and " ".join(words[5:]) == candidate["text"]
        assert float(words[1]) == pytest.approx(candidate["score"], abs=1e-3)
        assert float(words[4]) == pytest.approx(candidate["log_probability"], abs=1e-3)
    assert [candidate["score"] for candidate in candidates] == sorted((c["score"] for c in candidates), reverse=True)


@pytest.mark.parametrize(("option", "value", "reason"), [
    ("--n-best", "0", "expected a number >= 1, got 0"),
    ("--beam", "-2", "expected a number >= 1, got -2"),
    ("--batch-size", "0", "expected a number >= 1, got 0"),
    ("--beam", "three", "expected a whole number, got 'three'"),
])
def test_cli_refuses_bad_sizes_with_a_usage_error(tiny_run, tiny_flickr, capsys, option, value, reason):
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", str(tiny_run), str(tiny_flickr / "images" / GOOD[0]), option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {reason}" in err
    assert "Traceback" not in err
