import numpy as np
import pytest

from vhrfm.metrics import accuracy_with_ci, bootstrap_ci, count_params
from vhrfm.ssl.evaluate import mean_over_tasks, pca_rgb, select_best
from vhrfm.ssl.probe import ProbeTask, evaluate_features, knn_predict, pixel_stat_features, rcf_features


def _task(n=120, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    X = rng.normal(size=(n, 3, 16, 16)).astype(np.float32)
    X[y == 1, 0] += sep  # class 1 is brighter in band 0
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    return ProbeTask("toy", "worldview2", X, y, split, np.array([480, 560, 660], np.float32),
                     np.array([60, 70, 60], np.float32), 1.0, "toy")


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, big = rng.random(50) < 0.8, rng.random(5000) < 0.8
    lo_s, hi_s = bootstrap_ci(small)
    lo_b, hi_b = bootstrap_ci(big)
    assert lo_s <= small.mean() <= hi_s and lo_b <= big.mean() <= hi_b
    assert (hi_b - lo_b) < (hi_s - lo_s)
    r = accuracy_with_ci([1, 0, 1, 1], [1, 0, 0, 1])
    assert r["acc"] == 0.75 and r["n"] == 4
    assert r["ci95"] == list(bootstrap_ci(np.array([1, 0, 1, 1]) == np.array([1, 0, 0, 1])))


def test_bootstrap_ci_has_the_binomial_width_and_its_alpha():
    """At p = 0.8 and n = 5000 the 95 % percentile interval is close to the normal one, 2 x 1.96 x sqrt(p(1-p)/n);
    a larger alpha gives a narrower interval; no samples give no interval."""
    big = np.random.default_rng(0).random(5000) < 0.8
    lo, hi = bootstrap_ci(big)
    p = big.mean()
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / big.size), rel=0.1)
    lo50, hi50 = bootstrap_ci(big, alpha=0.5)
    assert lo < lo50 < p < hi50 < hi
    assert all(np.isnan(bootstrap_ci(np.array([]))))


def test_count_params():
    import torch

    assert count_params(torch.nn.Linear(3, 2)) == 8


def test_probes_separate_an_easy_task_and_fail_on_noise():
    easy = _task(sep=3.0)
    r = evaluate_features(pixel_stat_features(easy), easy, n_boot=100)
    assert r["linear_acc"] > 0.95 and r["knn_acc"] > 0.9
    noise = _task(sep=0.0)
    r = evaluate_features(pixel_stat_features(noise), noise, n_boot=100)
    assert r["linear_acc"] < 0.8
    assert easy.usable and easy.counts()["test"]["n"] == 30


def test_probes_score_the_test_rows_only():
    """A leakage canary: the test rows' labels are flipped, so a probe fit on the training rows and scored on the
    test rows is almost always wrong; one that saw (or scored) the test rows would not be."""
    canary = _task(sep=3.0)
    test = canary.split == "test"
    canary.y[test] = 1 - canary.y[test]
    r = evaluate_features(pixel_stat_features(canary), canary, n_boot=100)
    assert r["n_test"] == 30
    assert r["linear_acc"] < 0.1 and r["knn_acc"] < 0.2
    assert r["linear_val_acc"] > 0.9  # validation rows keep their labels


def test_knn_votes_with_neighbours():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], float)
    y = np.array([1, 1, 0, 0])
    assert knn_predict(train, y, np.array([[1, 0.05], [0.05, 1]]), k=2).tolist() == [1, 0]


def test_rcf_features_shape():
    t = _task(n=40)
    f = rcf_features(t, features=64)
    assert f.shape == (40, 64) and np.isfinite(f).all()


def test_teacher_selection_uses_validation_not_test():
    probe = {"a": {"m1": {"linear_acc": 0.99, "linear_val_acc": 0.6}, "m2": {"linear_acc": 0.7, "linear_val_acc": 0.9}}}
    assert select_best(probe, ["m1", "m2"]) == "m2"
    assert mean_over_tasks(probe, "m1") == pytest.approx(0.99)


def test_pca_rgb():
    import torch

    img = pca_rgb(torch.randn(16, 5, 7))
    assert img.shape == (5, 7, 3) and img.min() >= 0 and img.max() <= 1


