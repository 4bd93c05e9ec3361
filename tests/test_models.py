"""Every registered model: output shape at 10 and 100 classes, parameter counts, registry errors."""

from __future__ import annotations

import pytest
import torch

from cifarkit.errors import ConfigError
from cifarkit.models import create_model, default_input_size, list_models
from cifarkit.report.comparison import model_summary

EXPECTED_PARAMS_100 = {
    "ex1": 266_416,
    "ex2": 16_904_548,
    "smallcifarnet": 1_172_900,
    "tinyvgg": 522_276,
    "resnet18": 11_220_132,
    "speednet": 1_995_544,
    "resnet18_imagenet": 11_227_812,  # torchvision: 11,689,512 at 1000 classes
    "mobilenetv3_imagenet": 1_620_356,  # torchvision: 2,542,856 at 1000 classes
}


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_registry_lists_the_course_models():
    assert set(list_models()) == set(EXPECTED_PARAMS_100)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS_100))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_output_shape(name, num_classes):
    model = create_model(name, num_classes).eval()
    size = default_input_size(name)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS_100))
def test_parameter_count(name):
    assert trainable(create_model(name, 100)) == EXPECTED_PARAMS_100[name]


def test_ex1_is_the_course_baseline():
    m = create_model("ex1", 100)
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 12, (5, 5)),
        (12, 12, (5, 5)),
        (12, 24, (5, 5)),
        (24, 24, (5, 5)),
    ]
    assert m.classifier.in_features == 2400


def test_ex2_trains_at_128_px():
    assert default_input_size("ex2") == 128
    assert create_model("ex2", 10).classifier[0].in_features == 16384


def test_tinyvgg_options():
    plain = create_model("tinyvgg", 10, hidden_units=8)
    bn = create_model("tinyvgg", 10, hidden_units=8, batchnorm=True, dropout=0.5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()) == 4
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in bn.modules())


def test_unknown_model_and_bad_option_name_the_choices():
    with pytest.raises(ConfigError, match="unknown model 'vgg99'.*ex1"):
        create_model("vgg99", 10)
    with pytest.raises(ConfigError, match="bad option for model ex1"):
        create_model("ex1", 10, depth=3)


def test_summary_reports_params_and_mult_adds():
    s = model_summary(create_model("ex1", 10), 32)
    assert s["params"] == trainable(create_model("ex1", 10))
    assert s["mult_adds"] > 1_000_000 and "Conv2d" in s["table"]
    # torchinfo labels its mult-adds total "(Units.MEGABYTES)"; the table says what the number counts
    (line,) = [row for row in s["table"].splitlines() if row.startswith("Total mult-adds")]
    assert line == f"Total mult-adds (millions): {s['mult_adds'] / 1e6:.2f}"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, so nothing reads or writes the real one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_pretrained_backbones_start_from_the_cached_imagenet_weights(torch_home):
    import torchvision

    from cifarkit.config import TrainConfig
    from cifarkit.models import imagenet_weights_file
    from cifarkit.train import prepare

    torch.manual_seed(1)
    imagenet = torchvision.models.mobilenet_v3_small(weights=None).state_dict()  # stands in for the real file
    _, path = imagenet_weights_file(create_model("mobilenetv3_imagenet", 10))
    assert path.parent == torch_home and path.name == "mobilenet_v3_small-047dcff4.pth"
    path.parent.mkdir(parents=True)
    torch.save(imagenet, path)
    cfg = TrainConfig(model="mobilenetv3_imagenet", dataset="synthetic:classes=3,train=8,test=2", pretrained=True)
    model = prepare(cfg).model.cpu()
    assert torch.equal(model.net.features[0][0].weight, imagenet["features.0.0.weight"])  # the backbone is ImageNet's
    assert model.net.classifier[3].out_features == 3  # a new head for this dataset's classes
    fresh = prepare(cfg.with_(pretrained=False)).model.cpu()
    assert not torch.equal(fresh.net.features[0][0].weight, imagenet["features.0.0.weight"])


