"""predict: every listed format and mode, bad files, JSON schema, notebook API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cifarkit.data import decode_image


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from cifarkit.config import TrainConfig
    from cifarkit.train import fit

    run = fit(
        TrainConfig(dataset="synthetic:classes=3,train=30,test=5", epochs=1, batch_size=32),
        out=tmp_path_factory.mktemp("runs"),
        log=lambda s: None,
    )
    return run / "best.pt"


def rgb(w=40, h=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rgb().save(d / "a.png")
    rgb().save(d / "b.jpg", quality=90)
    rgb().save(d / "c.webp")
    rgb().save(d / "d.bmp")
    frames = [rgb(seed=i).convert("P") for i in range(3)]
    frames[0].save(d / "e.gif", save_all=True, append_images=frames[1:])
    rgba = rgb().convert("RGBA")
    rgba.putalpha(0)  # fully transparent: must come out white
    rgba.save(d / "f_rgba.png")
    rgb().convert("P").save(d / "g_palette.png")
    rgb().convert("L").save(d / "h_gray.png")
    rgb(1600, 1200).save(d / "i_large.jpg")
    return d


def test_decode_handles_modes_and_exif(tmp_path, images):
    assert (decode_image(images / "f_rgba.png", 32) == 255).all()
    gray = decode_image(images / "h_gray.png", 32)
    assert gray.shape == (3, 32, 32) and (gray[0] == gray[1]).all()
    # a wide image, left red / right blue, stored with EXIF "rotate 90 CW": displayed tall, red on top
    wide = np.zeros((32, 64, 3), dtype=np.uint8)
    wide[:, :32, 0] = 255
    wide[:, 32:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = decode_image(tmp_path / "rot.jpg", 32).astype(int)
    assert out[0, :8].mean() > 200 and out[2, :8].mean() < 60  # top rows red
    assert out[2, -8:].mean() > 200  # bottom rows blue


def test_predict_every_format_json(ckpt, images, cli):
    code, out, _ = cli("predict", images, "--checkpoint", ckpt, "--topk", "2", "--json")
    assert code == 0
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert len(results) == 9
    for r in results:
        assert set(r) == {"path", "topk"}
        assert len(r["topk"]) == 2 and r["topk"][0]["prob"] >= r["topk"][1]["prob"]
        assert r["topk"][0]["class"].startswith("class_")


def test_predict_topk_beyond_the_classes_lists_each_class_once_and_says_so_in_its_help(ckpt, images, cli):
    """--topk larger than the checkpoint's classes lists every class once (their probabilities sum to 1), as the
    option's help says, rather than failing or inventing entries."""
    classes = torch.load(ckpt, weights_only=True)["classes"]
    code, out, _ = cli("predict", images / "a.png", "--checkpoint", ckpt, "--topk", "99", "--json")
    (entries,) = [json.loads(line)["topk"] for line in out.strip().splitlines()]
    assert code == 0 and sorted(e["class"] for e in entries) == sorted(classes)
    assert sum(e["prob"] for e in entries) == pytest.approx(1.0, abs=1e-4)
    code, out, _ = cli("predict", "--help")
    assert "at most all the checkpoint has" in " ".join(out.split())


@pytest.mark.parametrize("mode", ["none", "flip", "5crop", "flip5crop", "scale3", "translate"])
def test_predict_tta_modes_text(ckpt, images, cli, mode):
    code, out, _ = cli("predict", images / "a.png", images / "i_large.jpg", "--checkpoint", ckpt, "--tta", mode)
    assert code == 0 and len(out.strip().splitlines()) == 2 and "class_" in out
    # the mode was applied: the probabilities are that mode's, not plain inference's
    from cifarkit.evaluate import tta_views
    from cifarkit.predict import Predictor

    predictor = Predictor.from_checkpoint(ckpt, "cpu")
    files = [images / "a.png", images / "i_large.jpg"]
    code, out, _ = cli("predict", *files, "--checkpoint", ckpt, "--tta", mode, "--topk", "3", "--json")
    shown = [[e["prob"] for e in json.loads(line)["topk"]] for line in out.strip().splitlines()]
    batch = np.stack([predictor.to_uint8(f) for f in files])
    expected = predictor.probabilities(batch, mode).sort(dim=1, descending=True).values[:, :3]
    assert all(row == pytest.approx(want, abs=1e-6) for row, want in zip(shown, expected.tolist(), strict=True))
    if mode != "none":
        assert len(tta_views(torch.zeros(1, 3, 32, 32), mode)) > 1
        plain = predictor.probabilities(batch, "none").sort(dim=1, descending=True).values[:, :3]
        assert not torch.allclose(expected, plain, atol=1e-6)  # random images: every mode moves them


