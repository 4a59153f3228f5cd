"""The CT viewer in a real Chromium: images, MPR, window presets, HU under the cursor, and the review
of findings (accept, reject, paint, add, undo) saved through the review API and read back."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import log_in, screenshot
from tests.conftest import PASSWORD
from tests.factories import series_bytes
from tests.phantoms import ingest_phantom, small_phantom_with_nodule
from webapp.archive import services as archive
from webapp.archive.models import Series, Study
from webapp.review.models import Finding

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

READY = "window.radloopViewer && window.radloopViewer.ready"
LOADED = "window.radloopViewer && window.radloopViewer.loaded"


@pytest.fixture
def phantom_case(cast, tmp_path, monkeypatch):
    """A small chest phantom (54 slices of 128x128) with one solid nodule, ingested; two AI findings:
    the true nodule (with its ground-truth mask) and a false positive in the other lung."""
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")  # no worker here
    ph = small_phantom_with_nodule()
    batch = archive.start_batch(cast.admin)
    ingest_phantom(batch, tmp_path / "dicom", ph, patient_id="VIEWER-1")
    study = Study.objects.get(patient_id="VIEWER-1")
    series = Series.objects.get(study=study)
    nodule = max(ph.lesions, key=lambda l: l.diameter_mm)
    mask = ph.label_mask == nodule.id
    zyx = np.argwhere(mask)
    lo, hi = zyx.min(axis=0), zyx.max(axis=0) + 1
    true = Finding(
        study=study, series=series, centre_x_mm=nodule.centre_xyz_mm[0], centre_y_mm=nodule.centre_xyz_mm[1],
        centre_z_mm=nodule.centre_xyz_mm[2], diameter_mm=nodule.diameter_mm,
        bbox_min_xyz_mm=[c - nodule.diameter_mm / 2 for c in nodule.centre_xyz_mm],
        bbox_max_xyz_mm=[c + nodule.diameter_mm / 2 for c in nodule.centre_xyz_mm],
        volume_ml=float(mask.sum() * np.prod(ph.spacing_zyx_mm) / 1000), mean_hu=float(ph.hu[mask].mean()),
        score=0.93, uncertainty=0.08,
    )
    true.set_mask(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], lo)
    true.save()
    fp_centre = (-nodule.centre_xyz_mm[0], nodule.centre_xyz_mm[1], nodule.centre_xyz_mm[2] + 6)
    false = Finding.objects.create(
        study=study, series=series, centre_x_mm=fp_centre[0], centre_y_mm=fp_centre[1], centre_z_mm=fp_centre[2],
        diameter_mm=5.0, bbox_min_xyz_mm=[c - 2.5 for c in fp_centre], bbox_max_xyz_mm=[c + 2.5 for c in fp_centre],
        volume_ml=0.065, mean_hu=-650.0, score=0.41, uncertainty=0.35,
    )
    return {"phantom": ph, "study": study, "series": series, "true": true, "false": false, "nodule": nodule}


def voxel_of(ph, world) -> tuple[int, int, int]:
    """(z, y, x) index of a patient point in the phantom's grid (axis-aligned, ascending)."""
    ox, oy, oz = ph.origin_xyz_mm
    dz, dy, dx = ph.spacing_zyx_mm
    return (round((world[2] - oz) / dz), round((world[1] - oy) / dy), round((world[0] - ox) / dx))


def open_viewer(page, study, *, from_worklist=False):
    if from_worklist:
        page.goto("/studies/")
        page.locator(f"tr[data-study-uid='{study.study_uid}'] a.open-viewer").click()
        page.wait_for_url(f"**/studies/{study.study_uid}/view/")
    else:
        page.goto(f"/studies/{study.study_uid}/view/")
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_function(LOADED, timeout=60_000)


def viewport_pixels(page, name: str) -> np.ndarray:
    png = page.locator(f"#vp-{name} .vp-el").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def rv(page, expr: str):
    return page.evaluate(f"window.radloopViewer.{expr}")


