"""Training pieces on tiny tensors: targets, losses, a short run that lowers the loss, resume, determinism."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ml.checkpoint import code_version, load_model_file, pack_model, save_model_file, unpack_model
from ml.networks import UNet3D, UNetConfig
from ml.training.data import build_case
from ml.training.losses import centernet_focal_loss, detection_loss, dice_bce_loss
from ml.training.loop import TrainConfig, train_model
from ml.training.samplers import DetectionSampler, SegmentationSampler, det_targets, lesion_weights

TINY = UNetConfig(in_channels=1, out_channels=5, channels=(4, 8), out_bias=(-2.0, 1.5, 0, 0, 0))


@pytest.fixture(scope="module")
def tiny_cases():
    """Two 'tiny' phantoms with at least one nodule between them, cached the same way as in training."""
    cases = [build_case("tiny", seed) for seed in (3, 4, 5)]
    assert sum(len(c["lesions"]) for c in cases) > 0
    return cases


def test_det_targets_put_a_peak_and_the_regression_at_the_centre():
    heat, reg, mask = det_targets(np.array([[5.3, 6.0, 6.8]]), np.array([8.0]), (12, 12, 12))
    assert heat[5, 6, 7] == 1.0 and (heat == 1.0).sum() == 1
    assert reg[0, 5, 6, 7] == pytest.approx(np.log(8.0))
    np.testing.assert_allclose(reg[1:, 5, 6, 7], [0.3, 0.0, -0.2], atol=1e-6)
    assert mask[5, 6, 7] and not mask[0, 0, 0]


def test_focal_loss_is_lower_for_the_right_answer():
    heat = torch.zeros(1, 1, 4, 4, 4)
    heat[0, 0, 1, 2, 3] = 1.0
    good = torch.full_like(heat, -6.0)
    good[0, 0, 1, 2, 3] = 6.0
    assert centernet_focal_loss(good, heat) < 0.01 < centernet_focal_loss(torch.zeros_like(heat), heat)


def test_dice_bce_is_near_zero_for_a_confident_right_answer():
    target = torch.zeros(1, 1, 4, 4, 4)
    target[..., :2] = 1
    loss, parts = dice_bce_loss(target * 20 - 10, target)
    assert float(loss) < 0.01 and parts["dice"] > 0.99


def test_samplers_return_documented_shapes(tiny_cases):
    rng = np.random.default_rng(0)
    x, heat, reg, mask = DetectionSampler(tiny_cases, patch=16).sample(rng, 3)
    assert x.shape == (3, 1, 16, 16, 16) and reg.shape == (3, 4, 16, 16, 16) and mask.shape == heat.shape
    assert x.dtype == np.float32 and -1.0 <= x.min() and x.max() <= 1.0
    xs, ys = SegmentationSampler(tiny_cases, patch=16).sample(rng, 2)
    assert xs.shape == ys.shape == (2, 1, 16, 16, 16)


def test_phantom_cases_record_texture_and_attachment_of_each_nodule(tiny_cases):
    for case in tiny_cases:
        assert len(case["lesion_texture"]) == len(case["lesion_attached"]) == len(case["lesions"])
        assert set(case["lesion_texture"]) <= {"solid", "part_solid", "ground_glass", "calcified"}
        assert set(case["lesion_attached"]) <= {"", "vessel", "pleura"}


def _case(lesions, texture=None, attached=None, shape=(10, 10, 10)):
    case = {"lesions": np.array(lesions, np.float32).reshape(-1, 4), "det_hu": np.zeros(shape, np.int16),
            "vessel_zyx": np.array([[5, 5, 5]], np.int16), "lung_zyx": np.array([[5, 5, 5]], np.int16)}
    if texture is not None:
        case["lesion_texture"], case["lesion_attached"] = np.array(texture), np.array(attached)
    return case


def test_hard_nodules_weigh_more_and_reviewed_cases_fall_back_to_size():
    phantom = _case([[5, 5, 5, 12.0], [5, 5, 5, 5.0], [5, 5, 5, 12.0], [5, 5, 5, 12.0], [5, 5, 5, 6.0]],
                    ["solid", "solid", "ground_glass", "calcified", "part_solid"], ["", "", "", "", "vessel"])
    np.testing.assert_allclose(lesion_weights(phantom), [1.0, 2.0, 2.0, 3.0, 3.5])
    reviewed = _case([[5, 5, 5, 12.0], [5, 5, 5, 5.0]])       # no texture / attachment recorded
    np.testing.assert_allclose(lesion_weights(reviewed), [1.0, 2.0])


def test_the_detection_sampler_draws_nodules_by_weight_and_background_by_volume():
    hard = _case([[5, 5, 5, 5.0]], ["ground_glass"], ["pleura"])                      # weight 3.5
    easy = _case([[5, 5, 5, 15.0]], ["solid"], [""], shape=(30, 30, 30))             # weight 1, 27x volume
    sampler = DetectionSampler([hard, easy], patch=8)
    np.testing.assert_allclose(sampler.lesion_p, [3.5 / 4.5, 1 / 4.5])
    np.testing.assert_allclose(sampler.case_p, [1 / 28, 27 / 28])
    rng = np.random.default_rng(0)
    picks = [sampler._centre(rng)[0] for _ in range(4000)]
    # P_POSITIVE (0.5) of the draws go to a nodule, the rest to background: case 0's share is
    # 0.5 * 3.5/4.5 + 0.5 * 1/28 = 0.407 (it would be 0.5 with uniform draws)
    assert abs(np.mean(np.array(picks) == 0) - (0.5 * 3.5 / 4.5 + 0.5 / 28)) < 0.03


def _fixed_batch(tiny_cases):
    batch = DetectionSampler(tiny_cases, patch=16).sample(np.random.default_rng(1), 2)
    return lambda rng, b: batch


def test_a_short_run_lowers_the_loss(tiny_cases):
    torch.manual_seed(0)
    net = UNet3D(TINY)
    cfg = TrainConfig(steps=40, batch=2, lr=3e-3, warmup_steps=1, log_every=5, checkpoint_every=1000)
    history = train_model(net, _fixed_batch(tiny_cases), detection_loss, cfg, name="t", device=torch.device("cpu"))
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]


def _run(steps, cases, checkpoint=None, total=4):
    torch.manual_seed(0)
    net = UNet3D(TINY)
    cfg = TrainConfig(steps=steps, batch=2, lr=1e-3, log_every=1, checkpoint_every=2, warmup_steps=1)
    sampler = DetectionSampler(cases, patch=16)
    hist = train_model(net, sampler.sample, detection_loss, cfg, name="t", device=torch.device("cpu"),
                       checkpoint=checkpoint)
    return net, hist


def test_training_on_cpu_is_deterministic(tiny_cases):
    a, ha = _run(3, tiny_cases)
    b, hb = _run(3, tiny_cases)
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
    for ta, tb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(ta, tb)


def test_resume_continues_exactly(tiny_cases, tmp_path):
    straight, _ = _run(4, tiny_cases)
    _run(2, tiny_cases, checkpoint=tmp_path / "state")
    resumed, hist = _run(4, tiny_cases, checkpoint=tmp_path / "state")
    assert [h["step"] for h in hist] == [1, 2, 3, 4]
    for ta, tb in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(ta, tb)


def test_model_file_round_trip_brings_back_config_and_metadata(tmp_path):
    torch.manual_seed(0)
    net = UNet3D(replace(TINY, channels=(4, 8, 16)))
    path = save_model_file(tmp_path / "m.pt", {"version": "test-1", "models": {"detector": pack_model(net, half=False)},
                                               "training": {"data": {"seeds": [1, 2]}}, "metrics": {"cpm": 0.5}})
    payload = load_model_file(path)
    assert payload["version"] == "test-1" and payload["code_version"] == code_version()
    assert payload["training"] == {"data": {"seeds": [1, 2]}} and payload["metrics"] == {"cpm": 0.5}
    again = unpack_model(payload["models"]["detector"])
    assert again.config == net.config
    x = torch.randn(1, 1, 8, 8, 8)
    torch.testing.assert_close(again(x), net.eval()(x))


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a radloop"):
        load_model_file(tmp_path / "x.pt")
