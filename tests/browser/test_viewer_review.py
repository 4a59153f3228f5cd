"""The viewer's review workflow beyond the basics in test_viewer.py: sign-off (refused while a finding
is proposed), comments that survive a reload, the eraser, selecting a finding by clicking it in the
image, the MPR layout at two window sizes, and the early first paint."""
from __future__ import annotations

import numpy as np
import pytest

from tests.browser.conftest import log_in, screenshot
from tests.browser.test_viewer import LOADED, db_mask_voxels, open_viewer, phantom_case, rv, voxel_of, wait_saved  # noqa: F401
from tests.conftest import PASSWORD
from webapp.archive.models import Study
from webapp.review.models import CaseReview, Finding

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def select(page, item) -> None:
    """Click a finding in the list and wait until the page has selected it (a key pressed before
    that, while the list re-renders after a save, would act on no finding)."""
    finding_id = item.get_attribute("data-finding-id")
    item.click()
    page.wait_for_selector(f"#findings-list li.finding.selected[data-finding-id='{finding_id}']")


def test_sign_off_is_refused_while_a_finding_is_proposed_and_then_shows_in_the_worklist(page, cast, phantom_case):
    study = phantom_case["study"]
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study)
    items = page.locator("#findings-list li.finding")

    # Both AI findings are still proposed: the server refuses and the page says why.
    page.click("#signoff")
    page.wait_for_selector("#notice:not([hidden])")
    notice = page.inner_text("#notice")
    assert "Not saved" in notice and "2 finding(s) are still proposed" in notice
    wait_saved(page)
    assert Study.objects.get(pk=study.pk).review_status != "signed_off"
    assert page.inner_text("#case-status") != "signed off"

    # Accept one and reject the other (with one proposed left it is still refused).
    select(page, items.nth(0))
    page.keyboard.press("a")
    wait_saved(page)
    page.click("#signoff")
    page.wait_for_function("document.querySelector('#notice').textContent.includes('1 finding(s) are still proposed')")
    wait_saved(page)
    select(page, items.nth(1))
    page.keyboard.press("r")
    page.keyboard.press("Enter")
    wait_saved(page)

    page.click("#signoff")
    wait_saved(page)
    page.wait_for_function("document.querySelector('#case-status').textContent === 'signed off'")
    assert Study.objects.get(pk=study.pk).review_status == "signed_off"
    assert page.inner_text("#notice") == "Signed off."  # the earlier refusal is no longer shown
    case = CaseReview.objects.get(study=study)
    assert case.signed_off_by == cast.radiologist and case.signed_off_at is not None
    screenshot(page, "viewer-signed-off")

    page.goto("/studies/")
    row = page.locator(f"tr[data-study-uid='{study.study_uid}']")
    assert "Signed off" in row.inner_text()
    assert page.js_errors == []


def test_finding_and_case_comments_persist_across_a_reload(page, cast, phantom_case):
    study, true_id = phantom_case["study"], phantom_case["true"].pk
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study)
    page.locator("#findings-list li.finding").nth(0).click()
    page.fill("#finding-comment", "spiculated margin, compare with 2019")
    page.click("#finding-comment-save")
    wait_saved(page)
    page.fill("#case-comment", "Follow-up CT in 3 months.")
    page.click("#case-comment-save")
    wait_saved(page)
    assert Finding.objects.get(pk=true_id).comment == "spiculated margin, compare with 2019"
    assert CaseReview.objects.get(study=study).comment == "Follow-up CT in 3 months."

    page.reload()
    page.wait_for_function(LOADED, timeout=60_000)
    assert page.input_value("#case-comment") == "Follow-up CT in 3 months."
    page.locator(f"#findings-list li[data-finding-id='{true_id}']").click()
    assert page.input_value("#finding-comment") == "spiculated margin, compare with 2019"
    other = page.locator(f"#findings-list li[data-finding-id='{phantom_case['false'].pk}']")
    other.click()
    assert page.input_value("#finding-comment") == ""
    assert page.js_errors == []


