"""Retraining from reviews (issue 7, ml side): labelled cases -> training arrays, a real fine-tune from
the shipped model, and scoring of labelled cases against a known truth."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from ml.checkpoint import load_model_file, pack_model, save_model_file
from ml.finetune import (LabelledCase, LabelledLesion, build_case_from_labels, evaluate_cases, finetune,
                         labelled_case_from_phantom, score_case, summarise_cases)
from ml.inference import Predictor
from ml.networks import UNet3D
from ml.preprocessing import preprocessing_constants
from ml.train import DETECTOR, INFERENCE, SEGMENTER
from ml.phantom import TISSUE_LABELS, PhantomConfig, generate_phantom
from ml.training.data import DET_SPACING_MM, SEG_CACHE
from ml.training.review import HARD_NEGATIVE_SHARE
from ml.training.samplers import DetectionSampler, SegmentationSampler
from ml.volumes import Volume

from .test_inference import DIAMETER_MM, plant_nodule

WEIGHTS = Path(__file__).resolve().parents[2] / "ml" / "weights" / "baseline-v1.pt"
pytestmark = pytest.mark.skipif(not WEIGHTS.exists(), reason="shipped weights missing: run python -m ml.train")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: these nets are tiny, and on a shared 2-core machine 2 threads were ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _deepest_lung_points(ph, k: int = 1, min_apart_mm: float = 20.0):
    """Patient mm of lung-parenchyma voxels far from walls, vessels and nodules (candidate negatives)."""
    free = ph.tissue == TISSUE_LABELS["lung"]
    depth = ndimage.distance_transform_edt(free, sampling=ph.spacing_zyx_mm)
    order = np.argsort(depth, axis=None)[::-1]
    out = []
    for flat in order[:20000]:
        p = ph.voxel_to_patient(np.asarray(np.unravel_index(flat, depth.shape), float))
        if all(np.linalg.norm(p - q) >= min_apart_mm for q in out) and \
                all(np.linalg.norm(p - np.asarray(les.centre_xyz_mm)) > 25.0 for les in ph.lesions):
            out.append(p)
            if len(out) == k:
                break
    return out


@pytest.fixture(scope="module")
def tiny():
    """A 'tiny' phantom with at least one nodule, as a labelled case with one hard negative."""
    for seed in range(3, 40):
        ph = generate_phantom(PhantomConfig.preset("tiny"), seed=seed)
        if ph.lesions:
            return ph, labelled_case_from_phantom(ph, _deepest_lung_points(ph))
    raise AssertionError("no tiny phantom with a nodule")


def _det_to_mm(case_dict, zyx):
    """Det voxels (z, y, x) -> patient mm with the geometry stored in the case dict."""
    ijk_mm = np.asarray(zyx, float)[..., ::-1] * DET_SPACING_MM
    return case_dict["det_origin_xyz_mm"] + ijk_mm @ case_dict["det_direction"].T


def test_lesions_and_negatives_land_where_the_truth_says_also_on_a_flipped_grid(tiny):
    ph, case = tiny
    flipped = Volume(np.ascontiguousarray(ph.hu[:, ::-1, ::-1]), ph.spacing_zyx_mm,
                     tuple(ph.voxel_to_patient([0, ph.hu.shape[1] - 1, ph.hu.shape[2] - 1])),
                     np.diag([-1.0, -1.0, 1.0]))
    for volume in (case.volume, flipped):
        c = build_case_from_labels(LabelledCase(case.case_id, volume, [LabelledLesion(les.centre_xyz_mm, les.diameter_mm)
                                                                       for les in case.lesions], case.hard_negatives_xyz_mm))
        truth = np.array([les.centre_xyz_mm for les in ph.lesions])
        np.testing.assert_allclose(_det_to_mm(c, c["lesions"][:, :3]), truth, atol=1e-3)
        np.testing.assert_allclose(c["lesions"][:, 3], [les.diameter_mm for les in ph.lesions], rtol=1e-6)
        np.testing.assert_allclose(_det_to_mm(c, c["hard_negative_zyx"]), case.hard_negatives_xyz_mm, atol=1e-3)
        # the HU at each lesion centre on the 2 mm grid is the HU of the original grid there (same place)
        for les, (z, y, x, _) in zip(ph.lesions, c["lesions"]):
            k = np.rint(volume.patient_to_voxel(les.centre_xyz_mm)).astype(int)
            assert abs(int(c["det_hu"][tuple(np.rint([z, y, x]).astype(int))]) - float(volume.hu[tuple(k)])) < 250


def test_training_arrays_have_what_the_samplers_read(tiny):
    ph, case = tiny
    c = build_case_from_labels(case)
    n_les = len(case.lesions)
    assert c["det_hu"].dtype == np.int16 and c["lesions"].shape == (n_les, 4)
    assert c["seg_hu"].shape == c["seg_label"].shape == (len(c["seg_is_lesion"]), SEG_CACHE, SEG_CACHE, SEG_CACHE)
    assert c["seg_is_lesion"].sum() == n_les and len(c["seg_is_lesion"]) >= n_les + 1
    # lung points from HU: nearly all in lung parenchyma / vessels of the analytic truth
    tissue = ph.tissue[tuple(np.clip(np.rint(ph.patient_to_voxel(_det_to_mm(c, c["lung_zyx"]))).astype(int), 0,
                                     np.asarray(ph.hu.shape) - 1).T)]
    assert np.isin(tissue, [TISSUE_LABELS["lung"], TISSUE_LABELS["vessel"], TISSUE_LABELS["airway"]]).mean() > 0.9
    # the rejected finding makes up HARD_NEGATIVE_SHARE of the "vessel" patch centres
    hn = np.rint(c["hard_negative_zyx"]).astype(int)
    share = np.all(c["vessel_zyx"][:, None] == hn[None], axis=-1).any(1).mean()
    assert share == pytest.approx(HARD_NEGATIVE_SHARE, abs=0.05)
    # the existing samplers train on it unchanged
    rng = np.random.default_rng(0)
    x, heat, reg, mask = DetectionSampler([c], patch=16).sample(rng, 4)
    assert x.shape == (4, 1, 16, 16, 16) and np.isfinite(reg).all()
    xs, ys = SegmentationSampler([c], patch=24).sample(rng, 4)
    assert xs.shape == ys.shape == (4, 1, 24, 24, 24)


def test_seg_labels_positive_at_lesions_empty_at_hard_negatives_and_mask_beats_ball(tiny):
    ph, case = tiny
    c = build_case_from_labels(case)
    n_les = len(case.lesions)
    mid = slice(SEG_CACHE // 2 - 4, SEG_CACHE // 2 + 4)
    for k in range(n_les):                                             # the mask, resampled to 1 mm
        les, lab = case.lesions[k], c["seg_label"][k]
        assert lab[mid, mid, mid].any()
        assert lab.sum() == pytest.approx(les.mask.sum() * case.volume.voxel_volume_ml * 1000, rel=0.3)
    hn = c["seg_label"][n_les]                                        # the rejected finding: nothing there
    assert not hn[mid, mid, mid].any()
    # a cuboid mask is used as given; without a mask, a ball of the diameter
    les = case.lesions[0]
    centre_vox = np.rint(case.volume.patient_to_voxel(les.centre_xyz_mm)).astype(int)
    half = np.ceil(3.0 / np.asarray(case.volume.spacing_zyx_mm)).astype(int)   # ~6 mm cube
    cuboid = np.ones(2 * half + 1, bool)
    with_mask = build_case_from_labels(LabelledCase("m", case.volume, [
        LabelledLesion(les.centre_xyz_mm, 10.0, cuboid, tuple(centre_vox - half))]))
    ball = build_case_from_labels(LabelledCase("b", case.volume, [LabelledLesion(les.centre_xyz_mm, 10.0)]))
    cuboid_mm3 = np.prod((2 * half + 1) * np.asarray(case.volume.spacing_zyx_mm))
    assert with_mask["seg_label"][0].sum() == pytest.approx(cuboid_mm3, rel=0.25)
    assert ball["seg_label"][0].sum() == pytest.approx(np.pi / 6 * 10.0 ** 3, rel=0.1)


def test_contradicting_or_bad_labels(tiny):
    ph, case = tiny
    les = case.lesions[0]
    inside = tuple(np.asarray(les.centre_xyz_mm) + 0.5)               # a rejected finding on an accepted one
    c = build_case_from_labels(LabelledCase("x", case.volume, [les], [inside, *case.hard_negatives_xyz_mm]))
    assert int(c["n_hard_negatives_dropped"]) == 1 and len(c["hard_negative_zyx"]) == 1
    with pytest.raises(ValueError, match="outside the volume"):
        build_case_from_labels(LabelledCase("x", case.volume, [LabelledLesion((1e4, 0.0, 0.0), 8.0)]))
    with pytest.raises(ValueError, match="mask_origin_zyx"):
        build_case_from_labels(LabelledCase("x", case.volume, [LabelledLesion(les.centre_xyz_mm, 8.0, les.mask, None)]))
    with pytest.raises(ValueError, match="diameter"):
        build_case_from_labels(LabelledCase("x", case.volume, [LabelledLesion(les.centre_xyz_mm, 0.0)]))


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_parent(tmp_path_factory):
    """A small model file (the shipped architecture at 4-8 channels, random weights) to fine-tune quickly."""
    torch.manual_seed(0)
    nets = {"detector": UNet3D(replace(DETECTOR, channels=(4, 8))), "segmenter": UNet3D(replace(SEGMENTER, channels=(4, 8)))}
    return save_model_file(tmp_path_factory.mktemp("parent") / "tiny-parent.pt", {
        "version": "tiny-parent", "models": {k: pack_model(v) for k, v in nets.items()},
        "preprocessing": preprocessing_constants(), "inference": dict(INFERENCE), "training": {}, "metrics": {}})


def _run(parent, tmp_path, cases, seed, name, progress=None):
    return finetune(parent, cases, tmp_path / f"{name}.pt", phantom_plan=(("tiny", 2),), det_steps=4, seg_steps=3,
                    lr=1e-3, seed=seed, device="cpu", cache_dir=tmp_path / "cache", progress=progress, batch=2,
                    det_patch=24, seg_patch=24)


def _weights(path):
    return {f"{n}.{k}": v for n, m in load_model_file(path)["models"].items() for k, v in m["state_dict"].items()}


def test_a_tiny_finetune_starts_from_the_parent_records_it_and_repeats_for_a_seed(tiny, tiny_parent, tmp_path):
    ph, case = tiny
    other = labelled_case_from_phantom(generate_phantom(PhantomConfig.preset("tiny"), seed=101))
    seen = []
    a = _run(tiny_parent, tmp_path, [case, other], 0, "a", progress=seen.append)
    b = _run(tiny_parent, tmp_path, [case, other], 0, "b")
    c = _run(tiny_parent, tmp_path, [case, other], 1, "c")
    parent, wa, wb, wc = _weights(tiny_parent), _weights(a), _weights(b), _weights(c)
    assert wa.keys() == parent.keys()
    moved = [k for k in parent if not torch.equal(wa[k], parent[k])]
    assert len(moved) > len(parent) // 2                               # trained, from the parent's weights:
    assert max(float((wa[k].float() - parent[k].float()).abs().max()) for k in parent) < 0.05   # a few small steps
    assert all(torch.equal(wa[k], wb[k]) for k in wa)                 # same seed: same weights
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)             # another seed: others
    meta = Predictor.from_checkpoint(a, device="cpu").metadata
    assert meta["parent"]["sha256"] == _sha(tiny_parent) and meta["parent"]["version"] == "tiny-parent"
    assert meta["parent"]["lineage"] == ["tiny-parent"]
    t = meta["training"]
    assert t["kind"] == "finetune" and t["parent"] == meta["parent"]
    assert t["data"]["review"]["case_ids"] == [case.case_id, other.case_id]
    assert t["data"]["review"]["hard_negatives"] == 1 and t["data"]["phantoms"]["presets"] == {"tiny": 2}
    assert t["hyperparameters"]["seed"] == 0 and t["detector"]["steps_done"] == 4 and t["segmenter"]["steps_done"] == 3
    assert t["device"] == "cpu" and t["wall_time_s"] > 0 and meta["code_version"]
    assert meta["inference"] == INFERENCE and meta["preprocessing"] == preprocessing_constants()
    stages = [p["stage"] for p in seen]
    assert stages[0] == "data" and "detector" in stages and stages[-1] == "segmenter"
    last = seen[-1]
    assert last["step"] == last["steps"] == 3 and np.isfinite(last["loss"]) and last["eta_s"] >= 0
    assert not any((tmp_path / "cache" / "finetune").iterdir())      # resumable state removed when done
    assert Predictor.from_checkpoint(a, device="cpu").predict(case.volume).model_version.startswith("a+")
    grandchild = _run(a, tmp_path, [case], 0, "g")                    # lineage grows
    assert load_model_file(grandchild)["parent"]["lineage"] == ["tiny-parent", meta["version"]]


def test_an_aborted_finetune_resumes_to_the_same_weights(tiny, tiny_parent, tmp_path):
    ph, case = tiny

    def stop_in_segmenter(info):
        if info["stage"] == "segmenter" and info["step"] >= 1:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        _run(tiny_parent, tmp_path, [case], 0, "r", progress=stop_in_segmenter)
    assert not (tmp_path / "r.pt").exists()
    state = next((tmp_path / "cache" / "finetune").iterdir())
    assert (state / "detector.state").exists()                         # the detector's finished state was kept
    seen = []
    resumed = _run(tiny_parent, tmp_path, [case], 0, "r", progress=seen.append)
    assert "detector" not in {p["stage"] for p in seen}               # nothing left to do there
    straight = _run(tiny_parent, tmp_path / "s", [case], 0, "s")
    wr, ws = _weights(resumed), _weights(straight)
    assert all(torch.equal(wr[k], ws[k]) for k in wr)


def test_finetune_refuses_no_cases_and_duplicates(tiny, tiny_parent, tmp_path):
    with pytest.raises(ValueError, match="no labelled cases"):
        _run(tiny_parent, tmp_path, [], 0, "x")
    with pytest.raises(ValueError, match="given twice"):
        _run(tiny_parent, tmp_path, [tiny[1], tiny[1]], 0, "x")


@pytest.fixture(scope="module")
def planted():
    """The planted 10 mm ball (tests/ml/test_inference.py), its exact mask as a box on the volume's grid,
    and the shipped model's findings on it (one real run)."""
    volume, centre = plant_nodule()
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), -1)
    ball = np.linalg.norm(volume.voxel_to_patient(grid) - centre, axis=-1) <= DIAMETER_MM / 2
    box = ndimage.find_objects(ball.astype(np.uint8))[0]
    findings = Predictor.from_checkpoint(WEIGHTS, device="cpu").predict(volume).findings
    return volume, centre, ball[box], tuple(s.start for s in box), findings


