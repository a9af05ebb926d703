import keras
import numpy as np
import pytest
import tensorflow as tf

from mfef_keras.distill import MultiStepDecay, OnlineDistiller, PyTorchSGD, list_methods, method_class
from mfef_keras.models import build_students, get_backbone

CLASSES = 4


def make(method="mfef", topology="independent", sync_batchnorm=False, **kwargs):
    # Two students, or as many as the method needs (OKDDip: two peers and a leader).
    count = max(2, method_class(method).min_students)
    students = build_students(
        "resnet8", CLASSES, num_students=count, topology=topology, base_width=4, sync_batchnorm=sync_batchnorm
    )
    return OnlineDistiller(students, method=method, sync_batchnorm=sync_batchnorm, **kwargs)


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 32, 32, 3)).astype("float32"), rng.integers(0, CLASSES, size=n)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ce(z, y):
    return float(np.mean(-np.log(_softmax(z)[np.arange(len(y)), y])))


def _kd(teacher, student, t=3.0):
    q = _softmax(teacher / t) + 1e-7
    return float(t * t * np.mean(np.sum(q * (np.log(q) - np.log(_softmax(student / t))), -1)))


def test_fusion_objective_matches_hand_computation_at_epoch_40():
    d = make("ffl", rampup_epochs=80)
    d.compile()
    d.prepare(steps_per_epoch=10)
    d.student_optimizer.iterations.assign(405)  # epoch 40
    rng = np.random.default_rng(1)
    z = [rng.normal(size=(6, CLASSES)).astype("float32") for _ in range(2)]
    zf = rng.normal(size=(6, CLASSES)).astype("float32")
    y = rng.integers(0, CLASSES, size=6)
    terms = {k: float(v) for k, v in d.loss_terms(y, z, {"fused": zf}).items()}
    w = np.exp(-5 * (1 - 40 / 80) ** 2)
    ze = (z[0] + z[1]) / 2
    expected = _ce(z[0], y) + _ce(z[1], y) + _ce(zf, y) + w * (_kd(zf, z[0]) + _kd(zf, z[1]) + _kd(ze, zf))
    assert terms["kd_weight"] == pytest.approx(w, rel=1e-6)
    assert terms["kd_s1"] == pytest.approx(_kd(zf, z[1]), rel=1e-5)
    assert terms["kd_fused"] == pytest.approx(_kd(ze, zf), rel=1e-5)
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)


def test_dml_objective_is_ce_plus_mutual_kl():
    d = make("dml")
    rng = np.random.default_rng(2)
    z = [rng.normal(size=(5, CLASSES)).astype("float32") for _ in range(2)]
    y = rng.integers(0, CLASSES, size=5)
    terms = {k: float(v) for k, v in d.loss_terms(y, z).items()}

    def kl(p_logits, q_logits):
        p, q = _softmax(p_logits), _softmax(q_logits)
        return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), -1)))

    expected = _ce(z[0], y) + _ce(z[1], y) + kl(z[1], z[0]) + kl(z[0], z[1])
    assert terms["kd_s0"] == pytest.approx(kl(z[1], z[0]), rel=1e-5)
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)


def test_independent_objective_is_sum_of_cross_entropies():
    d = make("independent")
    z = [np.eye(CLASSES, dtype="float32")[:3] * 2, np.zeros((3, CLASSES), "float32")]
    y = np.array([0, 1, 3])
    terms = d.loss_terms(y, z)
    assert set(terms) == {"ce_s0", "ce_s1", "loss"}
    assert float(terms["loss"]) == pytest.approx(_ce(z[0], y) + _ce(z[1], y), rel=1e-5)