def test_feature_sets_and_their_choice_on_validation(monkeypatch):
    import torch

    from vhrfm.models import create_encoder
    from vhrfm.ssl import evaluate
    from vhrfm.ssl.probe import encoder_features

    t = _task(n=40)
    torch.manual_seed(0)
    enc = create_encoder("mobilenetv3_small_anyband")
    pooled, multi = encoder_features(enc, t, features="pooled"), encoder_features(enc, t, features="multilevel")
    levels = [f["num_chs"] for f in enc.body.feature_info]
    assert pooled.shape == (40, enc.num_features) and multi.shape == (40, 2 * sum(levels))
    assert np.isfinite(multi).all()           # a 1 x 1 map has std 0, not NaN
    with pytest.raises(ValueError, match="feature set"):
        encoder_features(enc, t, features="cls")
    # the set is chosen on validation accuracy, never on test; ties go to the first (pooled)
    extra = {"effective_rank": 3.0, "dim": 8}
    fake = {"pooled": {"linear_val_acc": 0.7, "linear_acc": 0.9, "knn_acc": 0.5, **extra},
            "multilevel": {"linear_val_acc": 0.8, "linear_acc": 0.6, "knn_acc": 0.5, **extra}}
    monkeypatch.setattr(evaluate, "encoder_features", lambda e, task, features: features)
    monkeypatch.setattr(evaluate, "evaluate_features", lambda fs, task, seed, n_boot: dict(fake[fs]))
    r = evaluate.probe_encoder(enc, t)
    assert r["features"] == "multilevel" and r["linear_acc"] == 0.6 and set(r["by_features"]) == {"pooled", "multilevel"}
    fake["multilevel"]["linear_val_acc"] = 0.7
    assert evaluate.probe_encoder(enc, t)["features"] == "pooled"


def test_level_features_are_the_multilevel_set_one_stage_at_a_time():
    import torch

    from vhrfm.models import create_encoder
    from vhrfm.ssl.evaluate import probe_levels
    from vhrfm.ssl.probe import encoder_features, level_features

    t = _task(n=40)
    torch.manual_seed(0)
    enc = create_encoder("mobilenetv3_small_anyband")
    info = enc.body.feature_info
    levels = level_features(enc, t, batch_size=16)  # batches smaller than the task: parts joined in order
    assert [st for _, st in levels] == [f["reduction"] for f in info]
    assert [f.shape for f, _ in levels] == [(40, 2 * f["num_chs"]) for f in info]
    multi = encoder_features(enc, t, features="multilevel")  # [means of every level, then stds of every level]
    chs = [f["num_chs"] for f in info]
    means = np.concatenate([f[:, :c] for (f, _), c in zip(levels, chs)], 1)
    stds = np.concatenate([f[:, c:] for (f, _), c in zip(levels, chs)], 1)
    np.testing.assert_allclose(np.concatenate([means, stds], 1), multi, rtol=1e-5, atol=1e-6)
    tasks = {"a": t, "b": _task(n=40, sep=0.0, seed=1)}  # an easy task and a hopeless one
    got = probe_levels({"enc": enc}, tasks, n_boot=20, progress=False)
    assert got["stride"]["enc"] == [f["reduction"] for f in info]
    for name, task in tasks.items():
        r = got["per_task"][name]["enc"]
        assert r["linear_acc"] == [evaluate_features(f, task, n_boot=20)["linear_acc"] for f, _ in levels_of(enc, task)]
        assert r["dim"] == [2 * c for c in chs] and len(r["ci95"]) == len(chs)
    assert got["mean"]["enc"] == pytest.approx([np.mean([got["per_task"][n]["enc"]["linear_acc"][i] for n in tasks])
                                                for i in range(len(chs))])
    assert max(got["per_task"]["a"]["enc"]["linear_acc"]) > 0.9  # band 0 is brighter: the stem's means see it


def levels_of(enc, task):
    from vhrfm.ssl.probe import level_features

    return level_features(enc, task)


def test_effective_rank_counts_the_directions_features_spread_over():
    from vhrfm.ssl.probe import effective_rank

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 64)))[0]
    for k in (1, 4, 16):  # k equal-variance directions in 64 dimensions, offset (the centring removes it)
        f = rng.choice([-1.0, 1.0], size=(4096, k)) @ basis[:k] + 5.0
        assert effective_rank(f) == pytest.approx(k, rel=0.05)
    unequal = rng.normal(size=(4096, 2)) * [1.0, 0.01]  # one direction dominates
    assert 1.0 <= effective_rank(unequal) < 1.2
    assert effective_rank(np.ones((10, 3))) == 0.0
    with pytest.raises(ValueError, match="N >= 2"):
        effective_rank(np.ones((1, 3)))