def test_bad_files_do_not_stop_the_others(ckpt, images, cli, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((images / "i_large.jpg").read_bytes()[:2000])
    args = [images / "a.png", tmp_path / "notes.txt", truncated, tmp_path / "missing.png", images / "b.jpg"]
    code, out, _ = cli("predict", *args, "--checkpoint", ckpt, "--json")
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert code != 0
    assert [("error" in r) for r in results] == [False, True, True, True, False]
    assert all("\n" not in r.get("error", "") for r in results)
    assert "missing.png" in results[3]["error"]
    code, out, err = cli("predict", *args, "--checkpoint", ckpt)
    assert code != 0 and len(out.strip().splitlines()) == 2 and "notes.txt: error" in err and "Traceback" not in err


def test_not_a_checkpoint_and_unknown_mode(images, cli, tmp_path):
    (tmp_path / "x.pt").write_bytes(b"junk")
    code, _, err = cli("predict", images / "a.png", "--checkpoint", tmp_path / "x.pt")
    assert code == 2 and "not a" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("predict", images / "a.png", "--checkpoint", tmp_path / "x.pt", "--tta", "spin")
    assert code == 2 and "spin" in err


def test_python_api_and_figure(ckpt, images):
    from cifarkit.predict import Predictor, predict

    pred = Predictor.from_checkpoint(ckpt, "cpu")
    arr = np.asarray(rgb())
    df = predict(pred, [images / "a.png", arr, rgb(), images / "nope.png"], tta="flip", topk=3)
    assert list(df.columns) == ["image", "rank", "class", "prob", "error"]
    assert len(df) == 3 * 3 + 1 and df["error"].notna().sum() == 1
    first = df[df.image == str(images / "a.png")]
    assert first["prob"].is_monotonic_decreasing and first["prob"].sum() <= 1.0 + 1e-6


def test_gif_uses_first_frame_and_palette_transparency_is_white(tmp_path):
    red = Image.new("RGB", (20, 20), (255, 0, 0)).convert("P")
    blue = Image.new("RGB", (20, 20), (0, 0, 255)).convert("P")
    red.save(tmp_path / "anim.gif", save_all=True, append_images=[blue], duration=100)
    out = decode_image(tmp_path / "anim.gif", 8).astype(int)
    assert out[0].mean() > 200 and out[2].mean() < 50
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "clear.png", transparency=0)
    assert (decode_image(tmp_path / "clear.png", 8) == 255).all()


def test_every_evaluation_of_a_checkpoint_agrees(ckpt, cli):
    """evaluate (CLI), test.json, the TTA table and the notebooks' predictions: one path, one number."""
    from cifarkit.data import load_dataset
    from cifarkit.report.analysis import test_probabilities, tta_table

    run, spec = ckpt.parent, "synthetic:classes=3,train=30,test=5"
    test_json = json.loads((run / "test.json").read_text())
    code, out, err = cli("evaluate", run / "best.pt", "--dataset", spec, "--json")
    assert code == 0, err
    cli_top1 = json.loads(out.strip().splitlines()[-1])["accuracy"]
    ds = load_dataset(spec)
    labels, probabilities = test_probabilities(run, ds)
    predictions = probabilities.argmax(1)
    table = tta_table(run, ds)
    assert cli_top1 == test_json["accuracy"] == (labels == predictions).mean() == table.loc["none", "accuracy"]


def test_tta_demos_show_images_where_the_mode_changes_the_answer(ckpt, capsys):
    from cifarkit.data import load_dataset
    from cifarkit.predict import Predictor
    from cifarkit.report.analysis import tta_demos

    predictor = Predictor.from_checkpoint(ckpt, "cpu")
    split = load_dataset("synthetic").test
    demo = tta_demos(predictor, split, "scale3", n=4, seed=0, pool=200)
    images = demo.images.numpy()
    differs = predictor.probabilities(images, "none").argmax(1) != predictor.probabilities(images, "scale3").argmax(1)
    changed_in_pool = int(capsys.readouterr().out.split(" changes the top-1 answer of ")[1].split(" ")[0])
    assert len(demo) == 4 and int(differs.sum()) == min(changed_in_pool, 3)  # changed ones first, then agreeing
    assert not differs[-1]  # at least one where the mode agrees with plain inference


@pytest.mark.parametrize(
    "poison,needle",
    [
        (lambda sd, k: {**sd, k: sd[k].fill_(float("nan"))}, "non-finite values"),
        (lambda sd, k: {**sd, k: "not a tensor"}, "not a named tensor"),
    ],
)
def test_a_checkpoint_whose_weights_are_not_finite_tensors_is_refused(ckpt, tmp_path, poison, needle):
    """A checkpoint that loads and names its model correctly, but holds NaN or non-tensor weights."""
    from cifarkit.errors import CheckpointError
    from cifarkit.runs import load_checkpoint

    blob = torch.load(ckpt, weights_only=True)
    first = next(iter(blob["state_dict"]))
    blob["state_dict"] = poison(dict(blob["state_dict"]), first)
    bad = tmp_path / "bad.pt"
    torch.save(blob, bad)
    with pytest.raises(CheckpointError, match=needle) as caught:
        load_checkpoint(bad)
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)
