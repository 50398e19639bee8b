"""The four classifiers: 1-channel input, 2 logits, any size from 32 to 256 px, nothing downloaded."""
from __future__ import annotations

import gc
import weakref

import pytest
import timm
import torch

from trainables.classify.models import CLASSIFIER_REGISTRY, build_classifier


def test_the_four_classifiers_are_registered():
    assert set(CLASSIFIER_REGISTRY) == {"yolov8", "vgg16", "resnet", "mobilenet"}


@pytest.mark.parametrize("size", [32, 256])
@pytest.mark.parametrize("name", sorted(CLASSIFIER_REGISTRY))
def test_each_classifier_trains_a_step_on_one_channel(name, size, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any download attempt fails at once instead of passing
    torch.manual_seed(0)
    classifier = build_classifier(name)
    assert classifier.init == "random"
    model, x, y = classifier.model, torch.rand(2, 1, size, size), torch.tensor([0, 1])
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 2)  # logits in eval mode too (ultralytics returns a tuple there)


def test_local_pretrained_weights_are_used_and_recorded(tmp_path):
    rgb = timm.create_model("resnet18", pretrained=False)  # an ImageNet-shaped checkpoint: 3 channels, 1000 classes
    path = tmp_path / "resnet18.pth"
    torch.save(rgb.state_dict(), path)
    classifier = build_classifier("resnet", str(path))
    assert classifier.init == "pretrained:resnet18.pth"
    # the first conv is the RGB kernel summed over its channels; the body is copied as is
    torch.testing.assert_close(classifier.model.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(classifier.model.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)


def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_classifier("mobilenet", str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="unknown classifier"):
        build_classifier("alexnet")


@pytest.mark.parametrize("size", [32, 64])  # 32 px: the head's convs see 1x1 inputs pooled to 7x7; 64 px: 2x2
def test_vgg16_head_as_matrix_product_is_the_same_function_as_timms_convs(size):
    torch.manual_seed(0)
    ours = build_classifier("vgg16").model
    theirs = timm.create_model("vgg16", pretrained=False, in_chans=1, num_classes=2)
    theirs.load_state_dict(ours.state_dict())  # same keys and shapes: pretrained files load into either
    assert type(ours.pre_logits).__name__ == "OnePositionHead"
    assert type(ours.pre_logits.fc1).__name__ == "FullFieldConv2d"
    x = torch.rand(3, 1, size, size)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
    ours.train(), theirs.train()
    for model in (ours, theirs):
        model(x).square().sum().backward()
    torch.testing.assert_close(ours.pre_logits.fc1.weight.grad, theirs.pre_logits.fc1.weight.grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["vgg16", "resnet", "mobilenet", "yolov8"])
def test_a_classifier_is_freed_as_soon_as_it_is_dropped(name):
    """No reference cycle: a trial actor that Tune reuses frees one trial's model before the next
    builds its own (two VGG-16 models alive in one actor ran 24 GB out of memory)."""
    model = weakref.ref(build_classifier(name).model)
    gc.disable()
    try:
        assert model() is None
    finally:
        gc.enable()


def test_training_memory_follows_the_parameter_count():
    from trainables.classify.models import TRIAL_BASE_BYTES, training_memory_bytes

    memory = {name: training_memory_bytes(name) for name in ("vgg16", "resnet", "mobilenet", "yolov8")}
    assert memory["vgg16"] > 2 * memory["resnet"] > 2 * TRIAL_BASE_BYTES  # VGG-16's 134 M parameters dominate
    assert 4 * 10**9 < memory["vgg16"] < 6 * 10**9  # the ~5 GB its trials were seen to peak at, at 32 px
    assert min(memory.values()) > TRIAL_BASE_BYTES
