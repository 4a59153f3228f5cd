"""Training labels come from the latest state of signed-off reviews, and from nothing else."""
from __future__ import annotations

import numpy as np

from tests.review.conftest import ai_finding
from webapp.review import services as review
from webapp.training import dataset


def test_accepted_edited_and_added_findings_are_positives_and_rejected_ones_hard_negatives(cases, cast, model):
    study = cases.study()
    accepted = ai_finding(study, model, diameter_mm=6.0, centre=(-96.5, -96.5, -45.0))
    rejected = ai_finding(study, model, diameter_mm=4.0, centre=(-94.0, -94.0, -42.5))
    edited = ai_finding(study, model, diameter_mm=5.0, centre=(-95.0, -97.0, -40.0))
    user = cast.radiologist
    r = review.accept_finding(study, user, base_revision=0, finding_id=accepted.pk)
    r = review.reject_finding(study, user, base_revision=r.revision, finding_id=rejected.pk, reason="vessel")
    r = review.edit_finding(study, user, base_revision=r.revision, finding_id=edited.pk, diameter_mm=7.5)
    r = review.add_finding(study, user, base_revision=r.revision, series_uid=study.series.get().series_uid,
                           centre_mm=[-93.0, -93.0, -45.0], diameter_mm=3.0)
    r = review.sign_off_case(study, user, base_revision=r.revision)

    labels = dataset.read_labels(study)

    assert labels.revision == r.revision == 5
    [series] = labels.series
    by_diameter = {round(les.diameter_mm, 1): les for les in series.lesions}
    assert sorted(by_diameter) == [3.0, 6.0, 7.5]
    kept = by_diameter[6.0]  # accepted: its mask, where it lies on the series grid
    assert kept.centre_xyz_mm == (-96.5, -96.5, -45.0)
    assert np.array_equal(kept.mask, np.ones((2, 2, 2), bool)) and kept.mask_origin_zyx == (1, 5, 5)
    assert by_diameter[7.5].mask is None  # an edit clears the outline it no longer matches
    assert by_diameter[3.0].mask is None and by_diameter[3.0].centre_xyz_mm == (-93.0, -93.0, -45.0)
    assert series.hard_negatives_xyz_mm == [(-94.0, -94.0, -42.5)]


def test_a_finding_relabelled_not_a_nodule_is_a_hard_negative(cases, cast, model):
    study = cases.study()
    f = ai_finding(study, model)
    r = review.accept_finding(study, cast.radiologist, base_revision=0, finding_id=f.pk)
    r = review.relabel_finding(study, cast.radiologist, base_revision=r.revision, finding_id=f.pk, label="not_nodule")
    review.sign_off_case(study, cast.radiologist, base_revision=r.revision)

    [series] = dataset.read_labels(study).series

    assert series.lesions == [] and series.hard_negatives_xyz_mm == [f.centre_xyz_mm]


def test_cases_not_signed_off_are_never_used(cases, cast, model):
    signed = cases.signed_off("signed")
    in_review = cases.study("in-review")
    f = ai_finding(in_review, model)
    review.accept_finding(in_review, cast.radiologist, base_revision=0, finding_id=f.pk)
    reopened = cases.signed_off("reopened")
    review.reopen_case(reopened, cast.radiologist, base_revision=2)
    cases.study("untouched")

    assert list(dataset.signed_off_studies()) == [signed]
    assert dataset.read_labels(in_review) is None
    assert dataset.read_labels(reopened) is None


def test_labels_follow_the_latest_revision_after_a_reopen(cases, cast, model):
    study = cases.signed_off(accept=True)
    r = review.reopen_case(study, cast.radiologist, base_revision=2)
    finding = study.findings.get()
    r = review.reject_finding(study, cast.radiologist, base_revision=r.revision, finding_id=finding.pk)
    review.sign_off_case(study, cast.radiologist, base_revision=r.revision)

    labels = dataset.read_labels(study)

    assert labels.revision == 5
    assert labels.series[0].lesions == [] and len(labels.series[0].hard_negatives_xyz_mm) == 1