def wait_saved(page):
    page.wait_for_function("window.radloopViewer.saveStatus() === 'saved' && window.radloopViewer.queueLength() === 0",
                           timeout=20_000)


def test_a_radiologist_opens_a_case_from_the_worklist_and_reads_the_ct(page, cast, phantom_case):
    ph, study = phantom_case["phantom"], phantom_case["study"]
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study, from_worklist=True)
    screenshot(page, "viewer-mpr")

    assert rv(page, "mode") == "mpr" and rv(page, "mprReason") is None
    assert rv(page, "viewportNames()") == ["axial", "coronal", "sagittal"]
    assert rv(page, "sliceCount('axial')") == ph.hu.shape[0]
    timings = rv(page, "timings()")
    assert timings["radloop:time-to-first-image"] <= timings["radloop:time-to-series-loaded"]
    # The CT is on screen: dark air around a bright body, a real spread of grey values. In the
    # lung window (-600/1500) air at -1000 HU is grey level (−1000+1350)/1500*255 ≈ 60.
    axial = viewport_pixels(page, "axial")
    h, w = axial.shape
    corner = axial[: h // 10, : w // 10]
    centre = axial[h // 3: 2 * h // 3, w // 3: 2 * w // 3]
    assert corner.mean() < 80, "air outside the body is dark"
    assert (axial > 180).mean() > 0.10, "the body is bright in the lung window"
    assert centre.std() > 25, "the chest has structure, not a flat fill"

    # Wheel and arrow keys change the slice, the same way (down: towards the feet, lower z).
    before = rv(page, "sliceIndex('axial')")
    box = page.locator("#vp-axial .vp-el").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 100)
    page.wait_for_function(f"window.radloopViewer.sliceIndex('axial') === {before - 1}")
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"window.radloopViewer.sliceIndex('axial') === {before - 2}")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"window.radloopViewer.sliceIndex('axial') === {before + 1}")
    label = page.inner_text("#vp-axial .vp-label")
    z_mm = ph.origin_xyz_mm[2] + (before + 1) * ph.spacing_zyx_mm[0]
    assert f"{before + 2}/{ph.hu.shape[0]}" in label and f"z {z_mm:.1f} mm" in label

    # Presets 1-4 set window/level exactly; the image changes with them.
    lung = viewport_pixels(page, "axial")
    page.keyboard.press("3")
    assert rv(page, "windowLevel()") == {"center": 500, "width": 2000}
    page.keyboard.press("2")
    assert rv(page, "windowLevel()") == {"center": 50, "width": 350}
    page.wait_for_timeout(300)
    mediastinum = viewport_pixels(page, "axial")
    assert np.abs(mediastinum - lung).mean() > 5
    assert "W 350 L 50" in page.inner_text("#vp-axial .vp-label")
    screenshot(page, "viewer-mediastinum")

    # HU under the cursor is the phantom's own value at that voxel.
    nodule = phantom_case["nodule"]
    page.evaluate(f"window.radloopViewer.goTo({list(nodule.centre_xyz_mm)})")
    x, y = rv(page, f"pagePoint('axial', {list(nodule.centre_xyz_mm)})")
    page.mouse.move(x, y)
    readout = page.inner_text("#cursor-readout")
    z, j, i = voxel_of(ph, nodule.centre_xyz_mm)
    hu = page.evaluate(f"window.radloopViewer.huAt({list(nodule.centre_xyz_mm)})")
    assert round(hu) == int(ph.hu[z, j, i])
    assert f"{round(hu)} HU" in readout and "mm" in readout

    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    help_text = page.inner_text("#help")
    for key in ("1 / 2 / 3 / 4", "Ctrl+Z / Ctrl+Y", "Accept", "Reject", "Brush", "Length"):
        assert key in help_text
    screenshot(page, "viewer-help")
    page.keyboard.press("Escape")
    assert page.js_errors == []