def test_distillation_targets_get_no_gradient_from_the_terms_they_teach():
    d = make("mfef")
    rng = np.random.default_rng(3)
    z0, z1, zf = (tf.Variable(rng.normal(size=(4, CLASSES)).astype("float32")) for _ in range(3))
    y = np.array([0, 1, 2, 3])
    with tf.GradientTape(persistent=True) as tape:
        terms = d.loss_terms(y, [z0, z1], {"fused": zf})
    # students learn from the fused logits: no gradient into the fused head from KD(z_i <- z_f)
    assert tape.gradient(terms["kd_s0"], zf) is None
    assert np.abs(tape.gradient(terms["kd_s0"], z0).numpy()).sum() > 0
    # the fused head learns from the ensemble: no gradient into the students from KD(z_f <- z_e)
    assert tape.gradient(terms["kd_fused"], z0) is None and tape.gradient(terms["kd_fused"], z1) is None
    assert np.abs(tape.gradient(terms["kd_fused"], zf).numpy()).sum() > 0


@pytest.mark.parametrize("method", list_methods())
def test_each_method_lowers_the_training_loss(method):
    x, y = batch(16)
    d = make(method, rampup_epochs=0)
    d.compile(learning_rate=0.05)
    d.prepare(steps_per_epoch=1)

    def loss_now():
        return float(d.loss_terms(y, *d._forward(x, training=True))["loss"])

    first = loss_now()
    d.fit(x, y, batch_size=16, epochs=12, verbose=0, shuffle=False)
    assert loss_now() < 0.8 * first


def test_fit_and_evaluate_report_every_term_and_accuracy():
    x, y = batch(16)
    d = make("mfef", topology="shared_trunk")
    d.compile()
    history = d.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y))
    expected = {"loss", "ce_s0", "ce_s1", "ce_fused", "kd_s0", "kd_s1", "kd_fused", "kd_weight"}
    expected |= {"acc_s0", "acc_s1", "acc_fused", "acc_ensemble"}
    assert set(history.history) == expected | {f"val_{k}" for k in expected}
    logs = d.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == expected and all(np.isfinite(v) for v in logs.values())


def test_two_optimizers_with_their_own_weight_decay_and_schedule():
    x, y = batch(8)
    d = make("mfef")
    d.compile(student_weight_decay=1e-4, fusion_weight_decay=1e-5, lr_milestones=(2, 3))
    d.fit(x, y, batch_size=8, epochs=4, verbose=0)
    assert d.student_optimizer is not d.fusion_optimizer
    assert int(d.student_optimizer.iterations) == 4 and int(d.fusion_optimizer.iterations) == 4
    student_ids = {id(v) for v in d.students_net.trainable_variables}
    assert {id(v) for v in d.fusion_optimizer._trainable_variables}.isdisjoint(student_ids)
    # x0.1 at epochs 2 and 3: the fourth epoch (index 3) ran at 0.001
    d.student_optimizer.iterations.assign(3)
    d.fusion_optimizer.iterations.assign(3)
    assert float(d.student_optimizer.learning_rate) == float(d.fusion_optimizer.learning_rate) == pytest.approx(1e-3)


def test_l2_weight_decay_is_added_to_the_gradient():
    # With a zero loss gradient, one SGD step (no momentum history) moves w by lr * wd * w.
    d = make("independent")
    d.compile(student_optimizer=keras.optimizers.SGD(0.5), student_weight_decay=0.1)
    d.prepare(steps_per_epoch=1)
    variables = d.students_net.trainable_variables
    before = [v.numpy().copy() for v in variables]
    d._apply_gradients([tf.zeros_like(v) for v in variables], variables, [])
    for b, v in zip(before, variables):
        np.testing.assert_allclose(v.numpy(), b * (1 - 0.5 * 0.1), rtol=1e-6)


def _torch_sgd_reference(w, grads, learning_rates, momentum=0.9, nesterov=True):
    """torch.optim.SGD's step (dampening 0, L2 already in the gradient), re-derived in float32 numpy."""
    m = np.float32(momentum)
    w, buffer = w.astype("float32").copy(), np.zeros_like(w, dtype="float32")
    for g, lr in zip(grads, learning_rates):
        buffer = m * buffer + g
        w = w - np.float32(lr) * (g + m * buffer if nesterov else buffer)
    return w


