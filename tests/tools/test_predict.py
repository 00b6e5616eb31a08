"""`cnnzoo predict` at scale: every input form, every output format and the Python API
give what `cnnzoo predict --json` gives for the same files; unreadable files are
reported and the rest answered; a list of paths is streamed, never collected."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import pytest

import cnnzoo
from cnnzoo.cli.options import USER_ERROR
from cnnzoo.config.bundled import bundled_configs
from cnnzoo.tools.predict.inputs import iter_inputs
from cnnzoo.tools.predict.stream import stream_predictions
from tests.helpers.predicting import assert_same_answers, tops, write_pngs


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder: 6 PNGs at the top, 4 in a sub-folder, and files that are no images."""
    root = tmp_path_factory.mktemp("images")
    write_pngs(root, 6, seed=1)
    write_pngs(root / "sub", 4, seed=2, prefix="deep")
    (root / "notes.txt").write_text("not an image, and not an image suffix")
    return root


def expected(cli, paths: list[Path], *options: str) -> list[dict]:
    """The reference: `cnnzoo predict --json` on the files named one by one."""
    result = cli("predict", "lenet5", "--pretrained", *paths, "--json", *options)
    assert result.code in (0, USER_ERROR), result.err
    return json.loads(result.out)


def test_inputs_name_files_folders_globs_and_lists(images, tmp_path, monkeypatch):
    top = sorted(images.glob("img*.png"))
    deep = sorted((images / "sub").glob("*.png"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n{deep[1]}\n\n{top[0]}\n")
    assert list(iter_inputs([images])) == top + deep  # recursive, image suffixes only
    assert list(iter_inputs([str(images / "**" / "deep00[12].png")])) == deep[1:3]
    assert list(iter_inputs([f"@{listing}", top[2]])) == [deep[1], top[0], top[2]]
    assert list(iter_inputs([images / "missing.png"])) == [images / "missing.png"]
    assert list(iter_inputs([str(images / "*.jpg")])) == [images / "*.jpg"]  # reported later


@pytest.mark.slow
def test_every_input_form_answers_as_the_files_named_one_by_one(images, tmp_path, cli):
    files = sorted(images.glob("img*.png")) + sorted((images / "sub").glob("*.png"))
    reference = expected(cli, files)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in files))
    forms = {"folder": [images], "glob": [str(images / "img*.png"), str(images / "sub" / "*")],
             "list": [f"@{listing}"], "mixed": [files[0], f"@{tmp_path / 'rest.txt'}"]}
    (tmp_path / "rest.txt").write_text("".join(f"{p}\n" for p in files[1:]))
    for name, inputs in forms.items():
        for options in ((), ("--batch-size", "3", "--workers", "2")):
            result = cli("predict", "lenet5", "--pretrained", *inputs, "--json", *options)
            assert result.code == 0, (name, result.err)
            answers = json.loads(result.out)
            assert [a["image"] for a in answers] == [str(p) for p in files], name
            assert_same_answers(answers, reference)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_each_output_format_holds_the_json_answers_and_the_errors(images, tmp_path, cli,
                                                                  suffix):
    folder = tmp_path / "mixed"
    shutil.copytree(images, folder)
    (folder / "broken.png").write_bytes((folder / "img000.png").read_bytes()[:40])
    (folder / "sub" / "text.jpg").write_text("hello")
    files = list(iter_inputs([folder]))
    reference = expected(cli, files, "--top", "4", "-b", "4")  # the same batches
    out = tmp_path / f"answers{suffix}"
    result = cli("predict", "lenet5", "--pretrained", folder, "--out", out, "--top", "4",
                 "-b", "4", "--workers", "2")
    assert result.code == USER_ERROR  # two files could not be read ...
    assert "(2 of 12 images could not be read; the others are answered)" in result.err
    assert f"wrote {out} (12 images, 2 could not be read)" in result.out  # ... all written
    rows = read_answers(out)
    assert [r["image"] for r in rows] == [str(p) for p in files]
    assert [r.get("error") for r in rows] == [r.get("error") for r in reference]
    assert sum(1 for r in rows if r.get("error")) == 2
    assert tops(rows) == tops(reference)  # exactly: the same floats, written in full