def test_the_eraser_removes_voxels_and_the_stored_volume_drops(page, cast, phantom_case):
    ph, study, nodule = phantom_case["phantom"], phantom_case["study"], phantom_case["nodule"]
    true_id = phantom_case["true"].pk
    before_db = db_mask_voxels(true_id)
    before_volume = Finding.objects.get(pk=true_id).volume_ml
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study)
    page.locator(f"#findings-list li[data-finding-id='{true_id}']").click()
    z = voxel_of(ph, nodule.centre_xyz_mm)[0]
    page.wait_for_function(f"window.radloopViewer.sliceIndex('axial') === {z}")
    assert rv(page, f"maskVoxels({true_id})") == before_db

    page.keyboard.press("e")
    x, y = rv(page, f"pagePoint('axial', {list(nodule.centre_xyz_mm)})")
    page.mouse.move(x - 4, y)
    page.mouse.down()
    page.mouse.move(x + 4, y, steps=4)
    page.mouse.up()
    wait_saved(page)
    after = rv(page, f"maskVoxels({true_id})")
    assert 0 < after < before_db
    f = Finding.objects.get(pk=true_id)
    assert f.status == "edited" and db_mask_voxels(true_id) == after
    assert f.volume_ml < before_volume
    assert f.volume_ml == pytest.approx(after * np.prod(ph.spacing_zyx_mm) / 1000, rel=1e-6)
    # only the erased slice lost voxels: the slices above and below are as they were
    mask = f.get_mask()
    origin = f.mask_origin_zyx
    full = np.zeros(ph.hu.shape, bool)
    full[tuple(slice(o, o + n) for o, n in zip(origin, mask.shape))] = mask
    truth = ph.label_mask == nodule.id
    assert (full & ~truth).sum() == 0
    removed = truth & ~full
    assert removed.sum() == before_db - after and set(np.argwhere(removed)[:, 0]) == {z}
    screenshot(page, "viewer-erased")
    assert page.js_errors == []


def test_clicking_inside_a_finding_circle_selects_it(page, cast, phantom_case):
    study, false = phantom_case["study"], phantom_case["false"]
    centre = list(false.centre_xyz_mm)
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study)
    assert rv(page, "selectedFinding()") is None
    page.evaluate(f"window.radloopViewer.goTo({centre})")
    page.wait_for_timeout(200)

    # A click beside the circle selects nothing.
    x, y = rv(page, f"pagePoint('axial', {centre})")
    page.mouse.click(x + 60, y + 60)
    page.wait_for_timeout(200)
    assert rv(page, "selectedFinding()") is None

    # A click inside it (off-centre, still within the drawn circle) selects it, in the list as well.
    page.mouse.click(x + 3, y - 2)
    page.wait_for_function(f"window.radloopViewer.selectedFinding()?.id === {false.pk}")
    assert "selected" in page.locator(f"#findings-list li[data-finding-id='{false.pk}']").get_attribute("class")
    assert page.locator("#finding-detail").is_visible()

    # In another view too, and a drag (window/level) over a circle does not change the selection.
    page.locator(f"#findings-list li[data-finding-id='{phantom_case['true'].pk}']").click()
    page.evaluate(f"window.radloopViewer.goTo({centre})")
    page.wait_for_timeout(200)
    cx, cy = rv(page, f"pagePoint('coronal', {centre})")
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 40, cy + 30, steps=5)
    page.mouse.up()
    assert rv(page, "selectedFinding()")["id"] == phantom_case["true"].pk
    page.mouse.click(cx, cy)
    page.wait_for_function(f"window.radloopViewer.selectedFinding()?.id === {false.pk}")
    assert page.js_errors == []


def test_candidates_below_the_operating_point_show_only_on_request(page, cast, phantom_case):
    study, false = phantom_case["study"], phantom_case["false"]
    c = false.centre_xyz_mm
    centre = (c[0], c[1] - 25.0, c[2])
    candidate = Finding.objects.create(
        study=study, series=phantom_case["series"], centre_x_mm=centre[0], centre_y_mm=centre[1], centre_z_mm=centre[2],
        diameter_mm=6.0, bbox_min_xyz_mm=[v - 3 for v in centre], bbox_max_xyz_mm=[v + 3 for v in centre],
        volume_ml=0.1, mean_hu=-20.0, score=0.03, uncertainty=0.5, flagged=False,
    )
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study)
    items = page.locator("#findings-list li.finding")
    item = page.locator(f"#findings-list li[data-finding-id='{candidate.pk}']")

    # Hidden by default: not listed, not drawn (a click on it selects nothing), but announced.
    assert items.count() == 2 and item.count() == 0
    assert "Show 1 candidates below the AI's operating point" in page.inner_text("#candidates-toggle")
    page.evaluate(f"window.radloopViewer.goTo({list(centre)})")
    page.wait_for_timeout(200)
    x, y = rv(page, f"pagePoint('axial', {list(centre)})")
    page.mouse.click(x, y)
    page.wait_for_timeout(200)
    assert rv(page, "selectedFinding()") is None

    # On request: listed and drawn; a click on its circle selects it; accepted, it stays listed.
    page.check("#show-candidates")
    assert items.count() == 3 and item.count() == 1
    page.mouse.click(x, y)
    page.wait_for_function(f"window.radloopViewer.selectedFinding()?.id === {candidate.pk}")
    screenshot(page, "viewer-candidates-shown")
    page.keyboard.press("a")
    wait_saved(page)
    assert Finding.objects.get(pk=candidate.pk).status == "accepted"
    page.reload()
    page.wait_for_function(LOADED)
    assert items.count() == 3 and "accepted" in item.get_attribute("class")
    assert page.locator("#candidates-toggle").is_hidden()          # no candidate left to show
    assert page.js_errors == []