@pytest.mark.parametrize("nesterov", [True, False])
def test_pytorch_sgd_follows_torch_across_a_milestone(nesterov):
    # 2 steps per epoch, x0.1 at epoch 3: three epochs before the milestone, three after it.
    rng = np.random.default_rng(7)
    w0 = rng.normal(size=(5, 3)).astype("float32")
    grads = [rng.normal(size=(5, 3)).astype("float32") for _ in range(12)]
    schedule = MultiStepDecay(0.1, steps_per_epoch=2, milestones=(3,))
    rates = [float(schedule(step)) for step in range(12)]
    assert rates[5] == pytest.approx(0.1) and rates[6] == pytest.approx(0.01)

    def run(optimizer):
        w = keras.Variable(w0)
        for g in grads:
            optimizer.apply([tf.constant(g)], [w])
        return w.numpy()

    expected = _torch_sgd_reference(w0, grads, rates, nesterov=nesterov)
    np.testing.assert_allclose(run(PyTorchSGD(schedule, momentum=0.9, nesterov=nesterov)), expected, rtol=1e-6)
    # Keras's SGD folds the rate into its velocity, so it drifts from torch after the milestone.
    keras_sgd = run(keras.optimizers.SGD(schedule, momentum=0.9, nesterov=nesterov))
    assert np.abs(keras_sgd - expected).max() > 1e-3


def test_pytorch_sgd_state_is_optimizer_variables_and_config_round_trips():
    variables = [keras.Variable(np.ones((2, 3), "float32")), keras.Variable(np.ones(3, "float32"))]
    optimizer = PyTorchSGD(MultiStepDecay(0.1, steps_per_epoch=2, milestones=(150, 225)), momentum=0.9, nesterov=True)
    optimizer.build(variables)
    # the step counter and one momentum buffer per variable (a schedule is not a variable)
    assert [tuple(v.shape) for v in optimizer.variables] == [(), (2, 3), (3,)]
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(clone) is PyTorchSGD and clone.get_config() == optimizer.get_config()
    assert (clone.momentum, clone.nesterov) == (0.9, True)
    with pytest.raises(ValueError, match="does not take weight_decay.*0.01.*decoupled"):
        PyTorchSGD(0.1, weight_decay=0.01)


def test_recipe_optimizers_are_pytorch_sgd():
    x, y = batch(8)
    d = make("ffl")
    d.compile()
    d.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for optimizer in (d.student_optimizer, d.fusion_optimizer):
        assert type(optimizer) is PyTorchSGD and (optimizer.momentum, optimizer.nesterov) == (0.9, True)
    user = keras.optimizers.SGD(0.05, momentum=0.5)
    d = make("ffl")
    d.compile(student_optimizer=user)
    d.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert d.student_optimizer is user and type(d.fusion_optimizer) is PyTorchSGD


def test_recipe_learning_rate_decays_at_epochs_150_and_225():
    d = make("ffl")
    d.compile()
    d.prepare(steps_per_epoch=10)
    for optimizer in (d.student_optimizer, d.fusion_optimizer):
        rates = []
        for step in (0, 1499, 1500, 2249, 2250, 2999):
            optimizer.iterations.assign(step)
            rates.append(float(optimizer.learning_rate))
        assert rates == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def _fit_recording_rates(d, x, y, epochs, per_call):
    """Fits ``epochs`` epochs, ``per_call`` at a time; the learning rate each epoch began with and the logs."""
    rates = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: rates.append(float(d.student_optimizer.learning_rate))
    )
    kd_weights = []
    for start in range(0, epochs, per_call):
        history = d.fit(
            x,
            y,
            batch_size=4,
            epochs=start + per_call,
            initial_epoch=start,
            verbose=0,
            shuffle=False,
            callbacks=[record],
        )
        kd_weights += history.history["kd_weight"]
    return rates, kd_weights