def test_seed_study_reuses_the_main_table_and_varies_only_the_training_seed():
    from vhrfm.ssl.evaluate import probe_all, probe_encoder, random_encoder, seed_study
    from vhrfm.ssl.probe import effective_rank, encoder_features

    tasks = {"a": _task(n=40, seed=0), "b": _task(n=40, sep=0.5, seed=1)}
    arch = "mobilenetv3_small_anyband"
    pretrained = {0: random_encoder(arch, 10), 3: random_encoder(arch, 13)}  # stand-ins for two pretraining seeds
    probe = probe_all({"m": pretrained[0], "random_init[x]": random_encoder(arch, 0)}, tasks, n_boot=50, progress=False)
    study = seed_study(pretrained, arch, tasks, probe, "m", "random_init[x]", main_seed=0, n_boot=50, progress=False)
    assert study["seeds"] == [0, 3]
    for t in tasks:  # the main seed comes from the main table; the other seed is probed with the main probe seed
        assert study["per_task"][t]["pretrained"]["0"] == probe[t]["m"]["linear_acc"]
        assert study["per_task"][t]["random_init"]["0"] == probe[t]["random_init[x]"]["linear_acc"]
        assert study["per_task"][t]["rcf"]["0"] == probe[t]["rcf"]["linear_acc"]
        assert study["per_task"][t]["pretrained"]["3"] == probe_encoder(pretrained[3], tasks[t], seed=0, n_boot=50)["linear_acc"]
        assert study["per_task"][t]["random_init"]["3"] == probe_encoder(random_encoder(arch, 3), tasks[t], seed=0, n_boot=50)["linear_acc"]
        # effective ranks are those of the pooled features' training rows, wherever the feature set was chosen
        assert study["effective_rank_per_task"][t]["pretrained"]["0"] == probe[t]["m"]["by_features"]["pooled"]["effective_rank"]
        assert study["effective_rank_per_task"][t]["rcf"]["0"] == probe[t]["rcf"]["effective_rank"]
        tr = tasks[t].split == "train"
        assert study["effective_rank_per_task"][t]["random_init"]["3"] == pytest.approx(
            effective_rank(encoder_features(random_encoder(arch, 3), tasks[t])[tr]))
    acc = study["linear_acc"]
    assert acc["pretrained"]["3"] == pytest.approx(np.mean([study["per_task"][t]["pretrained"]["3"] for t in tasks]))
    sp = study["spread"]["pretrained"]
    assert sp["n"] == 2 and sp["min"] <= sp["mean"] <= sp["max"]
    assert sp["sd"] == pytest.approx(np.std(list(acc["pretrained"].values()), ddof=1))
    m = study["margin_vs_random_points"]
    assert m["mean"] == pytest.approx(100 * (sp["mean"] - study["spread"]["random_init"]["mean"]))
    assert m["worst_pair"] <= m["mean"] <= m["best_pair"]
    assert m["worst_pair"] == pytest.approx(100 * (sp["min"] - study["spread"]["random_init"]["max"]))
    for t in tasks:  # the final map alone, whichever set was chosen: main seed from the table, seed 3 probed
        assert study["pooled"]["per_task"][t]["pretrained"]["0"] == probe[t]["m"]["by_features"]["pooled"]["linear_acc"]
        assert study["pooled"]["per_task"][t]["random_init"]["3"] == probe_encoder(
            random_encoder(arch, 3), tasks[t], seed=0, n_boot=50)["by_features"]["pooled"]["linear_acc"]
    assert "rcf" not in study["pooled"]["linear_acc"]
    assert study["pooled"]["spread"]["pretrained"]["mean"] == pytest.approx(
        np.mean([study["pooled"]["per_task"][t]["pretrained"][sd] for t in tasks for sd in ("0", "3")]))
    with pytest.raises(ValueError, match="main seed"):
        seed_study({3: pretrained[3]}, arch, tasks, probe, "m", "random_init[x]", main_seed=0, progress=False)