def _metrics(case, findings):
    record, rows, fps = score_case(case, findings)
    return summarise_cases([record], rows, [{"false_positives": fps, "seconds": 0.0}])


def test_scores_on_a_case_with_a_known_answer(planted):
    """The shipped model finds the planted nodule: labelled there it is a hit with a good mask; labelled
    elsewhere it is a miss and that finding a false positive; without a mask only the diameter is scored."""
    volume, centre, mask, origin, findings = planted
    m = _metrics(LabelledCase("right", volume, [LabelledLesion(tuple(centre), DIAMETER_MM, mask, origin)]), findings)
    assert m["n_cases"] == 1 and m["n_lesions"] == 1 and m["n_detected"] == 1
    assert m["cpm"] == m["cpm_4_30"] == 1.0
    # HD95 within one slice (3 mm here): a mask one slice short or long at a pole is the grid's limit
    assert m["dice_ge_6mm"] > 0.7 and 0 < m["hd95_mm"] <= max(volume.spacing_zyx_mm) + 1e-6
    assert m["diameter_mae_mm"] < 1.5
    assert m["volume_abs_err_ml"] < 0.2 and m["n_segmentation_scored"] == 1
    assert m["froc"]["sensitivity"][-1] == 1.0 and len(m["froc"]["fp_per_scan"]) == len(m["froc"]["sensitivity"])
    assert m["false_positives_per_scan"] == len(findings) - 1
    elsewhere = tuple(np.asarray(centre) + [0.0, 0.0, 3 * DIAMETER_MM])
    w = _metrics(LabelledCase("wrong", volume, [LabelledLesion(elsewhere, DIAMETER_MM)]), findings)
    assert w["n_detected"] == 0 and w["cpm"] == 0.0 and w["dice_ge_6mm"] is None and w["diameter_mae_mm"] is None
    assert w["false_positives_per_scan"] == len(findings)
    nomask = _metrics(LabelledCase("b", volume, [LabelledLesion(tuple(centre), DIAMETER_MM)]), findings)
    assert nomask["dice_ge_6mm"] is None and nomask["diameter_mae_mm"] == pytest.approx(m["diameter_mae_mm"])
    small = _metrics(LabelledCase("s", volume, [LabelledLesion(tuple(centre), 5.0)]), findings)  # < 6 mm: not segmented
    assert small["n_detected"] == 1 and small["diameter_mae_mm"] is None and small["cpm_4_30"] == 1.0


