"""FROC / CPM and segmentation metrics on hand-made cases with answers checkable by hand."""
from __future__ import annotations

import numpy as np
import pytest

from ml.metrics import DetectionCase, dice, froc, hd95, in_bucket, volume_difference_ml


def case(preds, scores, lesions, diameters):
    return DetectionCase(np.array(preds, float).reshape(-1, 3), np.array(scores, float),
                         np.array(lesions, float).reshape(-1, 3), np.array(diameters, float))


def test_a_perfect_detector_has_cpm_one():
    c = case([[0, 0, 0], [50, 0, 0]], [0.9, 0.8], [[0, 0, 0], [50, 1, 0]], [10, 6])
    assert froc([c]).cpm() == 1.0


def test_hit_means_within_the_lesion_radius():
    lesions, diam = [[0, 0, 0]], [10]
    assert froc([case([[4.9, 0, 0]], [0.5], lesions, diam)]).cpm() == 1.0
    miss = froc([case([[5.1, 0, 0]], [0.5], lesions, diam)])
    assert miss.cpm() == 0.0 and miss.fp_per_scan[-1] == 1.0


def test_second_hit_on_the_same_lesion_is_neither_tp_nor_fp():
    c = case([[0, 0, 0], [1, 0, 0]], [0.9, 0.8], [[0, 0, 0]], [10])
    fr = froc([c])
    assert fr.fp_per_scan.max() == 0.0 and fr.sensitivity.max() == 1.0


def test_cpm_averages_sensitivity_at_the_seven_fp_rates():
    # 2 scans, 4 lesions. Scores: lesion A 0.9, FP 0.8, lesion B 0.7, FP 0.6 x2, lesion C 0.3; lesion D missed.
    s1 = case([[0, 0, 0], [100, 0, 0], [0, 50, 0], [100, 50, 0]], [0.9, 0.8, 0.7, 0.6],
              [[0, 0, 0], [0, 50, 0]], [10, 10])
    s2 = case([[100, 0, 0], [0, 0, 0]], [0.6, 0.3], [[0, 0, 0], [0, 80, 0]], [10, 10])
    fr = froc([s1, s2])
    # thresholds 0.9: sens 1/4, fp 0; 0.8: 1/4, 0.5; 0.7: 2/4, 0.5; 0.6: 2/4, 1.5; 0.3: 3/4, 1.5
    assert fr.sensitivity_at(0.125) == 0.25 and fr.sensitivity_at(0.25) == 0.25
    assert fr.sensitivity_at(0.5) == 0.5 and fr.sensitivity_at(1.0) == 0.5
    assert fr.sensitivity_at(2.0) == 0.75 and fr.sensitivity_at(8.0) == 0.75
    assert fr.cpm() == pytest.approx((0.25 + 0.25 + 0.5 + 0.5 + 0.75 + 0.75 + 0.75) / 7)


def test_a_size_filter_ignores_hits_on_other_lesions():
    c = case([[0, 0, 0], [50, 0, 0]], [0.9, 0.8], [[0, 0, 0], [50, 0, 0]], [4, 15])
    small = froc([c], in_bucket(3, 6))
    assert small.n_lesions == 1 and small.cpm() == 1.0 and small.fp_per_scan.max() == 0.0


def test_no_predictions_gives_zero():
    assert froc([case([], [], [[0, 0, 0]], [8])]).cpm() == 0.0


def test_dice_of_hand_made_masks():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[0, 0, :4] = True          # 4 voxels
    b[0, 0, 2:4] = True         # 2 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(a, a) == 1.0 and dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_hd95_uses_the_spacing():
    a = np.zeros((1, 1, 20), bool)
    b = np.zeros((1, 1, 20), bool)
    a[0, 0, 2] = True
    b[0, 0, 5] = True
    assert hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(3.0)
    assert hd95(a, b, (1.0, 1.0, 0.5)) == pytest.approx(1.5)
    assert hd95(a, a, (2.0, 2.0, 2.0)) == 0.0
    assert hd95(a, np.zeros_like(a), (1, 1, 1)) == float("inf")


def test_hd95_of_concentric_cubes_is_the_gap():
    a = np.zeros((12, 12, 12), bool)
    b = np.zeros((12, 12, 12), bool)
    a[2:10, 2:10, 2:10] = True
    b[3:9, 3:9, 3:9] = True
    # outer surface: 296 voxels; 6x6x6 face voxels 2 mm away, 72 edge voxels 2*sqrt(2) mm, 8 corners
    # 2*sqrt(3) mm; 80/296 > 5 % lie >= 2*sqrt(2) mm away, corners are < 5 %: HD95 = 2*sqrt(2) mm.
    assert hd95(a, b, (2.0, 2.0, 2.0)) == pytest.approx(2 * np.sqrt(2))


def test_volume_difference_in_ml():
    a = np.zeros((10, 10, 10), bool)
    a[:5] = True                 # 500 voxels
    b = np.zeros_like(a)
    b[:2] = True                 # 200 voxels
    assert volume_difference_ml(a, b, 0.002) == pytest.approx(0.6)
