"""The CT viewer in a real Chromium: images, MPR, window presets, HU under the cursor, and the review
of findings (accept, reject, paint, add, undo) saved through the review API and read back."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import log_in, screenshot
from tests.conftest import PASSWORD
from tests.factories import ct_slice, to_bytes
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


def db_mask_voxels(finding_id: int) -> int:
    return int(Finding.objects.get(pk=finding_id).get_mask().sum())


def test_a_radiologist_reviews_findings_and_every_change_persists(page, cast, phantom_case):
    ph, study, nodule = phantom_case["phantom"], phantom_case["study"], phantom_case["nodule"]
    true_id, false_id = phantom_case["true"].pk, phantom_case["false"].pk
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study)
    items = page.locator("#findings-list li.finding")
    assert items.count() == 2
    first = items.nth(0).inner_text()
    assert "score 0.93" in first and "8.3 mm" in first and "unc. 0.08" in first and "HU" in first and "mL" in first
    # The ground-truth mask is drawn as a labelmap: every voxel of it.
    assert rv(page, f"maskVoxels({true_id})") == db_mask_voxels(true_id)

    # Clicking a finding moves all three views to its centre.
    items.nth(0).click()
    z, j, i = voxel_of(ph, nodule.centre_xyz_mm)
    page.wait_for_function(f"window.radloopViewer.sliceIndex('axial') === {z}")
    assert rv(page, "sliceIndex('coronal')") == j and rv(page, "sliceIndex('sagittal')") == i
    page.wait_for_timeout(300)
    screenshot(page, "viewer-finding-selected")
    # The mask overlay and the status circle colour the nodule (proposed: yellow) in the axial view.
    x, y = rv(page, f"pagePoint('axial', {list(nodule.centre_xyz_mm)})")
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"), dtype=np.float32)
    around = shot[int(y) - 25: int(y) + 25, int(x) - 25: int(x) + 25]
    yellowish = (around[..., 0] > 150) & (around[..., 1] > 120) & (around[..., 2] < 100)
    assert yellowish.sum() > 20, "the proposed finding is drawn in its status colour"

    # Accept (A).
    page.keyboard.press("a")
    wait_saved(page)
    assert Finding.objects.get(pk=true_id).status == "accepted"
    assert page.inner_text("#save-status") == "saved"

    # Reject (R) with a reason.
    items.nth(1).click()
    page.keyboard.press("r")
    page.fill("#reject-reason", "vessel branch, not a nodule")
    page.keyboard.press("Enter")
    wait_saved(page)
    rejected = Finding.objects.get(pk=false_id)
    assert rejected.status == "rejected" and rejected.reject_reason == "vessel branch, not a nodule"

    # Brush on the true nodule's mask, beside it, in the axial plane.
    items.nth(0).click()
    page.wait_for_function(f"window.radloopViewer.sliceIndex('axial') === {z}")
    before = rv(page, f"maskVoxels({true_id})")
    page.keyboard.press("b")
    side = [nodule.centre_xyz_mm[0] + nodule.diameter_mm / 2 + 2, nodule.centre_xyz_mm[1], nodule.centre_xyz_mm[2]]
    sx, sy = rv(page, f"pagePoint('axial', {side})")
    page.mouse.move(sx, sy)
    page.mouse.down()
    page.mouse.move(sx + 6, sy + 2, steps=4)
    page.mouse.up()
    wait_saved(page)
    painted = rv(page, f"maskVoxels({true_id})")
    assert painted > before
    edited = Finding.objects.get(pk=true_id)
    assert edited.status == "edited" and db_mask_voxels(true_id) == painted
    assert edited.volume_ml == pytest.approx(painted * np.prod(ph.spacing_zyx_mm) / 1000, rel=1e-6)

    # Brush with a HU window: only voxels inside it are painted (here: lung and air, below -400 HU).
    old_mask = Finding.objects.get(pk=true_id).get_mask().copy()
    old_origin = Finding.objects.get(pk=true_id).mask_origin_zyx
    page.check("#brush-threshold")
    page.fill("#brush-hu-min", "-2000")
    page.fill("#brush-hu-max", "-400")
    page.locator("#brush-size").fill("8")
    below = [nodule.centre_xyz_mm[0], nodule.centre_xyz_mm[1] + nodule.diameter_mm / 2 + 3, nodule.centre_xyz_mm[2]]
    bx, by = rv(page, f"pagePoint('axial', {below})")
    page.mouse.move(bx, by)
    page.mouse.down()
    page.mouse.up()
    wait_saved(page)
    f = Finding.objects.get(pk=true_id)
    new_mask, new_origin = f.get_mask(), f.mask_origin_zyx
    full_new = np.zeros(ph.hu.shape, bool)
    full_old = np.zeros(ph.hu.shape, bool)
    full_new[tuple(slice(o, o + n) for o, n in zip(new_origin, new_mask.shape))] = new_mask
    full_old[tuple(slice(o, o + n) for o, n in zip(old_origin, old_mask.shape))] = old_mask
    added = full_new & ~full_old
    assert added.sum() > 0 and (full_old & ~full_new).sum() == 0
    assert ph.hu[added].max() <= -400, "the HU window kept the brush off soft tissue"
    page.uncheck("#brush-threshold")
    screenshot(page, "viewer-painted")

    # Change the label, undo it (a restore revision), redo it.
    page.select_option("#finding-label", "solid")
    wait_saved(page)
    assert Finding.objects.get(pk=true_id).label == "solid"
    page.keyboard.press("Control+z")
    wait_saved(page)
    assert Finding.objects.get(pk=true_id).label == "nodule"
    page.keyboard.press("Control+y")
    wait_saved(page)
    assert Finding.objects.get(pk=true_id).label == "solid"

    # Add a missed finding (N, then click its centre) in the other lung.
    page.keyboard.press("Escape")  # leave the label box
    page.keyboard.press("n")
    missed = [-nodule.centre_xyz_mm[0], nodule.centre_xyz_mm[1] - 10, nodule.centre_xyz_mm[2]]
    mx, my = rv(page, f"pagePoint('axial', {missed})")
    page.mouse.click(mx, my)
    wait_saved(page)
    added_finding = Finding.objects.get(study=study, source="radiologist")
    assert added_finding.status == "accepted"
    assert np.linalg.norm(np.subtract(added_finding.centre_xyz_mm, missed)) < 2 * max(ph.spacing_zyx_mm)
    assert added_finding.get_mask().sum() > 0

    # Reload: everything comes back from the server.
    page.reload()
    page.wait_for_function(LOADED, timeout=60_000)
    by_id = {f["id"]: f for f in rv(page, "findings()")}
    assert by_id[true_id]["status"] == "edited" and by_id[true_id]["label"] == "solid"
    assert by_id[false_id]["status"] == "rejected" and by_id[false_id]["reject_reason"] == "vessel branch, not a nodule"
    assert by_id[added_finding.pk]["status"] == "accepted" and by_id[added_finding.pk]["source"] == "radiologist"
    assert rv(page, f"maskVoxels({true_id})") == db_mask_voxels(true_id)
    review = page.request.get(f"/api/review/studies/{study.study_uid}/").json()
    actions = [r["action"] for r in review["revisions"]]
    assert actions[::-1] == ["accept", "reject", "mask", "mask", "label", "restore", "restore", "add"]
    assert review["case"]["review_status"] == "in_review"
    screenshot(page, "viewer-after-reload")
    assert page.js_errors == []


def test_a_second_reader_with_a_stale_revision_gets_the_conflict_message(browser, live_server, cast, phantom_case):
    study = phantom_case["study"]
    pages = []
    for user in (cast.radiologist, cast.radiologist2):
        context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 900}, bypass_csp=True)  # see conftest.page
        p = context.new_page()
        log_in(p, user.username, PASSWORD)
        open_viewer(p, study)
        pages.append(p)
    first, second = pages
    first.locator("#findings-list li.finding").nth(0).click()
    first.keyboard.press("a")
    wait_saved(first)

    second.locator("#findings-list li.finding").nth(1).click()
    second.keyboard.press("a")
    second.wait_for_selector("#conflict:not([hidden])")
    message = second.inner_text("#conflict")
    assert "changed by rita-radiologist" in message and "revision 1" in message and "Reload" in message
    assert second.inner_text("#save-status") == "not saved: conflict"
    screenshot(second, "viewer-conflict")
    assert Finding.objects.get(pk=phantom_case["false"].pk).status == "proposed", "nothing was overwritten"

    second.click("#conflict-reload")
    second.wait_for_function(LOADED, timeout=60_000)
    assert second.locator("#conflict").is_hidden()
    statuses = {f["id"]: f["status"] for f in rv(second, "findings()")}
    assert statuses[phantom_case["true"].pk] == "accepted"
    for p in pages:
        p.context.close()


def test_changes_made_offline_wait_in_the_queue_and_are_sent_later(page, cast, phantom_case):
    study = phantom_case["study"]
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study)
    page.locator("#findings-list li.finding").nth(0).click()
    page.context.set_offline(True)
    page.keyboard.press("a")
    page.wait_for_function("window.radloopViewer.saveStatus() === 'offline'")
    assert page.inner_text("#save-status") == "offline, will retry"
    queued = page.evaluate("""Object.keys(localStorage).filter((k) => k.startsWith('radloop.queue.'))
        .map((k) => JSON.parse(localStorage.getItem(k)).items.map((i) => i.body.action))""")
    assert queued == [["accept"]]
    assert Finding.objects.get(pk=phantom_case["true"].pk).status == "proposed"
    page.context.set_offline(False)
    wait_saved(page)
    assert Finding.objects.get(pk=phantom_case["true"].pk).status == "accepted"


def test_a_series_that_cannot_be_reconstructed_stays_a_stack_and_says_why(page, cast, monkeypatch):
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")
    batch = archive.start_batch(cast.admin)
    positions = [0.0, 2.5, 5.0, 10.0, 12.5]  # one gap twice as wide
    for k, z in enumerate(positions):
        data = to_bytes(ct_slice(index=k, rows=64, columns=64, study="irregular", series="irregular-1",
                                 patient_id="IRR-1", ImagePositionPatient=[-100.0, -100.0, z]))
        archive.ingest_stream(batch, f"{k}.dcm", io.BytesIO(data))
    study = Study.objects.get(patient_id="IRR-1")
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study)
    assert rv(page, "mode") == "stack"
    assert "No MPR: irregular slice spacing (2.50–5.00 mm)" in page.inner_text("#mpr-note")
    assert rv(page, "sliceCount()") == 5
    # scrolling works in the stack; positions are the slices' own
    page.keyboard.press("End")
    page.wait_for_function("window.radloopViewer.sliceIndex() === 4")
    assert "z 12.5 mm" in page.inner_text("#vp-stack .vp-label")
    screenshot(page, "viewer-irregular")


def test_the_viewer_page_is_for_radiologists_and_admins_and_is_audited(client, cast, phantom_case):
    from webapp.accounts.models import AuditEvent

    study = phantom_case["study"]
    url = f"/studies/{study.study_uid}/view/"
    client.force_login(cast.outsider)
    assert client.get(url).status_code == 403
    client.force_login(cast.admin)
    response = client.get(url)
    assert response.status_code == 200
    assert AuditEvent.objects.filter(action="viewer.study.opened", actor=cast.admin, object_id=study.audit_ref()[1]).exists()
    html = response.content.decode()
    script = html.split('<script type="module" src="')[1].split('"')[0]
    assert script.startswith("/static/dist/assets/viewer-") and script.endswith(".js")


def test_the_bundle_serves_wasm_and_module_workers_with_their_types(live_server):
    import json
    import urllib.request

    from webapp.viewer.manifest import _manifest_path

    manifest = json.loads(_manifest_path().read_text())
    wasm = next(v["file"] for k, v in manifest.items() if v["file"].endswith(".wasm"))
    with urllib.request.urlopen(f"{live_server.url}/static/dist/{wasm}") as r:
        assert r.headers["Content-Type"] == "application/wasm"
        assert r.read(4) == b"\0asm"
    entry = manifest["src/main.js"]["file"]
    with urllib.request.urlopen(f"{live_server.url}/static/dist/{entry}") as r:
        assert r.headers["Content-Type"].split(";")[0] in {"text/javascript", "application/javascript"}