def test_fit_in_a_loop_follows_the_same_schedule_as_one_fit_call():
    x, y = batch(8)
    one_call = make("ffl", rampup_epochs=3)
    weights = one_call.get_weights()
    one_call.compile(lr_milestones=(1, 2))
    loop = make("ffl", rampup_epochs=3)
    loop.set_weights(weights)
    loop.compile(lr_milestones=(1, 2))
    rates, kd_weights = _fit_recording_rates(one_call, x, y, epochs=4, per_call=4)
    assert (rates, kd_weights) == _fit_recording_rates(loop, x, y, epochs=4, per_call=1)
    assert one_call.steps_per_epoch == loop.steps_per_epoch == 2
    assert rates == pytest.approx([0.1, 0.01, 0.001, 0.001])
    assert kd_weights == pytest.approx([np.exp(-5 * (1 - min(e, 3) / 3) ** 2) for e in range(4)], rel=1e-6)
    for a, b in zip(one_call.get_weights(), loop.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_steps_per_epoch_given_to_compile_wins_over_the_data_and_stays_fixed():
    x, y = batch(8)
    d = make("ffl")
    d.compile(steps_per_epoch=5)
    d.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert d.steps_per_epoch == 5 and d.get_compile_config()["steps_per_epoch"] == 5
    d.prepare(steps_per_epoch=5)
    with pytest.raises(ValueError, match="steps_per_epoch is fixed at 5.*got 2"):
        d.prepare(steps_per_epoch=2)


def test_rampup_follows_the_step_counter():
    x, y = batch(8)
    d = make("ffl", rampup_epochs=80)
    d.compile()
    d.fit(x, y, batch_size=4, epochs=1, verbose=0)
    d.student_optimizer.iterations.assign(2 * 40)  # 2 steps per epoch: epoch 40
    assert float(d.kd_weight()) == pytest.approx(np.exp(-1.25), rel=1e-6)


def test_get_student_and_best_student_are_standalone(tmp_path):
    x, y = batch(16)
    d = make("mfef", topology="shared_trunk")
    d.compile()
    d.fit(x, y, batch_size=8, epochs=1, verbose=0)
    outputs = d.predict(x, verbose=0)
    for i in range(2):
        student = d.get_student(i)
        np.testing.assert_allclose(student.predict(x, verbose=0), outputs[f"s{i}"], atol=1e-5)
    accuracies = d.student_accuracies((x, y))
    best = d.best_student((x, y))
    assert best.name == f"student_{int(np.argmax(accuracies))}"
    path = tmp_path / "best.keras"
    best.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.count_params() == best.count_params() < d.count_params()
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), best.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("topology", ["independent", "shared_trunk"])
def test_distiller_keras_round_trip(tmp_path, topology):
    x, y = batch(8)
    d = make("mfef", topology=topology, ablate=("spatial_attention",))
    d.compile(learning_rate=0.02, lr_milestones=(30, 45), fusion_weight_decay=0)
    d.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    d.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.method, loaded.ablate, loaded.num_students) == ("mfef", ("spatial_attention",), 2)
    assert (
        loaded.get_compile_config()
        == d.get_compile_config()
        == dict(
            learning_rate=0.02,
            lr_milestones=[30, 45],
            lr_decay=0.1,
            student_weight_decay=1e-4,
            fusion_weight_decay=0.0,
            steps_per_epoch=2,
            lr_schedule="step",
            lr_epochs=None,
        )
    )
    # the optimisers come back built, with their state: step counter and one buffer per variable
    for ours, theirs, net in (
        (d.student_optimizer, loaded.student_optimizer, d.students_net),
        (d.fusion_optimizer, loaded.fusion_optimizer, d.fusion),
    ):
        assert len(theirs.variables) == len(ours.variables) == 1 + len(net.trainable_variables)
        assert int(theirs.iterations) == 2
        for a, b in zip(ours.variables, theirs.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    a, b = d.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    assert loaded.count_params() == d.count_params()


def test_separately_built_students_are_accepted():
    d = OnlineDistiller([get_backbone("resnet8", CLASSES, base_width=4) for _ in range(2)], method="mfef")
    x, _ = batch(2)
    out = d.predict(x, verbose=0)
    np.testing.assert_allclose(d.get_student(1).predict(x, verbose=0), out["s1"], atol=1e-5)


def test_ablations_remove_components():
    def kinds(d):
        return {type(layer).__name__ for layer in d.fusion.layers}

    assert {"MultiScaleBlock", "DualAttention", "FusionHead"} <= kinds(make("mfef"))
    assert not {"MultiScaleBlock"} & kinds(make("mfef", ablate=("multi_scale",)))
    no_attention = kinds(make("mfef", ablate=("attention",)))
    assert (
        "MultiScaleBlock" in no_attention
        and not {"DualAttention", "ChannelAttention", "SpatialAttention"} & no_attention
    )
    assert kinds(make("ffl")) == {"InputLayer", "FusionHead"}
    assert make("dml").fusion is None


@pytest.mark.parametrize("ablate", [("multi_scale",), ("attention",), ("multi_scale", "attention")])
def test_ablations_train_a_mixed_cohort(ablate):
    # The ablation study runs on a resnet20 + resnet8 cohort: the fusion path meets maps of unequal depth.
    students = build_students(["resnet20", "resnet8"], CLASSES, base_width=4)
    d = OnlineDistiller(students, method="mfef", ablate=ablate)
    d.compile()
    x, y = batch(8)
    with pytest.raises(ValueError, match="steps per epoch are not known yet"):
        d.train_on_batch(x, y)
    d.compile(steps_per_epoch=10)
    before = [w.copy() for w in d.fusion.get_weights()]
    logs = d.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.allclose(a, b) for a, b in zip(before, d.fusion.get_weights()))
    kinds = {type(layer).__name__ for layer in d.fusion.layers}
    assert ("MultiScaleBlock" in kinds) is ("multi_scale" not in ablate)
    assert ("DualAttention" in kinds) is ("attention" not in ablate)


