"""Consensus reranking: the caption memory, nearest training images, and reranked beam candidates."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from captioner.checkpoint import load_run
from captioner.cli import main
from captioner.data.flickr import load_prepared
from captioner.decoding import Hypothesis
from captioner.errors import CaptionerError
from captioner.inference import Captioner
from captioner.reranking import MEMORY_FILE, CaptionMemory, pooled_features, save_memory
from captioner.reward import CiderD


def grids(images: int, *, pixels: int = 4, channels: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn((images, pixels, channels), generator=torch.Generator().manual_seed(seed)).half()


# three training images: "dog on grass" (twice) and "man in water" captions, as token ids
DOG, MAN = [[1, 2, 3, 4], [1, 2, 3, 5, 4], [6, 2, 3, 4]], [[7, 8, 9, 10], [7, 8, 11, 9, 10], [12, 8, 9, 10]]


def hypothesis(token_ids: list[int], score: float) -> Hypothesis:
    return Hypothesis(token_ids, score, score, torch.zeros((len(token_ids), 4)), True)


def test_consensus_is_cider_d_against_the_references_of_all_the_images():
    reward = CiderD({"a": DOG, "b": MAN, "c": [DOG[0], MAN[1], [5, 5, 6]]})
    candidate = [1, 2, 3, 4]
    # every image has 3 references, so the pooled score is the mean of the per-image scores
    assert reward.consensus(["a", "b"], candidate) == pytest.approx((reward.score("a", candidate) + reward.score("b", candidate)) / 2)
    assert reward.consensus(["a"], candidate) == reward.score("a", candidate)


def test_memory_round_trips_through_safetensors(tmp_path):
    grid = grids(3)
    save_memory(tmp_path / MEMORY_FILE, grid, [DOG, MAN, DOG[:2]])
    loaded = CaptionMemory.load(tmp_path / MEMORY_FILE)
    assert loaded.captions == [DOG, MAN, DOG[:2]]
    assert torch.allclose(loaded.features, pooled_features(grid), atol=1e-3)
    assert loaded.features.norm(dim=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)


def test_a_broken_memory_file_is_a_one_line_captioner_error(tmp_path):
    (tmp_path / MEMORY_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CaptionerError):
        CaptionMemory.load(tmp_path / MEMORY_FILE)


def test_nearest_finds_the_same_photo_first():
    grid = grids(5)
    memory = CaptionMemory(pooled_features(grid), [DOG] * 5)
    nearest = memory.nearest(grid[[3, 1]], 2)
    assert nearest.shape == (2, 2)
    assert nearest[:, 0].tolist() == [3, 1]
    assert memory.nearest(grid[:1], 99).shape == (1, 5)  # never more neighbours than photos


def test_reranking_promotes_the_candidate_the_neighbours_agree_with():
    grid = grids(2)
    memory = CaptionMemory(pooled_features(grid), [DOG, MAN])
    beam = [[hypothesis([7, 8, 9, 10], -0.5), hypothesis([1, 2, 3, 4], -0.6)]]  # the model prefers "man" for a dog photo
    assert [h.token_ids for h in memory.rerank(grid[:1], beam, neighbours=1, weight=0.0)[0]] == [[7, 8, 9, 10], [1, 2, 3, 4]]
    reranked = memory.rerank(grid[:1], beam, neighbours=1, weight=1.0)[0]
    assert [h.token_ids for h in reranked] == [[1, 2, 3, 4], [7, 8, 9, 10]]
    consensus = memory.cider.consensus(["0"], [1, 2, 3, 4])
    assert consensus > 0
    assert reranked[0].score == pytest.approx(-0.6 + consensus)
    assert reranked[0].log_probability == -0.6  # only the ranking score changes


def test_training_writes_the_memory_of_its_training_photos(tiny_run):
    run = load_run(tiny_run)
    _, splits, _ = load_prepared(run.config.data.prepared_dir)
    training = splits["train"]
    memory = CaptionMemory.load(tiny_run / MEMORY_FILE)
    assert memory.features.shape == (len(training), 1280)
    expected = [[run.vocabulary.encode(words)[1:-1] for words in training[name]] for name in sorted(training)]
    assert memory.captions == expected


def test_captioner_reranks_when_asked(tiny_captioner, tiny_run):
    grid = grids(2, pixels=49, channels=1280)
    plain = tiny_captioner.decode(grid, beam_size=3, n_best=2, rerank_neighbours=0)
    reranked = tiny_captioner.decode(grid, beam_size=3, n_best=2, rerank_neighbours=2, rerank_weight=1.0)
    for caption in [*plain, *reranked]:
        assert len(caption.alternatives) == 1
    for caption in reranked:
        assert caption.score >= caption.alternatives[0].score
    # with weight 0 the order is the beam's own
    unweighted = tiny_captioner.decode(grid, beam_size=3, n_best=2, rerank_neighbours=2, rerank_weight=0.0)
    assert [caption.text for caption in unweighted] == [caption.text for caption in plain]


def test_reranking_a_run_without_memory_says_how_to_write_it(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / MEMORY_FILE).unlink()
    captioner = Captioner.load(run)
    captioner.decode(grids(1, pixels=49, channels=1280), rerank_neighbours=0)  # no reranking, no memory needed
    with pytest.raises(CaptionerError, match="captioner train"):
        captioner.decode(grids(1, pixels=49, channels=1280), rerank_neighbours=3)


def test_evaluate_and_caption_on_the_command_line_rerank_when_asked(tiny_run, tiny_flickr, tmp_path, capsys):
    run, out = shutil.copytree(tiny_run, tmp_path / "run"), tmp_path / "eval"  # evaluate records its scores in the run
    assert main(["evaluate", str(run), "--split", "test", "--rerank-neighbours", "2", "--rerank-weight", "1.5",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["rerank_neighbours"], metrics["rerank_weight"]) == (2, 1.5)
    assert "consensus reranking with 2 neighbours at weight 1.5" in (out / "report.md").read_text()
    # written elsewhere (--out), the scores stay out of the run's own record; without --out they go in
    recorded = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    assert recorded.get("test", {}).get("rerank_weight") != 1.5
    assert main(["evaluate", str(run), "--split", "test", "--rerank-neighbours", "2", "--rerank-weight", "1.5"]) == 0
    assert json.loads((run / "metrics.json").read_text())["test"]["rerank_weight"] == 1.5
    photo = next((tiny_flickr / "images").iterdir())
    capsys.readouterr()
    assert main(["caption", str(tiny_run), str(photo), "--json", "--n-best", "2", "--rerank-neighbours", "2"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["score"] >= record["alternatives"][0]["score"]
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", str(tiny_run), str(photo), "--rerank-neighbours", "-1"])
    assert exit_info.value.code == 2