def test_learning_curve_takes_its_ends_from_the_seed_study_and_probes_the_snapshots():
    from vhrfm.ssl.evaluate import learning_curve, probe_all, probe_encoder, random_encoder, seed_study

    tasks = {"a": _task(n=40, seed=0), "b": _task(n=40, sep=0.5, seed=1)}
    arch = "mobilenetv3_small_anyband"
    pretrained = {0: random_encoder(arch, 10), 3: random_encoder(arch, 13)}
    probe = probe_all({"m": pretrained[0], "random_init[x]": random_encoder(arch, 0)}, tasks, n_boot=50, progress=False)
    study = seed_study(pretrained, arch, tasks, probe, "m", "random_init[x]", main_seed=0, n_boot=50, progress=False)
    snaps = {0: {5: random_encoder(arch, 20)}, 3: {5: random_encoder(arch, 23)}}  # stand-ins for mid-training encoders
    curve = learning_curve(snaps, tasks, study, 10, main_seed=0, n_boot=50, progress=False)
    assert curve["steps"] == [0, 5, 10] and curve["seeds"] == [0, 3]
    for t in tasks:
        for sd in ("0", "3"):
            assert curve["per_task"][t][sd]["0"] == study["per_task"][t]["random_init"][sd]
            assert curve["per_task"][t][sd]["10"] == study["per_task"][t]["pretrained"][sd]
        assert curve["per_task"][t]["3"]["5"] == probe_encoder(snaps[3][5], tasks[t], seed=0, n_boot=50)["linear_acc"]
    for sd in ("0", "3"):  # the rank's ends come from the seed study too
        assert curve["effective_rank"][sd]["0"] == pytest.approx(study["effective_rank"]["random_init"][sd])
        assert curve["effective_rank"][sd]["10"] == pytest.approx(study["effective_rank"]["pretrained"][sd])
    assert curve["effective_rank_by_step"]["5"]["n"] == 2
    assert curve["linear_acc"]["3"]["5"] == pytest.approx(np.mean([curve["per_task"][t]["3"]["5"] for t in tasks]))
    by = curve["by_step"]
    assert by["10"]["mean"] == pytest.approx(study["spread"]["pretrained"]["mean"])
    assert by["0"]["mean"] == pytest.approx(study["spread"]["random_init"]["mean"])
    assert curve["final_minus_init_points"] == pytest.approx(100 * (by["10"]["mean"] - by["0"]["mean"]))
    assert by[str(curve["best_step"])]["mean"] == max(v["mean"] for v in by.values())
    assert curve["final_minus_best_points"] <= 0
    pooled = curve["pooled"]  # the same snapshots through their final map alone; its ends from the seed study
    for t in tasks:
        for sd in ("0", "3"):
            assert pooled["per_task"][t][sd]["0"] == study["pooled"]["per_task"][t]["random_init"][sd]
            assert pooled["per_task"][t][sd]["10"] == study["pooled"]["per_task"][t]["pretrained"][sd]
        assert pooled["per_task"][t]["3"]["5"] == \
            probe_encoder(snaps[3][5], tasks[t], seed=0, n_boot=50)["by_features"]["pooled"]["linear_acc"]
    assert pooled["final_minus_init_points"] == pytest.approx(
        100 * (pooled["by_step"]["10"]["mean"] - pooled["by_step"]["0"]["mean"]))
    assert pooled["by_step"]["0"]["mean"] == pytest.approx(study["pooled"]["spread"]["random_init"]["mean"])
    with pytest.raises(ValueError, match="seed study"):
        learning_curve({0: snaps[0]}, tasks, study, 10, progress=False)
    with pytest.raises(ValueError, match="strictly between"):
        learning_curve({0: {10: pretrained[0]}, 3: {10: pretrained[3]}}, tasks, study, 10, progress=False)
    with pytest.raises(ValueError, match="same snapshot steps"):
        learning_curve({0: snaps[0], 3: {4: snaps[3][5]}}, tasks, study, 10, progress=False)


def test_seed_study_spec_is_checked_before_training():
    from vhrfm.ssl.run import seed_study_spec

    p = {"seed": 0, "pretrain": {"methods": {"a": {}, "b": {}}}}
    assert seed_study_spec(p) is None
    assert seed_study_spec({**p, "pretrain": {**p["pretrain"], "seed_study": {"method": "b", "seeds": [2, 1]}}}) == \
        {"method": "b", "seeds": [2, 1]}
    with pytest.raises(KeyError, match="not one of the profile's methods"):
        seed_study_spec({**p, "pretrain": {**p["pretrain"], "seed_study": {"method": "c", "seeds": [1]}}})
    for bad in ([0, 1], [], [1, 1]):
        with pytest.raises(ValueError, match="distinct extra seeds"):
            seed_study_spec({**p, "pretrain": {**p["pretrain"], "seed_study": {"method": "a", "seeds": bad}}})


def test_snapshot_paths_name_what_pretraining_writes(tmp_path):
    from vhrfm.config import load_profile
    from vhrfm.ssl.run import SEED_STUDY_DIR, method_config, seed_replica_name, snapshot_paths
    from vhrfm.ssl.train import SNAPSHOT_DIR, snapshot_name

    p = load_profile("smoke")
    study = p["pretrain"]["seed_study"]
    steps = method_config("smoke", study["method"])[1]["snapshots"]
    paths = snapshot_paths("smoke", tmp_path)
    assert sorted(paths) == sorted([p["seed"], *study["seeds"]])
    assert paths[p["seed"]] == {k: tmp_path / SNAPSHOT_DIR / f"{snapshot_name(study['method'], k)}.safetensors" for k in steps}
    s = study["seeds"][0]
    assert paths[s][steps[0]] == tmp_path / SEED_STUDY_DIR / SNAPSHOT_DIR / \
        f"{snapshot_name(seed_replica_name(study['method'], s), steps[0])}.safetensors"
