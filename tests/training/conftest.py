"""Small signed-off cases made through the review services (16 x 16 x 6 factory CT, see tests/review)."""
from __future__ import annotations

import pytest

from tests.review.conftest import ai_finding, ingest
from webapp.archive.models import AIStatus, Study
from webapp.modelops import services as modelops
from webapp.modelops.models import ModelVersion
from webapp.review import services as review


@pytest.fixture
def model(db) -> ModelVersion:
    """The shipped baseline, registered as v1 champion (as on first use)."""
    return modelops.get_champion()


class Cases:
    """Makes studies with one AI finding each, and signs them off."""

    def __init__(self, cast, model):
        self.cast, self.model, self.n = cast, model, 0

    def study(self, name: str | None = None) -> Study:
        self.n += 1
        name = name or f"case-{self.n}"
        study = ingest(self.cast, study=name, series=f"{name}-series", patient_id=f"PAT-{name}", accession=f"A{self.n}")
        Study.objects.filter(pk=study.pk).update(ai_status=AIStatus.AI_READY)
        return study

    def signed_off(self, name: str | None = None, *, accept: bool = True) -> Study:
        study = self.study(name)
        finding = ai_finding(study, self.model)
        act = review.accept_finding if accept else review.reject_finding
        r = act(study, self.cast.radiologist, base_revision=0, finding_id=finding.pk)
        review.sign_off_case(study, self.cast.radiologist, base_revision=r.revision)
        return study


@pytest.fixture
def cases(cast, model) -> Cases:
    return Cases(cast, model)