@pytest.mark.parametrize("size", [(1400, 900), (1920, 1080)])
def test_the_three_mpr_views_fit_their_cells_without_overlapping(browser, live_server, cast, phantom_case, size):
    width, height = size
    context = browser.new_context(base_url=live_server.url, viewport={"width": width, "height": height}, bypass_csp=True)  # see conftest.page
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        log_in(page, cast.radiologist.username, PASSWORD)
        open_viewer(page, phantom_case["study"])
        page.keyboard.press("Space")  # reset: the whole volume in every view
        page.wait_for_timeout(300)
        boxes = page.evaluate("""() => Object.fromEntries(['viewports', 'vp-axial', 'vp-coronal', 'vp-sagittal',
            'findings-panel'].map((id) => {
              const el = document.getElementById(id); const r = el.getBoundingClientRect();
              const c = el.id.startsWith('vp-') ? el.querySelector('canvas') : null;
              const label = el.querySelector('.vp-label');
              const lr = label?.getBoundingClientRect();
              const cr = c?.getBoundingClientRect();
              return [id, {box: [r.left, r.top, r.right, r.bottom],
                           canvas: cr && [cr.left, cr.top, cr.right, cr.bottom], pixels: c && [c.width, c.height],
                           label: lr && [lr.left, lr.top, lr.right, lr.bottom]}];
            }))""")
        screenshot(page, f"viewer-mpr-{width}x{height}")
        area = boxes["viewports"]["box"]
        panel = boxes["findings-panel"]["box"]
        names = ["axial", "coronal", "sagittal"]
        eps = 0.5
        for name in names:
            b = boxes[f"vp-{name}"]
            x0, y0, x1, y1 = b["box"]
            assert x1 - x0 > 150 and y1 - y0 > 150, f"{name} is a usable size"
            assert x0 >= area[0] - eps and y0 >= area[1] - eps and x1 <= area[2] + eps and y1 <= area[3] + eps
            assert x1 <= panel[0] + eps, f"{name} stays left of the findings panel"
            assert y1 <= height + eps and x1 <= width + eps
            c0, d0, c1, d1 = b["canvas"]
            assert c0 >= x0 - eps and d0 >= y0 - eps and c1 <= x1 + eps and d1 <= y1 + eps, f"{name} canvas inside its cell"
            assert abs(b["pixels"][0] - (c1 - c0)) <= 1 and abs(b["pixels"][1] - (d1 - d0)) <= 1, "canvas not stretched"
            assert b["label"][2] <= x1 + eps, f"{name} label inside its cell"
            # the whole volume is on screen: the projection of every corner of the series lies in the canvas
            g = page.evaluate(f"""() => {{
                const g = window.radloopViewer.geometry();
                const pts = [];
                for (const i of [0, g.columns - 1]) for (const j of [0, g.rows - 1]) for (const k of [0, g.slices - 1])
                  pts.push(window.radloopViewer.pagePoint('{name}', g.indexToWorld([i, j, k])));
                return pts;
            }}""")
            for px, py in g:
                assert c0 - 1 <= px <= c1 + 1 and d0 - 1 <= py <= d1 + 1, f"{name}: a corner of the volume is off screen"
        for a in range(3):
            for b in range(a + 1, 3):
                p, q = boxes[f"vp-{names[a]}"]["box"], boxes[f"vp-{names[b]}"]["box"]
                overlap_x = min(p[2], q[2]) - max(p[0], q[0])
                overlap_y = min(p[3], q[3]) - max(p[1], q[1])
                assert overlap_x <= eps or overlap_y <= eps, f"{names[a]} and {names[b]} overlap"
        # The early first paint was replaced by Cornerstone's view, and it came first.
        assert page.locator(".vp-preview").count() == 0
        t = rv(page, "timings()")
        assert t["radloop:time-to-first-image"] <= t["radloop:time-to-viewer-image"] <= t["radloop:time-to-series-loaded"]
        assert errors == []
    finally:
        context.close()