def test_pretrained_offline_names_the_file_to_place(torch_home, monkeypatch, cli, tmp_path):
    for name in ("NO_PROXY", "no_proxy"):  # offline for real: every request goes to a proxy that refuses it
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    args = ("train", "--model", "resnet18_imagenet", "--pretrained", "--dataset", "synthetic", "--out", tmp_path)
    code, _, err = cli(*args)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "resnet18-f37072fd.pth" in err and str(torch_home) in err and "without --pretrained" in err
    code, _, err = cli("train", "--model", "ex1", "--pretrained", "--dataset", "synthetic", "--out", tmp_path)
    assert code == 2 and "has no ImageNet weights" in err and "mobilenetv3_imagenet" in err


def wrong_weights() -> dict[str, object]:
    """Files that load (``weights_only``) but are not mobilenet_v3_small's weights, by what is wrong with them."""
    import torchvision

    torch.manual_seed(0)
    good = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    first = next(iter(good))
    return {
        "a bare tensor": torch.zeros(3),
        "a list of tensors": list(good.values()),
        "a number under a name": {**good, first: 3},
        "another shape": {**good, first: torch.zeros(8, 3, 3, 3)},
        "a name missing": {k: v for k, v in good.items() if k != first},
        "an unknown name": {**good, "extra.weight": torch.zeros(2)},
        "NaN weights": {**good, first: torch.full_like(good[first], float("nan"))},
        "integers for floats": {**good, first: good[first].to(torch.int64)},
        "another network": torchvision.models.resnet18(weights=None).state_dict(),
    }


@pytest.mark.parametrize("case", list(wrong_weights()))
def test_every_wrong_weights_file_is_one_line_naming_the_file_and_what_to_do(case, torch_home, cli, tmp_path):
    """train --pretrained with a cached file of the right name that holds something else: exit 2, one line, the
    file named, what to do said; nothing is trained."""
    from cifarkit.models import imagenet_weights_file

    _, path = imagenet_weights_file(create_model("mobilenetv3_imagenet", 10))
    path.parent.mkdir(parents=True)
    torch.save(wrong_weights()[case], path)
    out = tmp_path / "runs"
    args = ("train", "--model", "mobilenetv3_imagenet", "--pretrained", "--dataset", "synthetic", "--out", out)
    code, _, err = cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err and "delete it" in err
    assert not list(out.glob("*/best.pt"))


@pytest.mark.parametrize("case", ["another shape", "NaN weights", "a bare tensor"])
def test_the_torchvision_backbone_of_notebook_09_checks_its_file_too(case, torch_home):
    from cifarkit.errors import DataError
    from cifarkit.tools import imagenet

    path = imagenet.torchvision_weights_file("mobilenet_v3_small")
    path.parent.mkdir(parents=True)
    torch.save(wrong_weights()[case], path)
    with pytest.raises(DataError, match="delete it") as caught:
        imagenet.torchvision_backbone("mobilenet_v3_small")
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("case", ["a bare tensor", "NaN weights", "another network"])
def test_the_lite0_file_is_checked_before_it_is_mapped(case, tmp_path, monkeypatch):
    from cifarkit.errors import DataError
    from cifarkit.tools import imagenet

    weights = wrong_weights()[case]
    if case == "NaN weights":  # the real file with one tensor poisoned
        weights = torch.load(imagenet.lite0_weights_file(), map_location="cpu", weights_only=True)
        weights["_conv_stem.weight"] = torch.full_like(weights["_conv_stem.weight"], float("nan"))
    path = tmp_path / "lite0.pth"
    torch.save(weights, path)
    monkeypatch.setattr(imagenet, "lite0_weights_file", lambda: path)
    with pytest.raises(DataError, match="reinstall it") as caught:
        imagenet.efficientnet_lite0()
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