def test_evaluate_cases_on_phantoms_gives_the_documented_keys_in_range(tiny):
    ph, case = tiny
    seen = []
    m = evaluate_cases(WEIGHTS, [case], device="cpu", progress=seen.append)
    for key in ("cpm", "cpm_4_30", "froc", "dice_ge_6mm", "hd95_mm", "diameter_mae_mm", "volume_abs_err_ml",
                "n_cases", "n_lesions"):
        assert key in m
    assert m["n_cases"] == 1 and m["n_lesions"] == len(ph.lesions) and m["model_version"].startswith("baseline-v1")
    assert seen == [{"stage": "evaluate", "step": 1, "steps": 1, "case_id": case.case_id}]
    assert m["per_case"][0]["findings"] >= m["per_case"][0]["false_positives"] >= 0
    assert 0.0 <= m["cpm"] <= 1.0
    fps, sens = np.array(m["froc"]["fp_per_scan"]), np.array(m["froc"]["sensitivity"])
    assert np.all(np.diff(fps) >= 0) and np.all(np.diff(sens) >= 0) and sens.max() <= 1.0
    for key in ("dice_ge_6mm",):
        assert m[key] is None or 0.0 <= m[key] <= 1.0
    for key in ("hd95_mm", "diameter_mae_mm", "volume_abs_err_ml"):
        assert m[key] is None or m[key] >= 0.0
