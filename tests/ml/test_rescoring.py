"""Second-stage false-positive reduction: shape and surroundings tell a nodule from a vessel, the
logistic fit learns a known rule, and a model file's rescorer decides the findings' scores."""
from __future__ import annotations

import numpy as np
import pytest

from ml.checkpoint import load_model_file
from ml.fpr import cpm, labels, operating_point
from ml.inference import Predictor
from ml.inference.rescoring import FEATURES, Rescorer, features, fit, shell_stats
from ml.volumes import Volume

from .test_inference import WEIGHTS, plant_nodule


def lung_with(kind: str) -> tuple[Volume, np.ndarray]:
    """A 1 mm lung block (-850 HU) holding a 6 mm ball or a 6 mm-wide vessel along x, centred."""
    shape = (40, 40, 40)
    hu = np.full(shape, -850.0, np.float32)
    z, y, x = np.indices(shape)
    c = np.array([20, 20, 20])
    if kind == "ball":
        hu[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 9] = 40.0
    else:
        hu[(z - c[0]) ** 2 + (y - c[1]) ** 2 <= 9] = 40.0
    vol = Volume(hu, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    return vol, vol.voxel_to_patient(c.astype(float))


def test_a_vessel_runs_on_through_the_shell_and_an_isolated_nodule_does_not():
    ball, at_ball = lung_with("ball")
    vessel, at_vessel = lung_with("vessel")

    ball_dense, ball_hu = shell_stats(ball, at_ball, radius_mm=3.0)
    vessel_dense, vessel_hu = shell_stats(vessel, at_vessel, radius_mm=3.0)

    assert ball_dense == 0.0 and ball_hu == pytest.approx(-850.0)
    assert 0.1 < vessel_dense < 0.4          # the two cut ends of the tube fill part of the shell
    assert vessel_hu > -800.0


def test_features_are_physical_and_in_the_declared_order():
    vol, at = lung_with("ball")
    x = features(detector_score=0.5, segmentation_confidence=0.8, segmented=True, diameter_mm=6.0,
                 detector_diameter_mm=6.0, long_axis_mm=6.0, short_axis_mm=6.0, volume_ml=0.113,
                 mean_hu=40.0, centre_xyz_mm=at, volume=vol)
    named = dict(zip(FEATURES, x))

    assert len(x) == len(FEATURES)
    assert named["detector_logit"] == pytest.approx(0.0)
    assert named["elongation"] == pytest.approx(1.0)
    assert named["fill"] == pytest.approx(1.0, abs=0.01)          # a ball fills its long-axis sphere
    assert named["log_size_ratio"] == pytest.approx(0.0)
    assert named["mean_hu"] == pytest.approx(0.04)
    assert named["shell_dense"] == 0.0


def test_the_logistic_fit_learns_a_known_rule_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, len(FEATURES)))
    truth = 2.0 * x[:, 0] - 1.5 * x[:, 5] + 0.5
    y = (rng.random(2000) < 1 / (1 + np.exp(-truth))).astype(float)

    model = fit(x, y, l2=0.1)
    again = Rescorer.from_dict(model.to_dict())

    w = np.asarray(model.weights) / np.asarray(model.scale)            # back to raw feature units
    assert w[0] == pytest.approx(2.0, abs=0.3) and w[5] == pytest.approx(-1.5, abs=0.3)
    assert np.abs(np.delete(w, [0, 5])).max() < 0.25
    assert np.allclose(again(x[:5]), model(x[:5]))
    with pytest.raises(ValueError, match="do not match"):
        Rescorer.from_dict({**model.to_dict(), "features": ["something", "else"]})


def test_labels_and_cpm_follow_the_luna_rule():
    case = {"centres": np.array([[0.0, 0, 0], [10.0, 0, 0], [50.0, 0, 0]]),
            "lesion_centres": np.array([[1.0, 0, 0], [12.0, 0, 0]]), "lesion_diameters": np.array([6.0, 3.0])}

    assert labels(case).tolist() == [1.0, 0.0, 0.0]          # 2 mm from a 3 mm nodule: outside its radius
    # the 6 mm nodule ranked first, no false positive above it: found at every FP rate; the 3 mm one
    # is outside 4-30 mm and does not count
    assert cpm([case], [np.array([0.9, 0.5, 0.1])]) == pytest.approx(1.0)
    assert cpm([case], [np.array([0.1, 0.5, 0.9])]) < 1.0