def _fit_on_one_device_and_mirrored(method="mfef", **compile_kwargs):
    """The same model, weights and batch fitted one epoch on one device and mirrored over two CPUs."""
    x, y = batch(8, seed=5)
    single = make(method, sync_batchnorm=True)
    weights = single.get_weights()
    single.compile(**compile_kwargs)
    h1 = single.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = make(method, sync_batchnorm=True)
        mirrored.set_weights(weights)
        mirrored.compile(**compile_kwargs)
    h2 = mirrored.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return (single, h1), (mirrored, h2)


# The L2 test below runs the same comparison (on "ffl", with a decay that shows a per-replica error).
@pytest.mark.slow
def test_mirrored_strategy_matches_one_device():
    (single, h1), (mirrored, h2) = _fit_on_one_device_and_mirrored()
    for key in ("loss", "ce_s0", "kd_fused", "acc_s1"):
        assert h2.history[key][0] == pytest.approx(h1.history[key][0], rel=1e-4, abs=1e-6)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# Two replicas in one process (15 s): out of the default suite (kept under 10 minutes), run by .ci/run's slow step.
@pytest.mark.slow
def test_mirrored_l2_weight_decay_is_counted_once_not_per_replica():
    # Keras sums the replicas' gradients, so an L2 term added to each replica's gradient
    # would decay 2x on two replicas: lr * wd = 0.025 of each weight per step, not 1e-5.
    (single, _), (mirrored, _) = _fit_on_one_device_and_mirrored(
        "ffl", learning_rate=0.5, student_weight_decay=0.05, fusion_weight_decay=0.05
    )
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step(policy):
    keras.mixed_precision.set_global_policy(policy)
    x, y = batch(8)
    d = make("mfef")
    d.compile()
    before = [v.numpy().copy() for v in d.fusion.trainable_variables]
    history = d.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    assert isinstance(d.student_optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, d.fusion.trainable_variables))


