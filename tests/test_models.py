import keras
import numpy as np
import pytest

from mfef_keras.models import build_students, feature_layer, get_backbone, list_backbones

TINY = [
    ("resnet8", {"base_width": 4}, (8, 8, 16)),
    ("wrn10_1", {"base_width": 4}, (8, 8, 16)),
    ("vgg8", {"base_width": 4}, (2, 2, 32)),
]


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name, kwargs, feature_shape", TINY)
def test_backbone_shapes_save_and_fit(tmp_path, name, kwargs, feature_shape):
    model = get_backbone(name, num_classes=5, **kwargs)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    assert tuple(model(x).shape) == (4, 5)
    assert tuple(feature_layer(model).output.shape[1:]) == feature_shape

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(model.predict(x, verbose=0), reloaded.predict(x, verbose=0), atol=1e-5)
    assert feature_layer(reloaded).name == "features"

    model.compile(
        optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, np.arange(4) % 5, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def test_batchnorm_momentum_matches_pytorch_recipe():
    model = get_backbone("resnet8", num_classes=3, base_width=4)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in bns)


def test_resnet32_parameter_count_matches_reference():
    # FFL / ONE's resnet32 on 100 classes: 472,756 parameters (PyTorch counts no BN statistics).
    assert _trainable(get_backbone("resnet32", num_classes=100)) == 472_756


def test_resnet_depths_follow_6n_plus_2():
    convs = {
        name: sum(
            isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)
            for layer in get_backbone(name, 10).layers
        )
        for name in ("resnet20", "resnet56")
    }
    assert convs == {"resnet20": 19, "resnet56": 55}


def test_wide_resnet_parameter_count():
    # WRN-16-2 on CIFAR-10 has about 0.69 M parameters.
    assert 680_000 < _trainable(get_backbone("wrn16_2", num_classes=10)) < 700_000


def test_shared_trunk_students_share_stem_and_early_stages():
    students = build_students("resnet8", num_classes=4, num_students=3, topology="shared_trunk", base_width=4)
    ids = [{id(w) for w in s.trainable_weights} for s in students]
    shared = ids[0] & ids[1] & ids[2]
    single = get_backbone("resnet8", num_classes=4, base_width=4)
    stem_and_two_stages = sum(
        int(np.prod(w.shape))
        for layer in single.layers
        if not layer.name.startswith(("stage3", "logits"))
        for w in layer.trainable_weights
    )
    assert (
        sum(int(np.prod(w.shape)) for s in students[:1] for w in s.trainable_weights if id(w) in shared)
        == stem_and_two_stages
    )
    assert not (ids[0] - shared) & (ids[1] - shared)
    assert [_trainable(s) for s in students] == [_trainable(single)] * 3


def test_independent_students_share_nothing():
    a, b = build_students("resnet8", num_classes=4, num_students=2, base_width=4)
    assert not {id(w) for w in a.weights} & {id(w) for w in b.weights}
    assert feature_layer(a).name == "s0_features" and feature_layer(b).name == "s1_features"


def test_list_backbones_wildcards():
    assert list_backbones("resnet*") == ["resnet8", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
    assert "wrn28_10" in list_backbones("wrn*") and "vgg16" in list_backbones()
    assert list_backbones("nothing*") == []


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: get_backbone("resnet33", 10), "Unknown backbone 'resnet33'.*Did you mean 'resnet32'"),
        (lambda: get_backbone("resnet8", 10, depth_multiplier=2), "Bad options"),
        (lambda: build_students("resnet8", 10, topology="shared"), "Unknown topology 'shared'"),
        (lambda: build_students("resnet8", 10, num_students=0), "num_students"),
        (lambda: feature_layer(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])), "exactly one layer"),
    ],
)
def test_bad_backbone_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("size", [8, 7])
def test_strided_convolutions_pad_symmetrically_like_the_reference(size):
    # A kernel that copies its centre tap: with PyTorch's padding=1 on every side the stride-2
    # output (i, j) is centred on input (2i, 2j), the pixel the 1x1 stride-2 shortcut samples.
    from mfef_keras.models.recipe import LayerFactory

    images = keras.Input((size, size, 1))
    model = keras.Model(images, LayerFactory().conv(1, 3, stride=2, name="c")(images))
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[1, 1] = 1.0
    model.get_layer("c").set_weights([kernel])
    x = np.random.default_rng(0).normal(size=(1, size, size, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), x[:, ::2, ::2], atol=1e-6)

    # A full 3x3 kernel against a numpy convolution of the input zero-padded by 1 on all sides.
    kernel = np.random.default_rng(1).normal(size=(3, 3, 1, 1)).astype("float32")
    model.get_layer("c").set_weights([kernel])
    padded = np.pad(x[0, :, :, 0], 1)
    out = (size + 1) // 2
    expected = np.array(
        [
            [np.sum(padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * kernel[:, :, 0, 0]) for j in range(out)]
            for i in range(out)
        ]
    )
    np.testing.assert_allclose(model.predict(x, verbose=0)[0, :, :, 0], expected, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet8", "wrn10_1"])
def test_every_strided_convolution_is_padded_explicitly(name):
    model = get_backbone(name, num_classes=3, base_width=4)
    strided = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and layer.strides != (1, 1)]
    assert strided
    for conv in strided:
        if conv.kernel_size == (1, 1):
            continue
        assert conv.padding == "valid"
        pad = model.get_layer(f"{conv.name}_pad")
        assert pad.padding == ((1, 1), (1, 1))