def read_answers(path: Path) -> list[dict]:
    """A --out file as the list of dicts `--json` prints."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    answers = []
    for row in rows:
        if row["error"]:
            answers.append({"image": row["image"], "error": row["error"]})
            continue
        ranks = range(1, 1 + sum(1 for key in row if key.startswith("class_")))
        answers.append({"image": row["image"], "top": [
            {"class": row[f"class_{k}"], "index": int(row[f"index_{k}"]),
             "probability": float(row[f"probability_{k}"])} for k in ranks]})
    return answers


def test_a_bad_out_suffix_is_refused_before_anything_runs(images, tmp_path, cli):
    result = cli("predict", "lenet5", "--pretrained", images, "--out", tmp_path / "a.parquet")
    assert result.code == USER_ERROR and "write .csv, .jsonl or .json" in result.err
    assert list(tmp_path.iterdir()) == []


def test_nothing_to_predict_is_an_error_and_writes_nothing(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    result = cli("predict", "lenet5", "--pretrained", tmp_path / "empty", "-o",
                 tmp_path / "a.csv")
    assert result.code == USER_ERROR and "no image files in" in result.err
    assert not (tmp_path / "a.csv").exists()


def test_a_missing_list_file_is_one_clear_error(tmp_path, cli):
    result = cli("predict", "lenet5", "--pretrained", f"@{tmp_path / 'nope.txt'}")
    assert result.code == USER_ERROR and f"cannot read the list @{tmp_path / 'nope.txt'}" in (
        result.err)
    assert "Traceback" not in result.err


@pytest.mark.parametrize("workers", [0, 2])
def test_the_inputs_are_streamed_not_collected(images, workers):
    """An endless list of paths: predict answers the first ones having read only a few
    batches ahead, which a collected list could never do."""
    files = sorted(images.glob("img*.png"))
    pulled = 0

    def endless():
        nonlocal pulled
        for path in itertools.cycle(files):
            pulled += 1
            yield path

    predictor = cnnzoo.Predictor("lenet5", pretrained=True)
    answers = stream_predictions(predictor, endless(), batch_size=4, workers=workers)
    first = list(itertools.islice(answers, 10))
    answers.close()
    assert [a.image for a in first] == [str(files[i % len(files)]) for i in range(10)]
    assert all(a.ok for a in first)
    ahead = 2 * 4 if workers == 0 else (4 * workers + 2) * 4  # batches of 4
    assert pulled <= 12 + ahead


def test_a_list_of_a_million_paths_is_read_line_by_line(tmp_path, images):
    listing = tmp_path / "million.txt"
    real = sorted(images.glob("img*.png"))[:3]
    with open(listing, "w") as handle:
        handle.writelines(f"{p}\n" for p in real)
        handle.writelines(f"{tmp_path}/missing/{i:07d}.png\n" for i in range(1_000_000))
    import tracemalloc

    tracemalloc.start()
    paths = iter_inputs([f"@{listing}"])
    head = list(itertools.islice(paths, 5))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert head[:3] == real and head[3] == tmp_path / "missing" / "0000000.png"
    assert peak < 1 << 20  # the list file is about 40 MB


def test_the_predictor_answers_paths_and_bytes_as_the_cli_does(images, cli):
    files = sorted(images.glob("img*.png"))[:3]
    predictor = cnnzoo.Predictor("lenet5", pretrained=True, top=2)
    answers = predictor.predict([*files, files[0].read_bytes(), b"no image"])
    assert all(isinstance(a, cnnzoo.tools.predict.predictor.Prediction) for a in answers)
    reference = expected(cli, files, "--top", "2")
    assert [a.as_dict()["image"] for a in answers[:3]] == [r["image"] for r in reference]
    assert_same_answers([a.as_dict() for a in answers[:3]], reference)
    assert answers[3].top == answers[0].top and answers[3].image == "image 3"
    assert not answers[4].ok and answers[4].error.startswith("cannot read image image 4: ")
    guess = answers[0].top[0]
    assert isinstance(guess, cnnzoo.tools.predict.predictor.Guess) and 0 < guess.value <= 1
    config = cnnzoo.load_config(bundled_configs()["lenet5"])
    assert predictor.metadata["params"] == cnnzoo.plan_experiment(config).total_params


def test_the_final_message_names_ten_failures_and_counts_the_rest():
    from cnnzoo.tools.predict.predictor import Prediction
    from cnnzoo.tools.predict.stream import Tally

    tally = Tally()
    for i in range(15):
        tally.add(Prediction(f"{i}.png", error=f"cannot read image {i}.png: no such file")
                  if i < 12 else Prediction(f"{i}.png"))
    message = str(tally.failure())
    assert message.count("cannot read image") == 10 and "9.png" in message
    assert "10.png" not in message and "; and 2 more (12 of 15 images could not" in message
    assert Tally().failure() is None