# About 11 s on 2 cores: slow, run by .ci/run step 3, to keep the default suite under 10 minutes.
@pytest.mark.slow
def test_jit_compile_step_matches_eager_graph():
    x, y = batch(8)
    plain = make("ffl")
    weights = plain.get_weights()
    plain.compile()
    h1 = plain.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    jitted = make("ffl")
    jitted.set_weights(weights)
    jitted.compile(jit_compile=True)
    h2 = jitted.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert h2.history["loss"][0] == pytest.approx(h1.history["loss"][0], rel=1e-4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: OnlineDistiller([get_backbone("resnet8", 3, base_width=4)]), "at least 2 students, got 1"),
        (lambda: make("fml"), "Unknown method 'fml'.*Allowed: dml, ffl, independent, .*mfef.*Did you mean 'ffl'"),
        (lambda: make("mfef", ablate=("multiscale",)), "Unknown mfef ablation 'multiscale'.*multi_scale"),
        (lambda: make("ffl", ablate=("attention",)), "does not apply to method 'ffl'"),
        (lambda: make("mfef", method_options={"splits": 3}), "splits=3"),
        (
            lambda: OnlineDistiller([get_backbone("resnet8", 3, base_width=4), get_backbone("vgg8", 3, base_width=4)]),
            "spatial size",
        ),
        (
            lambda: OnlineDistiller(
                [get_backbone("resnet8", 3, base_width=4), get_backbone("resnet8", 5, base_width=4)]
            ),
            "same number of classes",
        ),
    ],
)
def test_bad_distiller_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"lr_milestones": (150, -1)},
            r"lr_milestones must be a sequence of epochs \(finite numbers >= 0\), got \(150, -1\)",
        ),
        ({"lr_milestones": 150}, "lr_milestones must be a sequence of epochs.*got 150"),
        ({"lr_milestones": (0.5, "x")}, "lr_milestones must be a sequence of epochs"),
        ({"learning_rate": 0}, "learning_rate must be a finite number > 0, got 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number > 0, got nan"),
        ({"lr_decay": float("inf")}, "lr_decay must be a finite number > 0, got inf"),
        ({"student_weight_decay": -1}, "student_weight_decay must be a finite number >= 0, got -1"),
        ({"fusion_weight_decay": None}, "fusion_weight_decay must be a finite number >= 0, got None"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be an integer >= 1, got 0"),
        ({"steps_per_epoch": 2.5}, "steps_per_epoch must be an integer >= 1, got 2.5"),
    ],
)
def test_bad_compile_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make("ffl").compile(**kwargs)


def test_bad_prepare_and_student_index():
    d = make("ffl")
    with pytest.raises(ValueError, match=r"Student index must be in \[0, 1\], got 2"):
        d.get_student(2)
    with pytest.raises(RuntimeError, match="compile"):
        d.prepare(1)
    d.compile()
    with pytest.raises(ValueError, match="steps per epoch are not known yet"):
        d.prepare()


@pytest.mark.parametrize("nesterov", [True, False])
def test_pytorch_sgd_tensorflow_kernel_equals_the_generic_update(nesterov, monkeypatch):
    # On TensorFlow a dense gradient takes the fused ApplyMomentum kernel; the keras.ops update (any
    # backend, sparse gradients) must give the same weights and buffers, in a compiled step too.
    from mfef_keras.distill import pytorch_sgd

    rng = np.random.default_rng(11)
    w0 = rng.normal(size=(4, 6)).astype("float32")
    grads = [rng.normal(size=(4, 6)).astype("float32") for _ in range(8)]

    def run():
        w = keras.Variable(w0)
        optimizer = PyTorchSGD(MultiStepDecay(0.1, steps_per_epoch=2, milestones=(2,)), momentum=0.9, nesterov=nesterov)
        optimizer.build([w])
        step = tf.function(lambda g: optimizer.apply([g], [w]))
        for g in grads:
            step(tf.constant(g))
        return w.numpy(), optimizer.momentums[0].numpy()

    fused = run()
    monkeypatch.setattr(pytorch_sgd, "_dense", lambda gradient: False)
    generic = run()
    for a, b in zip(fused, generic):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_an_unset_ramp_up_scales_with_the_first_fit_as_the_cli_does():
    x, y = batch(8)
    d = make("mfef")
    assert d.rampup_epochs is None and float(d.kd_weight()) == pytest.approx(np.exp(-5.0))
    d.compile()
    d.fit(x, y, batch_size=8, epochs=2, verbose=0)
    # FFL's 80 of 300 epochs: a 2-epoch fit ramps over 0.53 epochs and has reached w = 1 at its end.
    assert d.rampup_epochs == pytest.approx(2 * 80 / 300)
    assert float(d.kd_weight()) == pytest.approx(1.0)
    assert OnlineDistiller.from_config(d.get_config()).rampup_epochs == pytest.approx(2 * 80 / 300)