def test_the_operating_point_is_the_lowest_score_within_the_false_positive_budget():
    # two scans; nodules (6 mm) scored 0.9 and 0.4; false positives 0.8, 0.5, 0.3, 0.2
    far = [[100.0, 0, 0], [200.0, 0, 0], [300.0, 0, 0]]
    cases = [{"centres": np.array([[0.0, 0, 0], *far[:2]]), "lesion_centres": np.array([[0.0, 0, 0]]),
              "lesion_diameters": np.array([6.0])},
             {"centres": np.array([[0.0, 0, 0], *far[:2]]), "lesion_centres": np.array([[0.0, 0, 0]]),
              "lesion_diameters": np.array([6.0])}]
    scores = [np.array([0.9, 0.8, 0.3]), np.array([0.4, 0.5, 0.2])]

    one = operating_point(cases, scores, fp_per_scan=1.0)      # 2 FPs allowed over 2 scans
    half = operating_point(cases, scores, fp_per_scan=0.5)     # 1 FP allowed

    assert one["score"] == 0.4 and one["calibration_fp_per_scan"] == 1.0 and one["calibration_sensitivity_4_30mm"] == 1.0
    assert half["score"] == 0.8 and half["calibration_sensitivity_4_30mm"] == 0.5
    # a budget that even the best-scored candidate (a false positive) breaks: nothing is flagged
    assert operating_point(cases[1:], [np.array([0.4, 0.5, 0.2])], fp_per_scan=0.0)["score"] == 1.0


@pytest.mark.skipif(not WEIGHTS.exists(), reason="shipped weights missing")
def test_the_model_files_rescorer_sets_the_score_of_each_finding():
    volume, centre = plant_nodule()
    payload = load_model_file(WEIGHTS)
    flat = {"features": list(FEATURES), "mean": [0.0] * len(FEATURES), "scale": [1.0] * len(FEATURES),
            "weights": [0.0] * len(FEATURES), "bias": 0.0}
    only_shell = {**flat, "weights": [0.0] * (len(FEATURES) - 2) + [-4.0, 0.0]}
    payload["inference"] = {**payload["inference"], "rescoring": only_shell}

    findings = Predictor(payload, device="cpu").predict(volume).findings
    nodule = min(findings, key=lambda f: np.linalg.norm(np.asarray(f.centre_xyz_mm) - centre))

    assert all(f.features is not None and len(f.features) == len(FEATURES) for f in findings)
    point = payload["inference"]["operating_point"]["score"]
    assert all(f.flagged == (f.score >= point) for f in findings)
    for f in findings:   # score = sigmoid(-4 * shell_dense): the rescorer, not the detector, decides
        assert f.score == pytest.approx(1 / (1 + np.exp(4.0 * f.features[FEATURES.index("shell_dense")])))
    assert nodule.score == pytest.approx(0.5, abs=0.05)      # the planted ball sits alone in lung


@pytest.mark.skipif(not WEIGHTS.exists(), reason="shipped weights missing")
def test_more_candidates_are_rescored_than_shown_and_the_best_ones_are_shown():
    volume, _ = plant_nodule()
    payload = load_model_file(WEIGHTS)
    rescoring = payload["inference"].get("rescoring")
    if rescoring is None:
        pytest.skip("the shipped model has no rescorer")

    def findings(max_findings):
        payload["inference"] = {**payload["inference"], "max_candidates": 20, "max_findings": max_findings}
        return Predictor(payload, device="cpu").predict(volume).findings

    shown, every = findings(5), findings(20)

    assert len(shown) == 5 and len(every) > 5
    assert [f.score for f in shown] == sorted((f.score for f in every), reverse=True)[:5]
